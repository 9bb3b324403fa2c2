"""Usage errors and error messages as a user (or a script reading --json) sees them:
one line on stderr, exit 2 for bad usage, one JSON document on stdout with --json."""

from __future__ import annotations

import json
import subprocess

import pytest

from cutout_etl.cli import _emit, one_line

from .conftest import SCRIPT, invoke


def strict_json(text: str):
    """Parse as standard JSON: NaN and Infinity are not JSON."""

    def reject(constant: str):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=reject)


def assert_one_line(stderr: str, start: str) -> None:
    assert stderr.count("\n") == 1 and stderr.startswith(start), stderr
    assert "Traceback" not in stderr and "Usage:" not in stderr


# ---------------------------------------------------------------- choices and click's own usage errors

CHOICES = [
    ("--format", "csv", "error: --format: 'csv' is not one of 'hdf5', 'parquet'"),
    ("--on-conflict", "keep", "error: --on-conflict: 'keep' is not one of 'error', 'drop'"),
    ("--group-by", "cell", "error: --group-by: 'cell' is not one of 'none', 'sky'"),
]


@pytest.mark.parametrize(("option", "value", "message"), CHOICES, ids=[c[0] for c in CHOICES])
def test_a_bad_choice_is_one_line_exit_2_listing_the_choices(option, value, message, demo_files, tmp_path):
    result = invoke("build", *demo_files, "-o", tmp_path / "ds.h5", option, value)
    assert result.exit_code == 2
    assert_one_line(result.stderr, message)
    assert result.stdout == "" and list(tmp_path.iterdir()) == []


CLICK_ERRORS = [
    (["build", "IN", "-o", "OUT", "--seed", "abc"], "error: --seed: "),
    (["build", "IN", "-o", "OUT", "--chunk-rows", "0"], "error: --chunk-rows: "),
    (["build", "-o", "OUT"], "error: Missing argument"),
    (["build", "IN"], "error: Missing option '--output'"),
    (["build", "IN", "-o", "OUT", "--no-such-option"], "error: No such option: --no-such-option"),
    (["bulid"], "error: No such command 'bulid'"),
]


