"""The commands on a real Dask cluster: separate `dask scheduler` and `dask worker` processes on 127.0.0.1.

The output through tcp:// and --scheduler-file equals the local build's
(digest, checksums, table bytes); a cluster that fails (no scheduler file,
too few workers, every worker or the scheduler killed mid-run) ends the run
within --worker-timeout with one line on stderr and no output.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

pytest.importorskip("distributed")

from cutout_etl import demo, open_dataset
from cutout_etl.verify import verify

from .conftest import SCRIPT
from .dask_processes import DaskProcesses, dask_processes, wait_until

CHUNK = 16
KILL_TIMEOUT = 3  # s: --worker-timeout of the runs whose workers or scheduler are killed
RUN_TIMEOUT = 120  # s: a bound on every command, so a hang fails the test instead of stalling the suite


def run(*args: object, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    command = [str(SCRIPT), *map(str, args), "--quiet"]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def ok(*args: object) -> None:
    done = run(*args)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with dask_processes(tmp_path_factory.mktemp("dask_cluster"), workers=2) as processes:
        yield processes


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[Path]:
    return demo.write_demo_files(tmp_path_factory.mktemp("cluster_demo"), rows=150)


@pytest.fixture(scope="module")
def local(files, tmp_path_factory) -> Path:
    """The local build and merge: what every cluster run must equal."""
    root = tmp_path_factory.mktemp("cluster_local")
    ok("build", *files, "-o", root / "built.h5", "--chunk-rows", CHUNK)
    ok("merge", *files, "-o", root / "merged.h5", "--chunk-rows", CHUNK)
    ok("build", *files, "-o", f"{root / 'parquet'}/", "--chunk-rows", CHUNK, "--rows-per-shard", 40)
    return root


def metadata(path: Path) -> dict:
    with open_dataset(path) as ds:
        return ds.metadata


def assert_same_dataset(a: Path, b: Path) -> None:
    """Same digest, checksums and every table's bytes (images bit-equal)."""
    ma, mb = metadata(a), metadata(b)
    assert ma["digest"] == mb["digest"]
    assert ma["checksums"] == mb["checksums"]
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert sorted(fa) == sorted(fb)
        for name in fa:
            assert fa[name][:].tobytes() == fb[name][:].tobytes(), name
    assert verify(b)["ok"]


def scheduler_args(cluster: DaskProcesses, how: str) -> list[object]:
    return ["--scheduler", cluster.address] if how == "tcp" else ["--scheduler-file", cluster.scheduler_file]


@pytest.mark.parametrize("how", ["tcp", "file"])
def test_build_on_separate_processes_equals_local(cluster, files, local, tmp_path, how):
    out = tmp_path / "built.h5"
    ok("build", *files, "-o", out, "--chunk-rows", CHUNK, *scheduler_args(cluster, how), "--workers", 2)
    assert_same_dataset(local / "built.h5", out)
    assert metadata(out)["stats"] == metadata(local / "built.h5")["stats"] or _close_stats(out, local / "built.h5")


def _close_stats(a: Path, b: Path) -> bool:
    """Statistics merged from per-task partials: counts and histograms exact, moments to rounding."""
    sa, sb = metadata(a)["stats"], metadata(b)["stats"]
    assert sa["n_cutouts"] == sb["n_cutouts"]
    for band, values in sa["bands"].items():
        for key, value in values.items():
            other = sb["bands"][band][key]
            assert value == pytest.approx(other, rel=1e-12, abs=0.0) if isinstance(value, float) else value == other
    return True


def test_merge_split_and_stats_through_tcp_equal_local(cluster, files, local, tmp_path):
    at = ["--scheduler", cluster.address]
    ok("merge", *files, "-o", tmp_path / "merged.h5", "--chunk-rows", CHUNK, *at)
    assert_same_dataset(local / "merged.h5", tmp_path / "merged.h5")
    ok("split", local / "merged.h5", "-o", tmp_path / "split_local.h5", "--chunk-rows", CHUNK)
    ok("split", tmp_path / "merged.h5", "-o", tmp_path / "split.h5", "--chunk-rows", CHUNK, *at)
    assert_same_dataset(tmp_path / "split_local.h5", tmp_path / "split.h5")
    ok(
        "stats",
        tmp_path / "split.h5",
        "--split",
        "val",
        "--chunk-rows",
        CHUNK,
        "--scheduler-file",
        cluster.scheduler_file,
    )
    ok("stats", tmp_path / "split_local.h5", "--split", "val", "--chunk-rows", CHUNK)
    on_cluster, here = metadata(tmp_path / "split.h5"), metadata(tmp_path / "split_local.h5")
    assert on_cluster["split_stats"]["val"]["n_cutouts"] == here["split_stats"]["val"]["n_cutouts"] > 0
    assert on_cluster["digest"] == here["digest"]
    assert verify(tmp_path / "split.h5")["ok"]


