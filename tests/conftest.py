"""Shared fixtures: small demo class files and a writer for hand-made tables."""

from __future__ import annotations

import os
import signal
import sys
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from hypothesis import settings
from typer.testing import CliRunner, Result

from cutout_etl import pipeline
from cutout_etl.cli import app
from cutout_etl.demo import write_demo_files
from cutout_etl.inputs.scan import ReadOptions

DEMO_ROWS = 120
SCRIPT = Path(sys.executable).parent / "cutout-etl"  # the installed command, for runs in a real process
BLOCK_ROWS = 16  # small blocks: several a split, so block checks have something to find
FILE_NAMES = {"GALAXY": "galaxies.hdf5", "QSO": "qso.hdf5", "STAR": "stars.hdf5"}

# Fuzz tests take their number of examples from the profile: a quick one locally, the full one in CI (CI=true).
settings.register_profile("quick", max_examples=30)
settings.register_profile("ci", max_examples=300)
settings.load_profile("ci" if os.environ.get("CI", "").lower() == "true" else "quick")


@pytest.fixture(scope="session")
def demo_files(tmp_path_factory) -> list[Path]:
    """Three synthetic class files, DEMO_ROWS rows each (galaxies, qso, stars)."""
    return write_demo_files(tmp_path_factory.mktemp("demo"), rows=DEMO_ROWS, seed=1)


@pytest.fixture(scope="session")
def small_dataset(demo_files, tmp_path_factory) -> Path:
    """The demo files built in BLOCK_ROWS-row blocks. Read it; copy it before changing it."""
    out = tmp_path_factory.mktemp("small_dataset") / "dataset.h5"
    pipeline.build(demo_files, out, read=ReadOptions(chunk_rows=BLOCK_ROWS))
    return out


def make_table(
    n: int = 20,
    label: str | bytes = b"GALAXY",
    start: int = 0,
    shape: tuple[int, ...] = (36, 36, 4),
    dtype: str = "f4",
    seed: int = 0,
    prefix: str = "OBJ",
) -> Table:
    """A small valid class table: sky noise at 2e-12, one label.

    Row i is object number start + i: its ID and position follow from that
    number alone (objects 36 arcsec apart along the equator), and its image
    from that number, the seed and the prefix, so the same object in two
    tables has the same ID, position and (with one seed) image.
    """
    number = start + np.arange(n)
    # each object's pixels from (seed, prefix, number) alone: two IDs never share an image by accident
    # (build keeps one copy of identical images), and the same object in two tables has the same image
    key = zlib.crc32(prefix.encode())
    noise = [np.random.default_rng([seed, key, int(k)]).standard_normal(shape) for k in number]
    t = Table()
    t["ID"] = np.array([f"{prefix} J{k:08d}".encode() for k in number], dtype="S29")
    t["RAJ2000"] = 120 + number * 0.01
    t["DECJ2000"] = np.zeros(n)
    t["SPECTYPE"] = np.array([label] * n, dtype="S6" if isinstance(label, bytes) else "U6")
    t["image"] = (np.array(noise).reshape(n, *shape) * 2e-12).astype(dtype)
    return t


def write_table(table: Table, path: Path, table_path: str = "data", append: bool = False) -> Path:
    """Write like the users' files: astropy HDF5 with serialized metadata."""
    table.write(path, format="hdf5", path=table_path, serialize_meta=True, overwrite=not append, append=append)
    return path


def class_tables(
    rows: Sequence[int] = (20, 20, 20),
    starts: Sequence[int] = (0, 1000, 2000),
    seeds: Sequence[int] = (1, 2, 3),
    labels: Sequence[bytes] = (b"GALAXY", b"QSO", b"STAR"),
) -> dict[str, Table]:
    """One `make_table` per class (as many classes as `rows` has entries), keyed by class name."""
    return {
        label.decode().strip(): make_table(n, label, start, seed=seed)
        for label, n, start, seed in zip(labels, rows, starts, seeds)
    }


def write_class_files(
    directory: Path, tables: Mapping[str, Table] | None = None, names: Mapping[str, str] = FILE_NAMES
) -> list[Path]:
    """Write each class's table (default: `class_tables()`) to `directory / names[class]`."""
    directory.mkdir(parents=True, exist_ok=True)
    tables = class_tables() if tables is None else tables
    return [write_table(table, directory / names[label]) for label, table in tables.items()]


def lower_case_names(suffix: str) -> dict[str, str]:
    """galaxy<suffix>, qso<suffix>, star<suffix>."""
    return {label: label.lower() + suffix for label in FILE_NAMES}


@pytest.fixture
def class_files(tmp_path) -> list[Path]:
    """Three small hand-made class files with disjoint IDs (30, 20, 25 rows; the QSO label padded as 'QSO ')."""
    return write_class_files(tmp_path, class_tables((30, 20, 25), labels=(b"GALAXY", b"QSO ", b"STAR")))


def invoke(*args: object, timeout: int | None = None) -> Result:
    """`cutout-etl *args` in this process; with `timeout`, SIGALRM's default action ends a run that hangs."""
    if timeout:
        signal.alarm(timeout)
    try:
        return CliRunner().invoke(app, [str(a) for a in args])
    finally:
        if timeout:
            signal.alarm(0)


def run_cli(*args: object) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `cutout-etl *args`, in this process."""
    result = invoke(*args)
    return result.exit_code, result.stdout, result.stderr
