"""What the inputs may not do to a run: change under it, carry empty IDs or impossible positions,
decide a result by their row order, or leave a class of the class list empty."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table, vstack

from cutout_etl import pipeline
from cutout_etl.errors import InputChangedError, InvalidRowError, MissingClassError
from cutout_etl.execution import dask_cluster
from cutout_etl.inputs import records
from cutout_etl.inputs.scan import FileHasher, InputFile, ReadOptions, open_inputs

from .conftest import class_tables, make_table, run_cli, write_class_files, write_table

LONG_AGO_NS = 1_600_000_000 * 10**9  # inputs were written long before the run, whatever the clock's resolution


def class_files_written_long_ago(directory: Path) -> list[Path]:
    """The three class files of the `class_files` fixture (QSO unpadded), last modified long before the run."""
    files = write_class_files(directory, class_tables((30, 20, 25)))
    for path in files:
        os.utime(path, ns=(LONG_AGO_NS, LONG_AGO_NS))
    return files


def other_like(path: Path) -> Path:
    """Another file of the same layout, label and size: other objects, other pixels."""
    table = Table.read(path, path="data")
    label = table["SPECTYPE"][0]
    label = label.encode() if isinstance(label, str) else bytes(label)
    return write_table(make_table(len(table), label, 5000, seed=7), path.parent / "other.hdf5")


def rename_over(path: Path) -> None:
    """What `mv new.hdf5 galaxies.hdf5` or a download tool does: another inode under the same name."""
    os.replace(other_like(path), path)


def rewrite_in_place(path: Path) -> None:
    """What `cp new.hdf5 galaxies.hdf5` does: the same inode, other content."""
    other = other_like(path)
    content = other.read_bytes()
    other.unlink()
    inode = path.stat().st_ino
    assert len(content) == path.stat().st_size  # the hardest case: the size does not change
    with open(path, "r+b") as fh:
        fh.write(content)
    assert path.stat().st_ino == inode


class ActAt:
    """A progress callback that changes an input once, at the first or last call of a stage."""

    def __init__(self, stage: str, when: str, action, path: Path) -> None:
        self.stage, self.when, self.action, self.path = stage, when, action, path
        self.fired = False

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage == self.stage and not self.fired and (self.when == "first" or done == total):
            self.fired = True
            self.action(self.path)


def changed_message(path: Path) -> str:
    return f"{path}: changed while it was being read (replaced or rewritten); nothing written"


def assert_nothing_written(out: Path) -> None:
    assert list(out.parent.iterdir()) == []  # no output, no temporary left behind


@pytest.mark.parametrize("action", [rename_over, rewrite_in_place], ids=["renamed over", "rewritten in place"])
@pytest.mark.parametrize(
    "stage, when",
    [("scan", "last"), ("write", "first"), ("hash", "first")],
    ids=["after pass 1", "during pass 2", "while hashing"],
)
@pytest.mark.parametrize("command", ["build", "merge"])
def test_an_input_changed_during_the_run_stops_it_and_writes_nothing(tmp_path, command, stage, when, action):
    files = class_files_written_long_ago(tmp_path / "in")
    out = tmp_path / "out" / "dataset.h5"
    out.parent.mkdir()
    act = ActAt(stage, when, action, files[0])
    with pytest.raises(InputChangedError) as caught:
        getattr(pipeline, command)(files, out, progress=act)
    assert act.fired
    assert str(caught.value) == changed_message(files[0])
    assert_nothing_written(out)


def test_the_image_re_read_of_repeated_ids_refuses_a_replaced_input(tmp_path):
    """Repeated IDs send pass 1 back to the files for their pixels: that read is checked too."""
    files = class_files_written_long_ago(tmp_path / "in")
    again = write_table(make_table(3, b"GALAXY", 0, seed=9), tmp_path / "in" / "more_galaxies.hdf5")
    out = tmp_path / "out" / "dataset.h5"
    out.parent.mkdir()
    act = ActAt("scan", "last", rename_over, again)
    with pytest.raises(InputChangedError, match="more_galaxies.hdf5: changed while"):
        pipeline.build([*files, again], out, progress=act)
    assert act.fired
    assert_nothing_written(out)


def scanned_infos(files: list[Path]):
    with contextlib.ExitStack() as stack:
        return [info for info, _ in open_inputs(files, ReadOptions(), stack)]


@pytest.mark.parametrize("action", [rename_over, rewrite_in_place], ids=["renamed over", "rewritten in place"])
def test_pass_2_readers_and_dask_tasks_refuse_an_input_that_is_not_the_one_scanned(tmp_path, action):
    files = class_files_written_long_ago(tmp_path / "in")
    infos = scanned_infos(files)
    action(files[1])
    with contextlib.ExitStack() as stack, pytest.raises(InputChangedError, match=f"^{files[1]}: changed while"):
        records.open_row_readers(infos, stack)
    classes = ["GALAXY", "QSO", "STAR"]
    job = dask_cluster.WriteJob(infos, classes, np.dtype("f4"), tmp_path / "unused.h5", {}, 16, False, 4)
    facts = records.RowFacts(np.zeros(1, np.int16), np.ones(1, np.int16), np.zeros(1, np.int64))
    with pytest.raises(InputChangedError, match=f"^{files[1]}: changed while"):  # what a Dask worker runs
        dask_cluster.run_task(job, dask_cluster.Task("train", facts, np.zeros(1, np.int64), False))
    assert not (tmp_path / "unused.h5").exists()


def test_the_stored_sha256_is_of_the_file_pass_1_read(tmp_path):
    """The hasher opens the path itself: if that is another file, its digest is refused."""
    files = class_files_written_long_ago(tmp_path / "in")
    infos = scanned_infos(files)
    rename_over(files[2])
    with FileHasher(files) as hasher, pytest.raises(InputChangedError, match=f"^{files[2]}: changed while"):
        hasher.finish([InputFile(info=info) for info in infos])


def test_cli_input_changed_exit_1_one_line(tmp_path):
    """The real command line: the input is renamed over when the write pass starts."""
    files = class_files_written_long_ago(tmp_path / "in")
    out = tmp_path / "out" / "dataset.h5"
    out.parent.mkdir()
    hook = (
        "import os, sys\n"
        "from cutout_etl import cli\n"
        "from tests.test_inputs import rename_over\n"
        "from pathlib import Path\n"
        "call = cli.ProgressReporter.__call__\n"
        "def act(self, stage, done, total):\n"
        "    if stage == 'write' and not getattr(self, 'acted', False):\n"
        "        self.acted = True\n"
        "        rename_over(Path(sys.argv[2]))\n"
        "    call(self, stage, done, total)\n"
        "cli.ProgressReporter.__call__ = act\n"
        "sys.argv[0] = 'cutout-etl'\n"
        "cli.main()\n"
    )
    args = ["build", *map(str, files), "-o", str(out), "--quiet"]
    root = str(Path(__file__).parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", hook, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert (result.returncode, result.stdout) == (1, ""), result.stderr
    assert result.stderr == f"error: {changed_message(files[0])}\n"
    assert_nothing_written(out)


# ---------------------------------------------------------------- empty IDs and impossible positions


def with_rows_changed(directory: Path, column: str, values: dict[int, object]) -> list[Path]:
    """The three class files, some rows of galaxies.hdf5 changed in one column."""
    files = class_files_written_long_ago(directory)
    table = Table.read(files[0], path="data")
    for row, value in values.items():
        table[column][row] = value
    write_table(table, files[0])
    return files


def test_empty_ids_are_refused_naming_the_file_and_count(tmp_path):
    files = with_rows_changed(tmp_path / "in", "ID", {3: b"", 7: b"   ", 8: b""})
    out = tmp_path / "out" / "dataset.h5"
    out.parent.mkdir()
    expected = f"{files[0]}: 3 rows with an empty ID, e.g. row 3; use --drop-invalid to drop them"
    for command in (pipeline.build, pipeline.merge):
        with pytest.raises(InvalidRowError) as caught:
            command(files, out)
        assert str(caught.value) == expected
    code, stdout, stderr = run_cli("build", *files, "-o", out, "--quiet")
    assert (code, stdout, stderr) == (1, "", f"error: {expected}\n")
    assert_nothing_written(out)


def test_empty_ids_are_dropped_as_such_never_as_duplicates(tmp_path):
    """20 distinct objects without a name are not one object seen 20 times."""
    files = with_rows_changed(tmp_path / "in", "ID", {row: (b"" if row % 2 else b"  ") for row in range(20)})
    options = pipeline.MergeOptions(drop_invalid=True)
    for command in (pipeline.build, pipeline.merge):
        report = command(files, tmp_path / f"{command.__name__}.h5", merge_options=options)["report"]
        assert report["dropped"]["empty_id"] == 20
        assert report["dropped"]["duplicate_id"] == 0 and report["duplicate_ids"]["same_label_groups"] == 0
        assert report["rows_kept"] == 10 + 20 + 25
        assert [f["dropped"]["empty_id"] for f in report["files"]] == [20, 0, 0]
    code, _, stderr = run_cli("merge", *files, "-o", tmp_path / "cli.h5", "--drop-invalid")
    assert code == 0 and "dropped 20 rows: empty id" in stderr


INVALID_POSITIONS = [
    ("RAJ2000", np.nan),
    ("RAJ2000", np.inf),
    ("RAJ2000", 360.0),
    ("RAJ2000", -0.5),
    ("DECJ2000", np.nan),
    ("DECJ2000", -np.inf),
    ("DECJ2000", -95.0),
    ("DECJ2000", 90.5),
]


@pytest.mark.parametrize("column, value", INVALID_POSITIONS, ids=lambda v: str(v))
def test_invalid_positions_are_refused_naming_the_file_and_count(tmp_path, column, value):
    files = with_rows_changed(tmp_path / "in", column, {4: value, 11: value})
    out = tmp_path / "out" / "dataset.h5"
    out.parent.mkdir()
    expected = (
        f"{files[0]}: 2 rows with an invalid sky position (RA/Dec NaN, infinite or out of range), e.g. row 4; "
        "use --drop-invalid to drop them"
    )
    for command in (pipeline.build, pipeline.merge):
        with pytest.raises(InvalidRowError) as caught:
            command(files, out)
        assert str(caught.value) == expected
    assert_nothing_written(out)


def test_the_edges_of_the_sky_are_valid_positions(tmp_path):
    files = with_rows_changed(tmp_path / "in", "DECJ2000", {0: -90.0, 1: 90.0})
    table = Table.read(files[0], path="data")
    table["RAJ2000"][2] = 0.0
    table["RAJ2000"][3], table["DECJ2000"][3] = np.nextafter(360.0, 0), 10.0  # not beside row 2 at RA 0
    write_table(table, files[0])
    assert pipeline.merge(files, tmp_path / "out.h5")["report"]["rows_kept"] == 75


def test_invalid_positions_dropped_never_matched_on_the_sky(tmp_path):
    """Dec -95 would map to Dec -85 on the other side of the pole: a star there is not that object."""
    files = class_files_written_long_ago(tmp_path / "in")
    stars = Table.read(files[2], path="data")
    stars["RAJ2000"][0], stars["DECJ2000"][0] = 190.0, -85.0
    write_table(stars, files[2])
    galaxies = Table.read(files[0], path="data")
    galaxies["RAJ2000"][0], galaxies["DECJ2000"][0] = 10.0, -95.0
    galaxies["RAJ2000"][1] = np.nan
    write_table(galaxies, files[0])
    options = pipeline.MergeOptions(drop_invalid=True)
    for command in (pipeline.build, pipeline.merge):
        report = command(files, tmp_path / f"{command.__name__}.h5", merge_options=options)["report"]
        assert report["dropped"]["invalid_position"] == 2
        assert report["dropped"]["conflicting_position"] == 0 and report["dropped"]["duplicate_position"] == 0
        assert report["rows_kept"] == 73
        assert [f["dropped"]["invalid_position"] for f in report["files"]] == [2, 0, 0]
    code, _, stderr = run_cli("build", *files, "-o", tmp_path / "cli.h5", "--drop-invalid")
    assert code == 0 and "dropped 2 rows: invalid position" in stderr


# ---------------------------------------------------------------- the copy kept does not depend on row order


def test_copies_differing_only_in_position_keep_the_same_one_whatever_the_order(tmp_path):
    """One ID twice, identical pixels, 3.6 arcsec apart: the copy kept follows from the position."""
    files = class_files_written_long_ago(tmp_path / "in")
    galaxies = Table.read(files[0], path="data")
    moved = galaxies[:1].copy()
    moved["RAJ2000"] += 0.001  # 3.6 arcsec: farther than the match radius, the same pixels
    doubled = vstack([galaxies, moved])
    digests = []
    for name, table in [("forward", doubled), ("reversed", doubled[::-1])]:
        path = write_table(table, tmp_path / "in" / "galaxies.hdf5")
        digests.append(pipeline.build(files, tmp_path / f"{name}.h5")["digest"])
    # the two copies in two files, swapped between the files
    for name, (first, second) in [("a", (galaxies, moved)), ("b", (moved, galaxies))]:
        write_table(first, path)
        extra = write_table(second, tmp_path / "in" / "more_galaxies.hdf5")
        metadata = pipeline.build([*files, extra], tmp_path / f"{name}.h5")
        assert metadata["report"]["dropped"]["duplicate_id"] == 1
        digests.append(metadata["digest"])
    assert len(set(digests)) == 1


# ---------------------------------------------------------------- every class of the class list is present


def test_a_class_with_no_rows_is_an_error_naming_the_classes_present(tmp_path):
    files = class_files_written_long_ago(tmp_path / "in")
    out = tmp_path / "out" / "dataset.h5"
    out.parent.mkdir()
    expected = "no rows of class STAR (kept: GALAXY 30, QSO 20); name the classes present with --classes GALAXY,QSO"
    for command in (pipeline.build, pipeline.merge):
        with pytest.raises(MissingClassError) as caught:
            command(files[:2], out)
        assert str(caught.value) == expected
    code, stdout, stderr = run_cli("build", *files[:2], "-o", out, "--quiet")
    assert (code, stdout, stderr) == (1, "", f"error: {expected}\n")
    assert_nothing_written(out)
    metadata = pipeline.build(files[:2], out, merge_options=pipeline.MergeOptions(classes=["GALAXY", "QSO"]))
    assert metadata["classes"] == ["GALAXY", "QSO"]


def test_a_class_whose_rows_are_all_dropped_is_missing_too(tmp_path):
    files = class_files_written_long_ago(tmp_path / "in")
    stars = Table.read(files[2], path="data")
    stars["image"][:] = np.nan
    write_table(stars, files[2])
    qso = Table.read(files[1], path="data")
    qso["SPECTYPE"][:] = b"BLAZAR"
    write_table(qso, files[1])
    expected = r"^no rows of classes QSO, STAR \(kept: GALAXY 30\); name the classes present with --classes GALAXY$"
    with pytest.raises(MissingClassError, match=expected):
        pipeline.merge(files, tmp_path / "out.h5", merge_options=pipeline.MergeOptions(drop_unknown=True))