def test_parquet_from_worker_processes_has_the_local_rows_and_digest(cluster, files, local, tmp_path):
    out = f"{tmp_path / 'parquet'}/"
    ok("build", *files, "-o", out, "--chunk-rows", CHUNK, "--rows-per-shard", 40, "--scheduler", cluster.address)
    assert metadata(tmp_path / "parquet")["digest"] == metadata(local / "parquet")["digest"]
    shards = sorted(p.name for p in (local / "parquet" / "data").iterdir())
    assert sorted(p.name for p in (tmp_path / "parquet" / "data").iterdir()) == shards and len(shards) > 3
    assert verify(tmp_path / "parquet")["ok"]


def test_stats_through_tcp_while_another_process_reads_the_dataset(cluster, local, tmp_path):
    dataset = tmp_path / "dataset.h5"
    dataset.write_bytes((local / "built.h5").read_bytes())
    code = f"import sys, h5py\nf = h5py.File({str(dataset)!r}, 'r')\nprint('open', flush=True)\nsys.stdin.readline()\n"
    reader = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout is not None and reader.stdout.readline() == "open\n"
        ok("stats", dataset, "--chunk-rows", CHUNK, "--scheduler", cluster.address)
    finally:
        reader.communicate("\n", timeout=30)
    assert verify(dataset)["ok"]


# ---------------------------------------------------------------- failures: one line, exit 1, no output, bounded


def assert_one_line_failure(done: subprocess.CompletedProcess, expected: str, out_dir: Path) -> None:
    assert done.returncode == 1, done.stderr
    assert done.stderr == f"error: {expected}\n"
    assert list(out_dir.iterdir()) == []


def test_a_missing_scheduler_file_fails_within_the_timeout(files, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    missing = tmp_path / "nowhere.json"
    done = run("build", *files, "-o", out_dir / "d.h5", "--scheduler-file", missing, "--worker-timeout", 2, timeout=60)
    assert_one_line_failure(done, f"{missing}: no Dask scheduler file appeared within 2 s (--worker-timeout)", out_dir)


def test_workers_that_do_not_arrive_fail_within_the_timeout(cluster, files, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    at = ["--scheduler", cluster.address, "--workers", 3, "--worker-timeout", 3]
    done = run("build", *files, "-o", out_dir / "d.h5", *at, timeout=60)
    expected = f"{cluster.address}: 2 of 3 Dask workers arrived within 3 s (--worker-timeout)"
    assert_one_line_failure(done, expected, out_dir)


def _build_stuck_on_stopped_workers(processes: DaskProcesses, files: list[Path], out: Path) -> subprocess.Popen:
    """A build whose tasks sit on workers stopped with SIGSTOP: what the killing tests kill under it."""
    processes.signal_workers(signal.SIGSTOP)
    args = ["build", *files, "-o", out, "--chunk-rows", CHUNK, "--scheduler-file", processes.scheduler_file]
    build = subprocess.Popen(
        [str(SCRIPT), *map(str, args), "--worker-timeout", str(KILL_TIMEOUT), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: processes.tasks_on_scheduler() > 0 or build.poll() is not None, 60, "tasks submitted")
    return build


def test_all_workers_killed_mid_run_is_one_line_within_the_timeout(files, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (tmp_path / "cluster").mkdir()
    with dask_processes(tmp_path / "cluster", workers=1) as dp:
        build = _build_stuck_on_stopped_workers(dp, files, out_dir / "d.h5")
        dp.signal_workers(signal.SIGKILL)
        _, stderr = build.communicate(timeout=60)
    expected = (
        f"{dp.scheduler_file}: all Dask workers lost mid-run; none came back within {KILL_TIMEOUT} s (--worker-timeout)"
    )
    assert_one_line_failure(subprocess.CompletedProcess(build.args, build.returncode, "", stderr), expected, out_dir)


def test_the_scheduler_killed_mid_run_is_one_line(files, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (tmp_path / "cluster").mkdir()
    with dask_processes(tmp_path / "cluster", workers=1) as dp:
        build = _build_stuck_on_stopped_workers(dp, files, out_dir / "d.h5")
        dp.kill_scheduler()
        _, stderr = build.communicate(timeout=60)
    expected = f"{dp.scheduler_file}: lost the Dask scheduler mid-run (scheduler-connection-lost); no output written"
    assert_one_line_failure(subprocess.CompletedProcess(build.args, build.returncode, "", stderr), expected, out_dir)


def test_an_interrupted_client_cancels_its_tasks_on_the_scheduler(cluster, files, tmp_path):
    """SIGTERM to the client: exit 143, no output, and the scheduler forgets the run's tasks (best effort, but here)."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    try:
        build = _build_stuck_on_stopped_workers(cluster, files, out_dir / "d.h5")
        build.send_signal(signal.SIGTERM)
        _, stderr = build.communicate(timeout=60)
        wait_until(lambda: cluster.tasks_on_scheduler() == 0, 60, "the scheduler released the tasks")
    finally:
        cluster.signal_workers(signal.SIGCONT)
    assert (build.returncode, stderr) == (143, "interrupted by SIGTERM: no output written\n")
    assert list(out_dir.iterdir()) == []
