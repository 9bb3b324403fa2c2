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

from cutout_etl import distributed, pipeline, records
from cutout_etl.errors import InputChangedError
from cutout_etl.scan import FileHasher, ReadOptions, open_inputs

from .conftest import make_table, write_table

LONG_AGO_NS = 1_600_000_000 * 10**9  # inputs were written long before the run, whatever the clock's resolution


def class_files(directory: Path) -> list[Path]:
    directory.mkdir(exist_ok=True)
    files = [
        write_table(make_table(30, b"GALAXY", 0, seed=1), directory / "galaxies.hdf5"),
        write_table(make_table(20, b"QSO", 1000, seed=2), directory / "qso.hdf5"),
        write_table(make_table(25, b"STAR", 2000, seed=3), directory / "stars.hdf5"),
    ]
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
    files = class_files(tmp_path / "in")
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
    files = class_files(tmp_path / "in")
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
    files = class_files(tmp_path / "in")
    infos = scanned_infos(files)
    action(files[1])
    with contextlib.ExitStack() as stack, pytest.raises(InputChangedError, match=f"^{files[1]}: changed while"):
        records.open_row_readers(infos, stack)
    job = distributed.WriteJob(infos, ["GALAXY", "QSO", "STAR"], np.dtype("f4"), tmp_path / "unused.h5", {}, 16, False, 4)
    facts = records.RowFacts(np.array([b"x"]), np.zeros(1, np.int16), np.ones(1, np.int16), np.zeros(1, np.int64))
    with pytest.raises(InputChangedError, match=f"^{files[1]}: changed while"):  # what a Dask worker runs
        distributed.run_task(job, distributed.Task("train", facts, np.zeros(1, np.int64), False))
    assert not (tmp_path / "unused.h5").exists()


def test_the_stored_sha256_is_of_the_file_pass_1_read(tmp_path):
    """The hasher opens the path itself: if that is another file, its digest is refused."""
    files = class_files(tmp_path / "in")
    infos = scanned_infos(files)
    rename_over(files[2])
    from cutout_etl.scan import InputFile

    with FileHasher(files) as hasher, pytest.raises(InputChangedError, match=f"^{files[2]}: changed while"):
        hasher.finish([InputFile(info=info) for info in infos])


def test_cli_input_changed_exit_1_one_line(tmp_path):
    """The real command line: the input is renamed over when the write pass starts."""
    files = class_files(tmp_path / "in")
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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", hook, *args], capture_output=True, text=True, env=env, timeout=120)
    assert (result.returncode, result.stdout) == (1, ""), result.stderr
    assert result.stderr == f"error: {changed_message(files[0])}\n"
    assert_nothing_written(out)
