"""What `timeout`, SLURM, `scancel`, `docker stop` and Ctrl-C do to a run: real signals to real processes.

Each stops the run, removes the temporary output, prints one line and exits
with 128 + the signal number; nothing is published.
"""

from __future__ import annotations

import gc
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cutout_etl import pipeline
from cutout_etl.cli import app
from cutout_etl.demo import write_demo_files

from .conftest import SCRIPT

ROWS = 1000  # per class: enough chunks of 32 rows to still be running when the signal comes


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, list[str]]:
    """Inputs of each command: class files, a merged file, a dataset."""
    root = tmp_path_factory.mktemp("signals")
    files = [str(p) for p in write_demo_files(root / "in", rows=ROWS, seed=3)]
    merged, dataset = root / "merged.h5", root / "dataset.h5"
    subprocess.run([SCRIPT, "merge", *files, "-o", merged, "-q"], check=True)
    subprocess.run([SCRIPT, "split", merged, "-o", dataset, "-q"], check=True)
    return {"build": files, "merge": files, "split": [str(merged)], "convert": [str(dataset)]}


def command_line(command: str, inputs: list[str], target: Path) -> list[str]:
    if command == "convert":
        return [str(SCRIPT), "convert", *inputs, str(target), "--quiet"]
    return [str(SCRIPT), command, *inputs, "-o", str(target), "--chunk-rows", "32", "--quiet"]


def interrupt_when_writing(args: list[str], out_dir: Path, target_name: str, signum: int) -> tuple[int, str, str]:
    """Start the CLI, send `signum` once its temporary output exists, return (exit code, stdout, stderr)."""
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(out_dir.glob(f".{target_name}.tmp-*")):
        assert child.poll() is None, "the run ended before its temporary output appeared"
        assert time.monotonic() < deadline, "no temporary output within 60 s"
        time.sleep(0.005)
    child.send_signal(signum)
    stdout, stderr = child.communicate(timeout=60)
    return child.returncode, stdout, stderr


CASES = [
    ("build", signal.SIGINT, "dataset.h5"),
    ("build", signal.SIGTERM, "dataset.h5"),
    ("build", signal.SIGHUP, "dataset.h5"),
    ("merge", signal.SIGTERM, "merged.h5"),
    ("split", signal.SIGTERM, "dataset.h5"),
    ("convert", signal.SIGTERM, "dataset.parquet"),
]