@pytest.mark.parametrize(("args", "start"), CLICK_ERRORS, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_click_usage_errors_are_one_line_exit_2(args, start):
    result = invoke(*args)
    assert result.exit_code == 2
    assert_one_line(result.stderr, start)


def test_usage_errors_are_one_line_from_the_installed_script(tmp_path):
    cases = [(["--format", "csv"], CHOICES[0][2]), (["--seed", "abc"], "error: --seed: ")]
    for options, start in cases:
        args = ["build", "IN", "-o", "OUT", *options]
        done = subprocess.run([SCRIPT, *args], capture_output=True, text=True, check=False, cwd=tmp_path)
        assert done.returncode == 2
        assert_one_line(done.stderr, start)


def test_help_still_works():
    assert "Commands:" in invoke().output  # no arguments: the help
    result = invoke("build", "--help")
    assert result.exit_code == 0 and "--format <hdf5|parquet>" in result.stdout


# ---------------------------------------------------------------- control characters in names


NAMES = ["bad\nname.hdf5", "bad\rname.hdf5", "bad\x1b[31mname.hdf5"]


@pytest.mark.parametrize("name", NAMES, ids=["newline", "return", "escape"])
def test_a_file_name_with_control_characters_is_printed_escaped_on_one_line(name, demo_files, tmp_path):
    bad = tmp_path / name
    bad.write_text("not hdf5")
    result = invoke("build", *demo_files, bad, "-o", tmp_path / "ds.h5", "--quiet")
    assert result.exit_code == 1
    escaped = str(bad).replace("\n", "\\n").replace("\r", "\\r").replace("\x1b", "\\x1b")
    assert result.stderr == f"error: {escaped}: not an HDF5 file\n"


def test_one_line_leaves_ordinary_messages_alone():
    ordinary = "galaxies.hdf5: 3 rows, e.g. row 7; ÉTOILE \\n"
    assert one_line(ordinary) == ordinary
    assert one_line("a\tb\u2028c") == "a\\tb\\u2028c"


# ---------------------------------------------------------------- non-finite numbers

NON_FINITE = [
    ("--match-radius", "inf"),
    ("--group-radius", "inf"),
    ("--pixel-scale", "inf"),
    ("--tolerance", "inf"),
    ("--cell-deg", "inf"),
    ("--match-radius", "nan"),
    ("--tolerance", "nan"),
    ("--cell-deg", "-inf"),
    ("--fractions", "nan,0.5,0.5"),
    ("--fractions", "0.5,inf,0.5"),
]


@pytest.mark.parametrize(("option", "value"), NON_FINITE, ids=[f"{o}={v}" for o, v in NON_FINITE])
def test_a_non_finite_option_value_is_a_usage_error(option, value, demo_files, tmp_path):
    result = invoke("build", *demo_files, "-o", tmp_path / "ds.h5", option, value, "--json")
    assert result.exit_code == 2
    assert_one_line(result.stderr, f"error: {option}: expected a finite number (got ")
    error = result.stderr.strip().removeprefix("error: ")
    assert strict_json(result.stdout) == {"ok": False, "error": error, "exit_code": 2}
    assert list(tmp_path.iterdir()) == []


def test_split_refuses_a_non_finite_group_radius(demo_files, tmp_path):
    result = invoke("split", demo_files[0], "-o", tmp_path / "ds.h5", "--group-radius", "nan")
    assert result.exit_code == 2
    assert_one_line(result.stderr, "error: --group-radius: expected a finite number (got 'nan')")


def test_json_output_is_strict(capsys):
    _emit({"mean": float("nan"), "bands": [float("inf"), 1.5]}, True, False, lambda console, r: None)
    assert strict_json(capsys.readouterr().out) == {"mean": None, "bands": [None, 1.5]}


# ---------------------------------------------------------------- --json on failure and success


def test_json_on_a_data_error(demo_files, tmp_path):
    bad = tmp_path / "notes.hdf5"
    bad.write_text("RA,DEC\n")
    result = invoke("build", *demo_files, bad, "-o", tmp_path / "ds.h5", "--json")
    assert result.exit_code == 1
    assert strict_json(result.stdout) == {"ok": False, "error": f"{bad}: not an HDF5 file", "exit_code": 1}
    assert result.stderr.splitlines()[-1] == f"error: {bad}: not an HDF5 file"


def test_json_on_a_usage_error_found_by_the_command(demo_files, tmp_path):
    out = tmp_path / "ds.h5"
    out.write_bytes(b"precious")
    result = invoke("merge", *demo_files, "-o", out, "--json", "--quiet")
    assert result.exit_code == 2
    error = f"{out}: output exists; use --overwrite to replace it"
    assert strict_json(result.stdout) == {"ok": False, "error": error, "exit_code": 2}


def test_json_on_a_parse_error():
    result = invoke("build", "IN", "-o", "OUT", "--json", "--format", "csv")
    assert result.exit_code == 2
    error = "--format: 'csv' is not one of 'hdf5', 'parquet'."
    assert strict_json(result.stdout) == {"ok": False, "error": error, "exit_code": 2}


def test_json_names_the_output_written(demo_files, tmp_path):
    merged, dataset, parquet = tmp_path / "m.h5", tmp_path / "ds.h5", tmp_path / "ds.parquet"
    runs = [
        (["merge", *demo_files, "-o", merged], merged),
        (["split", merged, "-o", dataset], dataset),
        (["stats", dataset], dataset),
        (["convert", dataset, parquet], parquet),
        (["build", *demo_files, "-o", tmp_path / "b.h5"], tmp_path / "b.h5"),
    ]
    for args, output in runs:
        result = invoke(*args, "--json")
        assert result.exit_code == 0, result.stderr
        assert strict_json(result.stdout)["output"] == str(output)


@pytest.mark.parametrize("classes", ["", " , "])
def test_an_empty_class_list_is_a_usage_error_not_the_default(class_files, tmp_path, classes):
    result = invoke("build", *class_files, "-o", tmp_path / "out.h5", "--classes", classes)
    assert (result.exit_code, result.stderr) == (2, "error: --classes: no class names given\n")
    assert not (tmp_path / "out.h5").exists()
