"""Every bad input: one line on stderr naming the file, exit 1 (data) or 2 (usage),
no traceback, and nothing written."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy.table import Table
from h5py import h5d, h5p, h5s, h5t
from typer.testing import CliRunner

from cutout_etl.cli import app
from cutout_etl.errors import CutoutEtlError

from .conftest import class_tables, make_table, run_cli, write_class_files, write_table


def good(tmp_path: Path) -> list[Path]:
    return write_class_files(tmp_path, class_tables((10, 10), starts=(0, 100)))


# One builder per broken input; each returns (input paths, expected message).


def not_hdf5(tmp_path):
    """A text file where an HDF5 file should be."""
    bad = tmp_path / "notes.hdf5"
    bad.write_text("RA,DEC\n1,2\n")
    return [*good(tmp_path), bad], f"{bad}: not an HDF5 file"


def truncated(tmp_path):
    """A class file cut off half way (an interrupted copy)."""
    bad = write_table(make_table(10, b"STAR", 200), tmp_path / "stars.hdf5")
    size = bad.stat().st_size
    with open(bad, "r+b") as fh:
        fh.truncate(size // 2)
    return [*good(tmp_path), bad], f"{bad}: truncated: {size // 2} bytes, the HDF5 header expects {size}"


def directory(tmp_path):
    """A directory given as an input."""
    bad = tmp_path / "cutouts"
    bad.mkdir()
    return [*good(tmp_path), bad], f"{bad}: is a directory, expected an HDF5 file"


def missing_file(tmp_path):
    """A path that does not exist."""
    bad = tmp_path / "nope.hdf5"
    return [*good(tmp_path), bad], f"{bad}: no such file"


def no_table(tmp_path):
    """An HDF5 file holding only a plain array."""
    bad = tmp_path / "array.hdf5"
    with h5py.File(bad, "w") as f:
        f["images"] = np.zeros((3, 36, 36, 4), "f4")
    return [*good(tmp_path), bad], f"{bad}: no table (compound dataset) found in the file"


def several_tables(tmp_path):
    """A file written with append=True holding two tables."""
    bad = write_table(make_table(5, b"STAR", 200), tmp_path / "stars.hdf5", table_path="dr4")
    write_table(make_table(5, b"STAR", 300), bad, table_path="dr5", append=True)
    return [*good(tmp_path), bad], f"{bad}: 2 tables (dr4, dr5); choose one with --table-path"


def zero_rows(tmp_path):
    """A table with its columns but no rows."""
    bad = write_table(make_table(0, b"STAR"), tmp_path / "stars.hdf5")
    return [*good(tmp_path), bad], f"{bad}: table 'data' has zero rows"


def missing_image(tmp_path):
    """The image column is called something else."""
    t = make_table(5, b"STAR", 200)
    t.rename_column("image", "cutout")
    bad = write_table(t, tmp_path / "stars.hdf5")
    return [
        *good(tmp_path),
        bad,
    ], f"{bad}: table 'data' has no column 'image' (columns: ID, RAJ2000, DECJ2000, SPECTYPE, cutout)"


def missing_label(tmp_path):
    """No SPECTYPE column."""
    t = make_table(5, b"STAR", 200)
    t.remove_column("SPECTYPE")
    bad = write_table(t, tmp_path / "stars.hdf5")
    return [
        *good(tmp_path),
        bad,
    ], f"{bad}: table 'data' has no column 'SPECTYPE' (columns: ID, RAJ2000, DECJ2000, image)"


def numeric_label(tmp_path):
    """Labels already encoded as integers."""
    t = make_table(5, b"STAR", 200)
    t["SPECTYPE"] = np.full(5, 2)
    bad = write_table(t, tmp_path / "stars.hdf5")
    return [*good(tmp_path), bad], f"{bad}: label column 'SPECTYPE' is numeric (int64); expected class names as strings"


def wrong_shape(tmp_path):
    """Flattened images, one vector per row."""
    bad = write_table(make_table(5, b"STAR", 200, shape=(5184,)), tmp_path / "stars.hdf5")
    return [*good(tmp_path), bad], f"{bad}: image column 'image' has shape (5184,); expected (height, width, bands)"


def channels_first(tmp_path):
    """Images stored (bands, H, W)."""
    bad = write_table(make_table(5, b"STAR", 200, shape=(4, 36, 36)), tmp_path / "stars.hdf5")
    return [
        *good(tmp_path),
        bad,
    ], f"{bad}: image column 'image' looks channels-first (4, 36, 36); expected channels last (H, W, bands)"


def shapes_differ(tmp_path):
    """One file with 32x32 cutouts among 36x36 ones."""
    files = good(tmp_path)
    bad = write_table(make_table(5, b"STAR", 200, shape=(32, 32, 4)), tmp_path / "stars.hdf5")
    return [*files, bad], f"{bad}: image shape (32, 32, 4) differs from {files[0]} (36, 36, 4)"


def unknown_labels(tmp_path):
    """A label that is none of the classes."""
    t = make_table(5, b"STAR", 200)
    t["SPECTYPE"][:2] = b"BLAZ"
    bad = write_table(t, tmp_path / "stars.hdf5")
    return [*good(tmp_path), bad], (
        f"{bad}: unknown labels 'BLAZ' (2 rows) (classes: GALAXY, QSO, STAR); "
        "use --classes to name them or --drop-unknown to drop them"
    )


def conflicting_ids(tmp_path):
    """One object labelled GALAXY in one file and STAR in another."""
    files = good(tmp_path)
    bad = write_table(make_table(1, b"STAR", 0), tmp_path / "stars.hdf5")
    return [*files, bad], (
        "error: 1 IDs carry conflicting labels: 'OBJ J00000000' (GALAXY in galaxies.hdf5 row 0, "
        "STAR in stars.hdf5 row 0); use --on-conflict drop to drop them"
    )


def same_file_twice(tmp_path):
    """The same path given twice (a shell glob plus a name)."""
    files = good(tmp_path)
    return [*files, files[0]], f"{files[0]}: the same file is given twice"


def copy_of_a_file(tmp_path):
    """A byte-identical copy under another name."""
    files = good(tmp_path) + [write_table(make_table(10, b"STAR", 200), tmp_path / "s.hdf5")]  # every class present
    copy = tmp_path / "copy.hdf5"
    copy.write_bytes(files[1].read_bytes())
    return [*files, copy], "identical content to"


def ra_as_text(tmp_path):
    """RA written as sexagesimal text."""
    t = make_table(5, b"STAR", 200)
    t["RAJ2000"] = np.array([b"12:30:00.0"] * 5)
    bad = write_table(t, tmp_path / "stars.hdf5")
    return [*good(tmp_path), bad], (
        f"{bad}: position column 'RAJ2000' holds text (|S10); expected one number (degrees) per row, integer or float"
    )


def dec_as_pairs(tmp_path):
    """Dec stored as an (n, 2) column (value and error)."""
    t = make_table(5, b"STAR", 200)
    t["DECJ2000"] = np.zeros((5, 2))
    bad = write_table(t, tmp_path / "stars.hdf5")
    return [*good(tmp_path), bad], (
        f"{bad}: position column 'DECJ2000' holds float64 arrays of shape (2,); "
        "expected one number (degrees) per row, integer or float"
    )


def corrupt_byte_in_name(path: Path, name: bytes) -> Path:
    """Set the second byte of a link name in the raw file to 0xC2 (not valid UTF-8 there), as fuzzing found."""
    raw = bytearray(path.read_bytes())
    raw[raw.index(name) + 1] = 0xC2
    path.write_bytes(raw)
    return path


def corrupt_table_name(tmp_path):
    """The table's name in the file holds a byte that is not UTF-8."""
    bad = corrupt_byte_in_name(write_table(make_table(5, b"STAR", 200), tmp_path / "stars.hdf5"), b"data\x00")
    return [*good(tmp_path), bad], f"{bad}: a name inside the file is not valid UTF-8: corrupt"


