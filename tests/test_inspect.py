"""`cutout-etl inspect` predicts `build`: an error for whatever build refuses, naming the option that resolves it."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from cutout_etl import pipeline

from .conftest import class_tables, invoke, lower_case_names, make_table, write_class_files

ARCSEC = 1 / 3600
# --drop-invalid, and build refusing invalid rows and classes without rows, come with MergeOptions.drop_invalid
BUILD_REFUSES_INVALID = "drop_invalid" in {f.name for f in dataclasses.fields(pipeline.MergeOptions)}
needs_drop_invalid = pytest.mark.skipif(
    not BUILD_REFUSES_INVALID,
    reason="build refuses invalid rows and missing classes only with --drop-invalid (merged from another branch)",
)


def errors(report: dict) -> list[str]:
    return [f"{p['file'] or '*'}: {p['message']}" for p in report["problems"] if p["level"] == "error"]


def messy(tmp_path: Path, with_invalid_rows: bool) -> list[Path]:
    t = class_tables((10, 10, 10), starts=(0, 100, 200))
    t["GALAXY"]["SPECTYPE"][3] = b"AGN"  # an unknown label
    t["STAR"]["ID"][4] = t["GALAXY"]["ID"][5]  # one ID, two labels, two files
    t["QSO"]["RAJ2000"][6] = t["STAR"]["RAJ2000"][7] + 0.3 * ARCSEC  # one object under two IDs and labels
    if with_invalid_rows:
        t["QSO"]["ID"][1] = b"  "  # an empty ID
        t["STAR"]["DECJ2000"][2] = -95.0  # beyond the pole
    return write_class_files(tmp_path, t, lower_case_names(".hdf5"))


@pytest.mark.parametrize("with_invalid_rows", [False, pytest.param(True, marks=needs_drop_invalid)])
def test_inspect_names_every_problem_and_the_option_that_resolves_it(tmp_path, with_invalid_rows):
    files = messy(tmp_path, with_invalid_rows)
    result = invoke("inspect", *files, "--json")
    assert result.exit_code == 1
    found = errors(json.loads(result.stdout))
    expected = [
        ("galaxy.hdf5: labels outside the classes", "--drop-unknown"),
        ("*: IDs carry conflicting labels", "--on-conflict drop"),
        ("*: objects within 1 arcsec of another with a different label", "--on-conflict drop"),
    ]
    if with_invalid_rows:
        expected += [
            ("qso.hdf5: 1 rows with an empty ID, e.g. row 1", "--drop-invalid"),
            ("star.hdf5: 1 rows with an invalid sky position", "--drop-invalid"),
        ]
    for start, option in expected:
        assert [e for e in found if e.startswith(start) and option in e], (start, found)
    assert len(found) == len(expected), found
    options = ["--drop-unknown", "--on-conflict", "drop", *(["--drop-invalid"] if with_invalid_rows else [])]
    assert invoke("build", *files, "-o", tmp_path / "default.h5", "--quiet").exit_code == 1
    built = invoke("build", *files, "-o", tmp_path / "out.h5", "--quiet", "--json", *options)
    assert built.exit_code == 0, built.stderr
    assert json.loads(built.stdout)["report"]["rows_kept"] == 30 - 1 - 2 - 2 - (2 if with_invalid_rows else 0)


def unknown_label(tmp_path: Path, t: dict) -> list[Path]:
    t["GALAXY"]["SPECTYPE"][0] = b"AGN"
    return write_class_files(tmp_path, t, lower_case_names(".hdf5"))


def conflicting_id_across_files(tmp_path: Path, t: dict) -> list[Path]:
    t["STAR"]["ID"][4] = t["GALAXY"]["ID"][5]
    return write_class_files(tmp_path, t, lower_case_names(".hdf5"))


def conflicting_id_in_one_file(tmp_path: Path, t: dict) -> list[Path]:
    t["GALAXY"]["ID"][8] = t["GALAXY"]["ID"][9]
    t["GALAXY"]["SPECTYPE"][8] = b"QSO"
    return write_class_files(tmp_path, t, lower_case_names(".hdf5"))


def conflicting_position(tmp_path: Path, t: dict) -> list[Path]:
    t["QSO"]["RAJ2000"][6] = t["STAR"]["RAJ2000"][7] + 0.3 * ARCSEC
    return write_class_files(tmp_path, t, lower_case_names(".hdf5"))


def empty_id(tmp_path: Path, t: dict) -> list[Path]:
    t["QSO"]["ID"][1] = b""
    return write_class_files(tmp_path, t, lower_case_names(".hdf5"))


def invalid_position(tmp_path: Path, t: dict) -> list[Path]:
    t["STAR"]["RAJ2000"][2] = np.nan
    return write_class_files(tmp_path, t, lower_case_names(".hdf5"))


def missing_class(tmp_path: Path, t: dict) -> list[Path]:
    del t["STAR"]
    return write_class_files(tmp_path, t, lower_case_names(".hdf5"))


def too_few_rows_for_the_splits(tmp_path: Path, t: dict) -> list[Path]:
    t["QSO"] = t["QSO"][:2]
    return write_class_files(tmp_path, t, lower_case_names(".hdf5"))


def all_rows_dropped(tmp_path: Path, t: dict) -> list[Path]:
    for table in t.values():
        table["image"][:] = np.nan
    return write_class_files(tmp_path, t, lower_case_names(".hdf5"))


def same_file_twice(tmp_path: Path, t: dict) -> list[Path]:
    files = write_class_files(tmp_path, t, lower_case_names(".hdf5"))
    return [*files, files[0]]


def identical_content(tmp_path: Path, t: dict) -> list[Path]:
    files = write_class_files(tmp_path, t, lower_case_names(".hdf5"))
    return [*files, Path(shutil.copy(files[1], tmp_path / "qso_copy.hdf5"))]


def shapes_differ(tmp_path: Path, t: dict) -> list[Path]:
    t["QSO"] = make_table(10, b"QSO", 100, shape=(32, 32, 4))
    return write_class_files(tmp_path, t, lower_case_names(".hdf5"))


def unreadable_file(tmp_path: Path, t: dict) -> list[Path]:
    broken = tmp_path / "broken.hdf5"
    broken.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    return [*write_class_files(tmp_path, t, lower_case_names(".hdf5")), broken]


def same_id_same_label(tmp_path: Path, t: dict) -> list[Path]:
    t["QSO"]["ID"][3] = t["QSO"]["ID"][2]
    t["QSO"]["RAJ2000"][3] = t["QSO"]["RAJ2000"][2]
    return write_class_files(tmp_path, t, lower_case_names(".hdf5"))


def no_finite_pixel(tmp_path: Path, t: dict) -> list[Path]:
    t["STAR"]["image"][0] = np.inf
    t["STAR"]["image"][1][0, 0, 0] = np.nan
    return write_class_files(tmp_path, t, lower_case_names(".hdf5"))


def float64_images(tmp_path: Path, t: dict) -> list[Path]:
    t["GALAXY"]["image"] = t["GALAXY"]["image"].astype("f8")
    return write_class_files(tmp_path, t, lower_case_names(".hdf5"))


def clean(tmp_path: Path, t: dict) -> list[Path]:
    return write_class_files(tmp_path, t, lower_case_names(".hdf5"))


FAILING = [
    unknown_label,
    conflicting_id_across_files,
    conflicting_id_in_one_file,
    conflicting_position,
    pytest.param(empty_id, marks=needs_drop_invalid),
    pytest.param(invalid_position, marks=needs_drop_invalid),
    pytest.param(missing_class, marks=needs_drop_invalid),
    too_few_rows_for_the_splits,
    all_rows_dropped,
    same_file_twice,
    identical_content,
    shapes_differ,
    unreadable_file,
]
PASSING = [clean, same_id_same_label, no_finite_pixel, float64_images]


@pytest.mark.parametrize("make", [*FAILING, *PASSING], ids=lambda f: getattr(f, "__name__", None))
def test_inspect_fails_exactly_when_build_does(tmp_path, make: Callable[[Path, dict], list[Path]]):
    files = make(tmp_path, class_tables((10, 10, 10), starts=(0, 100, 200)))
    inspected = invoke("inspect", *files, "--json")
    built = invoke("build", *files, "-o", tmp_path / "out.h5", "--quiet")
    assert built.exit_code in (0, 1), built.stderr
    assert inspected.exit_code == built.exit_code, (errors(json.loads(inspected.stdout)), built.stderr)
    assert (inspected.exit_code == 1) == (make not in PASSING)


def test_one_unreadable_file_does_not_stop_the_others(tmp_path, monkeypatch):
    """Exceptions h5py raises for odd corruption are reported under their file; the next file is still inspected."""
    from cutout_etl.inputs import readers

    files = write_class_files(tmp_path, class_tables((10, 10, 10), starts=(0, 100, 200)), lower_case_names(".hdf5"))
    real = readers.inspect_table

    def flaky(path, *args, **kwargs):
        if Path(path).name == "galaxy.hdf5":
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(readers, "inspect_table", flaky)
    result = invoke("inspect", *files, "--json")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    assert [f["usable"] for f in report["files"]] == [False, True, True]
    assert errors(report)[0] == (
        f"galaxy.hdf5: {files[0]}: cannot read, corrupt or truncated "
        "(UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte)"
    )


# ---------------------------------------------------------------- fuzz


def damage(path: Path, data) -> str:
    """Flip bits, zero a run of bytes or truncate; mostly near the start, where HDF5 keeps its structure."""
    raw = bytearray(path.read_bytes())
    kind = data.draw(st.sampled_from(["flip", "zero", "truncate"]))
    end = data.draw(st.sampled_from([min(len(raw), 4096), len(raw)]))
    at = data.draw(st.integers(0, end - 1))
    if kind == "flip":
        for offset in [at, *data.draw(st.lists(st.integers(0, end - 1), max_size=7))]:
            raw[offset] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "zero":
        length = data.draw(st.integers(1, 512))
        raw[at : at + length] = bytes(len(raw[at : at + length]))
    else:
        del raw[at:]
    path.write_bytes(bytes(raw))
    return f"{kind} at {at}"


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # examples: conftest profile
@given(data=st.data())
def test_damaged_files_give_a_report_or_one_line_and_no_output(tmp_path_factory, data):
    work = tmp_path_factory.mktemp("damaged")
    files = write_class_files(work, class_tables((6, 6, 6), starts=(0, 100, 200)), lower_case_names(".hdf5"))
    note(damage(data.draw(st.sampled_from(files)), data))
    inspected = invoke("inspect", *files, "--json", "--quiet", timeout=30)
    assert inspected.exit_code in (0, 1), inspected.stderr
    assert inspected.stderr == "" and "Traceback" not in inspected.stdout
    report = json.loads(inspected.stdout)  # a report of every file, never one unexpected error instead
    assert report["ok"] == (inspected.exit_code == 0) and len(report["files"]) == 3
    out = work / "out" / "dataset.h5"
    out.parent.mkdir()
    built = invoke("build", *files, "-o", out, "--quiet", timeout=30)
    assert built.exit_code in (0, 1, 2), built.stderr
    assert "Traceback" not in built.stderr
    if built.exit_code != 0:
        assert built.stderr.count("\n") == 1 and built.stderr.startswith("error: "), built.stderr
        assert "unexpected" not in built.stderr, built.stderr
        assert list(out.parent.iterdir()) == []  # no output, no temp file


def test_report_prints_control_characters_and_brackets_in_the_data_as_text(tmp_path):
    t = class_tables((10, 10, 10), starts=(0, 100, 200))
    spectype = t["GALAXY"]["SPECTYPE"]
    t["GALAXY"]["SPECTYPE"] = spectype.astype("S16")
    t["GALAXY"]["SPECTYPE"][3] = b"[red]AGN\x1b[2J\nok"  # an unknown label: markup, an escape sequence, a newline
    t["STAR"]["ID"][4] = t["GALAXY"]["ID"][5]
    result = invoke("inspect", *write_class_files(tmp_path, t, lower_case_names(".hdf5")))
    assert result.exit_code == 1
    printed = result.stdout + result.stderr
    assert "\x1b" not in printed
    assert "labels: GALAXY 9, [RED]AGN\\x1b[2J\\nOK 1" in printed  # labels are upper-cased, shown escaped