@pytest.mark.parametrize(("command", "signum", "target_name"), CASES, ids=lambda v: getattr(v, "name", v))
def test_a_stop_signal_leaves_nothing_and_says_so_in_one_line(command, signum, target_name, sources, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = command_line(command, sources[command], out_dir / target_name)
    code, stdout, stderr = interrupt_when_writing(args, out_dir, target_name, signum)
    assert code == 128 + signum, stderr
    assert stderr == f"interrupted by {signum.name}: no output written\n"
    assert stdout == ""
    assert list(out_dir.iterdir()) == []  # neither the temporary output nor the target


def test_json_reports_the_interrupt_on_stdout(sources, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = [*command_line("build", sources["build"], out_dir / "dataset.h5"), "--json"]
    code, stdout, stderr = interrupt_when_writing(args, out_dir, "dataset.h5", signal.SIGTERM)
    assert code == 143, stderr
    assert json.loads(stdout) == {"ok": False, "error": "interrupted by SIGTERM: no output written", "exit_code": 143}


class _Swallowed:
    """An object in a reference cycle whose finaliser receives Ctrl-C, as a GC pass can."""

    def __init__(self) -> None:
        self.cycle = self

    def __del__(self) -> None:
        signal.raise_signal(signal.SIGINT)  # the handler runs here: its exception is swallowed by Python


def _swallow_an_interrupt() -> None:
    _Swallowed()
    gc.collect()


def test_an_interrupt_swallowed_by_a_gc_callback_still_stops_the_run_quietly(demo_files, tmp_path, monkeypatch):
    plan_rows = pipeline.plan_rows

    def plan_then_interrupt(*args, **kwargs):
        plan = plan_rows(*args, **kwargs)
        _swallow_an_interrupt()  # then the write pass calls progress, which raises it again
        return plan

    monkeypatch.setattr(pipeline, "plan_rows", plan_then_interrupt)
    result = CliRunner().invoke(app, ["build", *map(str, demo_files), "-o", str(tmp_path / "ds.h5"), "--quiet"])
    assert result.exit_code == 130
    assert result.stderr == "interrupted by SIGINT: no output written\n"  # no "Exception ignored in", no traceback
    assert list(tmp_path.iterdir()) == []


def test_an_error_raised_by_the_interrupt_itself_is_reported_as_the_interrupt(demo_files, tmp_path, monkeypatch):
    """A signal landing inside a lock's release makes Python raise RuntimeError('release unlocked lock')."""
    plan_rows = pipeline.plan_rows

    def plan_then_break(*args, **kwargs):
        plan_rows(*args, **kwargs)
        try:
            signal.raise_signal(signal.SIGTERM)
        except KeyboardInterrupt:
            pass  # swallowed by the code it landed in, which then fails in its own way
        raise RuntimeError("release unlocked lock")

    monkeypatch.setattr(pipeline, "plan_rows", plan_then_break)
    result = CliRunner().invoke(app, ["build", *map(str, demo_files), "-o", str(tmp_path / "ds.h5"), "--quiet"])
    assert (result.exit_code, result.stderr) == (143, "interrupted by SIGTERM: no output written\n")
    assert list(tmp_path.iterdir()) == []


def test_an_interrupt_swallowed_after_the_last_progress_call_is_not_published(demo_files, tmp_path, monkeypatch):
    from cutout_etl.formats import hdf5

    finish = hdf5.HDF5Sink.finish

    def finish_then_interrupt(self, metadata):
        finish(self, metadata)
        _swallow_an_interrupt()  # no progress call follows: the check before the rename must catch it

    monkeypatch.setattr(hdf5.HDF5Sink, "finish", finish_then_interrupt)
    result = CliRunner().invoke(app, ["build", *map(str, demo_files), "-o", str(tmp_path / "ds.h5"), "--quiet"])
    assert result.exit_code == 130
    assert result.stderr == "interrupted by SIGINT: no output written\n"
    assert list(tmp_path.iterdir()) == []


def test_handlers_and_hooks_are_restored_after_a_run(demo_files, tmp_path):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    hook = sys.unraisablehook
    result = CliRunner().invoke(app, ["merge", *map(str, demo_files), "-o", str(tmp_path / "m.h5"), "--quiet"])
    assert result.exit_code == 0
    assert {s: signal.getsignal(s) for s in before} == before
    assert sys.unraisablehook is hook


def test_a_second_signal_during_the_cleanup_does_not_abort_it():
    from cutout_etl import interrupts
    from cutout_etl.errors import Interrupted

    cleaned = False
    with pytest.raises(Interrupted) as stopped, interrupts.stop_on_signals():
        try:
            signal.raise_signal(signal.SIGTERM)
        finally:
            signal.raise_signal(signal.SIGHUP)  # e.g. `timeout -k`, or a second Ctrl-C, while temporaries are removed
            cleaned = True
    assert cleaned and stopped.value.signum == signal.SIGTERM


def test_demo_data_stopped_leaves_only_complete_files(tmp_path):
    import h5py

    out_dir = tmp_path / "demo"
    args = [str(SCRIPT), "demo-data", str(out_dir), "--rows", str(ROWS), "--quiet"]
    out_dir.mkdir()
    code, _, stderr = interrupt_when_writing(args, out_dir, "image_table_*", signal.SIGTERM)
    assert code == 143, stderr
    assert stderr == "interrupted by SIGTERM: no partial file written\n"
    for path in out_dir.iterdir():  # files finished before the signal, nothing else
        assert not path.name.startswith(".")
        with h5py.File(path) as f:
            assert len(f["data"]) == ROWS
