"""The package's shape, as the README's "How it works" describes it: small modules, short functions,
and no module named like a library it would shadow."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cutout_etl"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50
# Top-level names of what the package imports: a module of ours named like one would shadow it in a reader's mind.
DEPENDENCIES = {
    "h5py",
    "numpy",
    "astropy",
    "typer",
    "rich",
    "pyarrow",
    "xxhash",
    "scipy",
    "yaml",
    "keras",
    "tensorflow",
    "dask",
    "distributed",
    "dask_jobqueue",
    "matplotlib",
    "hdf5plugin",
    "click",
}


def _name(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_no_module_is_over_400_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{_name(path)}: {lines} lines"


def test_no_function_is_over_50_lines():
    long = []
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{_name(path)}:{node.lineno} {node.name} ({length} lines)")
    assert long == []


def test_no_module_shadows_the_standard_library_or_a_dependency():
    shadowing = [
        _name(path)
        for path in MODULES
        if path.stem != "__init__" and (path.stem in sys.stdlib_module_names or path.stem in DEPENDENCIES)
    ]
    shadowing += [
        _name(p) for p in PACKAGE.rglob("*") if p.is_dir() and p.name in sys.stdlib_module_names | DEPENDENCIES
    ]
    assert shadowing == []


def test_the_cli_starts_without_the_heavy_libraries():
    """Every command pays the CLI's import time: astropy, scipy, keras and dask load only in the command that uses them."""
    import subprocess

    code = "import sys, cutout_etl.cli; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    loaded = set(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    )
    assert not loaded & {"astropy", "scipy", "keras", "tensorflow", "dask", "distributed", "torch", "pyarrow"}