def corrupt_meta_name(tmp_path):
    """The name of astropy's column metadata beside the table holds a byte that is not UTF-8."""
    bad = corrupt_byte_in_name(write_table(make_table(5, b"STAR", 200), tmp_path / "stars.hdf5"), b"data.__table")
    return [*good(tmp_path), bad], f"{bad}: a name inside the file is not valid UTF-8: corrupt"


def binary128() -> h5t.TypeFloatID:
    """IEEE binary128, as Fortran real(16) writes it: no numpy dtype maps it."""
    t = h5t.IEEE_F64LE.copy()
    t.set_size(16)
    t.set_precision(128)
    t.set_fields(127, 112, 15, 0, 112)
    t.set_ebias(16383)
    return t


def write_with_binary128(table: Table, path: Path, column: str, after: str, chunked: bool = False) -> Path:
    """The table as one compound dataset 'data' with a binary128 `column` inserted after column `after`."""
    rows = table.as_array()
    offsets, size = {}, 0
    for name in rows.dtype.names:
        offsets[name], size = size, size + rows.dtype[name].itemsize
        if name == after:
            extra, size = size, size + 16
    memory = np.dtype(
        {
            "names": list(offsets),
            "formats": [rows.dtype[n] for n in offsets],
            "offsets": list(offsets.values()),
            "itemsize": size,
        }
    )
    data = np.zeros(len(rows), memory)
    file_type = h5t.create(h5t.COMPOUND, size)
    for name, offset in offsets.items():
        data[name] = rows[name]
        file_type.insert(name.encode(), offset, h5t.py_create(rows.dtype[name]))
    file_type.insert(column.encode(), extra, binary128())
    dcpl = h5p.create(h5p.DATASET_CREATE)
    if chunked:
        dcpl.set_chunk((max(len(rows) // 3, 1),))
    with h5py.File(path, "w") as f:
        ds = h5d.create(f.id, b"data", file_type, h5s.create_simple((len(rows),)), dcpl=dcpl)
        ds.write(h5s.ALL, h5s.ALL, data, mtype=h5t.py_create(memory))
    return path


def unreadable_position(tmp_path):
    """RA stored as a 128-bit float (Fortran real(16)): a column the tool needs and cannot read."""
    t = make_table(5, b"STAR", 200)
    t.remove_column("RAJ2000")
    bad = write_with_binary128(t, tmp_path / "stars.hdf5", "RAJ2000", after="ID")
    return [*good(tmp_path), bad], f"{bad}: table 'data' column 'RAJ2000' is a 128-bit float, which cannot be read"


def filter_not_installed(tmp_path):
    """A table compressed with Blosc (as PyTables writes), whose HDF5 filter plugin is not installed."""
    if importlib.util.find_spec("hdf5plugin") is not None:
        pytest.skip("hdf5plugin is installed: the Blosc filter is available")
    rows = make_table(5, b"STAR", 200).as_array()
    bad = tmp_path / "stars.hdf5"
    with h5py.File(bad, "w") as f:
        ds = f.create_dataset(
            "data", shape=rows.shape, dtype=rows.dtype, chunks=rows.shape, compression=32001, allow_unknown_filter=True
        )
        ds.id.write_direct_chunk((0,), rows.tobytes())  # stored as is: only the filter's absence matters
    return [*good(tmp_path), bad], (
        f"{bad}: table 'data' is compressed with the Blosc filter (HDF5 filter id 32001), "
        "which is not installed; install it with `pip install hdf5plugin`"
    )


BROKEN = [
    not_hdf5,
    truncated,
    directory,
    missing_file,
    no_table,
    several_tables,
    zero_rows,
    missing_image,
    missing_label,
    numeric_label,
    wrong_shape,
    channels_first,
    shapes_differ,
    unknown_labels,
    conflicting_ids,
    same_file_twice,
    copy_of_a_file,
    ra_as_text,
    dec_as_pairs,
    corrupt_table_name,
    corrupt_meta_name,
    unreadable_position,
    filter_not_installed,
]


@pytest.mark.parametrize("broken", BROKEN, ids=lambda f: f.__name__)
@pytest.mark.parametrize("command", ["build", "merge"])
def test_bad_input_one_line_exit_1_no_output(broken, command, tmp_path):
    inputs, message = broken(tmp_path)
    out = tmp_path / "out" / "dataset.h5"
    out.parent.mkdir()
    code, stdout, stderr = run_cli(command, *inputs, "-o", out)
    assert code == 1, stderr
    assert_one_error_line(stderr, message)
    assert stdout == ""
    assert list(out.parent.iterdir()) == []  # no output, no temporary left behind
    quiet = run_cli(command, *inputs, "-o", out, "--quiet")
    assert quiet[0] == 1 and quiet[2].count("\n") == 1 and quiet[2].startswith("error: ")


def assert_one_error_line(stderr: str, message: str) -> None:
    """The last line is the error; the lines before it are progress, one per stage."""
    lines = stderr.splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1]
    assert not any(line.startswith("error") for line in lines[:-1])
    assert "Traceback" not in stderr


@pytest.mark.parametrize("broken", [not_hdf5, truncated, no_table, channels_first], ids=lambda f: f.__name__)
def test_debug_shows_the_traceback(broken, tmp_path):
    import subprocess
    import sys

    inputs, message = broken(tmp_path)
    args = ["build", *map(str, inputs), "-o", str(tmp_path / "o.h5")]
    plain = CliRunner().invoke(app, args)
    assert isinstance(plain.exception, SystemExit) and "Traceback" not in plain.stderr  # only the one line
    debug = CliRunner().invoke(app, [*args, "--debug"])
    assert isinstance(debug.exception, CutoutEtlError) and message in str(debug.exception)  # the library's exception
    script = Path(sys.executable).parent / "cutout-etl"
    shown = subprocess.run([script, *args, "--debug", "--quiet"], capture_output=True, text=True, check=False)
    assert shown.returncode == 1
    assert shown.stderr.startswith("Traceback (most recent call last):")
    assert f"{type(debug.exception).__name__}: " in shown.stderr


def test_table_path_chooses_among_several(tmp_path):
    inputs, _ = several_tables(tmp_path)
    # the good files hold only 'data': inspect the file with two tables alone, whose one class is STAR
    code, stdout, stderr = run_cli("inspect", inputs[-1], "--table-path", "dr5", "--classes", "STAR", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["files"][0]["table_path"] == "dr5"


def test_existing_output_refused_without_overwrite(tmp_path):
    files = good(tmp_path) + [write_table(make_table(10, b"STAR", 200), tmp_path / "s.hdf5")]
    out = tmp_path / "dataset.h5"
    out.write_bytes(b"precious")
    code, _, stderr = run_cli("build", *files, "-o", out)
    assert code == 2
    assert stderr == f"error: {out}: output exists; use --overwrite to replace it\n"
    assert out.read_bytes() == b"precious"


def test_failed_build_leaves_existing_output_untouched(tmp_path):
    inputs, _ = unknown_labels(tmp_path)
    out = tmp_path / "dataset.h5"
    assert (
        run_cli("build", *inputs, "-o", out, "--drop-unknown", "--quiet")[0] == 0
    )  # --overwrite replaces only our outputs
    before = out.read_bytes()
    code, _, _ = run_cli("build", *inputs, "-o", out, "--overwrite")
    assert code == 1 and out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_unwritable_output_directory(tmp_path):
    files = good(tmp_path) + [write_table(make_table(10, b"STAR", 200), tmp_path / "s.hdf5")]
    if os.geteuid() == 0:
        target = Path("/sys/dataset.h5")  # root ignores permissions; sysfs refuses new files
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        target = locked / "dataset.h5"
    code, _, stderr = run_cli("build", *files, "-o", target)
    assert code == 1
    assert_one_error_line(stderr, f"error: {target}: cannot write in {target.parent} (")
    assert not target.exists()


def test_missing_output_directory(tmp_path):
    files = good(tmp_path)
    target = tmp_path / "no" / "such" / "dir.h5"
    code, _, stderr = run_cli("merge", *files, "-o", target)
    assert code == 1
    assert_one_error_line(stderr, f"error: {target}: output directory {target.parent} does not exist")


@pytest.mark.parametrize("fractions", ["0.7,0.2", "0.5,0.5,0.5", "a,b,c", "0,0.5,0.5"])
def test_bad_fractions_exit_2(fractions, tmp_path):
    files = good(tmp_path)
    code, _, stderr = run_cli("build", *files, "-o", tmp_path / "o.h5", "--fractions", fractions)
    assert code == 2 and "--fractions" in stderr
    assert not (tmp_path / "o.h5").exists()


def test_class_too_small_for_the_splits(tmp_path):
    files = good(tmp_path) + [write_table(make_table(2, b"STAR", 200), tmp_path / "s.hdf5")]
    code, _, stderr = run_cli("build", *files, "-o", tmp_path / "o.h5")
    assert code == 1
    assert_one_error_line(stderr, "error: class STAR has 2 rows, fewer than the 3 non-empty splits")


def test_split_refuses_a_file_that_is_not_merged(tmp_path):
    files = good(tmp_path)
    code, _, stderr = run_cli("split", files[0], "-o", tmp_path / "o.h5", "--quiet")
    assert code == 1
    assert stderr == f"error: {files[0]}: not a cutout-etl dataset (no 'cutout_etl' metadata); build one first\n"


def test_ctrl_c_leaves_nothing_behind(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from cutout_etl.demo import write_demo_files

    files = write_demo_files(tmp_path / "in", rows=1500, seed=2)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    script = Path(sys.executable).parent / "cutout-etl"
    child = subprocess.Popen(
        [script, "build", *map(str, files), "-o", str(out_dir / "dataset.h5"), "--chunk-rows", "4"],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not list(out_dir.iterdir()) and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.01)  # wait until the temporary output exists: the run is under way
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    left = list(out_dir.iterdir())
    assert (child.returncode, left) == (130, []), stderr
    assert stderr.splitlines()[-1] == "interrupted by SIGINT: no output written"


def test_every_row_dropped_is_an_error_not_an_empty_dataset(tmp_path):
    bad = write_table(make_table(5, b"BLAZAR", 0), tmp_path / "blazars.hdf5")
    code, _, stderr = run_cli("build", bad, "-o", tmp_path / "o.h5", "--drop-unknown", "--quiet")
    assert code == 1
    assert stderr == "error: nothing to write: all 5 rows were dropped (unknown label 5)\n"
    assert not (tmp_path / "o.h5").exists()


def test_output_that_is_an_input_is_refused(tmp_path):
    files = good(tmp_path)
    before = files[0].read_bytes()
    code, _, stderr = run_cli("merge", *files, "-o", files[0], "--overwrite", "--quiet")
    assert code == 2 and stderr == f"error: {files[0]}: is also an input; write the output elsewhere\n"
    assert files[0].read_bytes() == before


def test_non_ascii_class_names_are_refused(tmp_path):
    files = good(tmp_path)
    code, _, stderr = run_cli("build", *files, "-o", tmp_path / "o.h5", "--classes", "GALAXY,ÉTOILE", "--quiet")
    assert code == 2 and stderr == "error: --classes: class names must be ASCII (got ÉTOILE)\n"


def test_seed_out_of_range_is_a_usage_error(tmp_path):
    files = good(tmp_path)
    code, _, stderr = run_cli("build", *files, "-o", tmp_path / "o.h5", "--seed", str(2**70))
    assert code == 2 and "--seed" in stderr
