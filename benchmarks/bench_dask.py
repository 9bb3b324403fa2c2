"""Benchmark `build` on Dask: throughput for 1 and 2 workers, and per-worker peak memory.

    python benchmarks/bench_dask.py --rows 5000 [--workers 1 2] [--chunk-rows 512] [--workdir DIR] [--tcp]

Generates N demo rows per class (`cutout-etl demo-data`, in a child process),
then builds the dataset on the local path and on a LocalCluster of 1 and of
2 single-threaded worker processes, checking each digest equals the local
one. For each run it prints the wall time of the whole build and of the
write pass (from the end of the scan), throughput in rows/s and MB/s, and
each worker's RSS before the build and its peak RSS during it (VmHWM,
reset and read on the worker by `client.run`). The growth is the write
pass's own memory: it must stay under BOUND_BLOCKS blocks (chunk rows x row
size), whatever the number of rows; the benchmark fails otherwise.
With --tcp the workers are separate `dask worker` processes (no nanny) of
a separate `dask scheduler` on 127.0.0.1, reached as tcp://: what a batch
job runs.
On a 2-core machine no speed-up is expected: the client, the scheduler and
the workers share the same two cores and the same disk.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 1e6
BOUND_BLOCKS = 10  # a block of records, the input rows read for it, statistics temporaries, the partial
CLI = Path(sys.executable).parent / "cutout-etl"


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / MB
    return float("nan")


def reset_peak_rss_mb() -> float:
    """Runs on a worker: reset its peak RSS (VmHWM, Linux >= 4.0) and return its current RSS.

    ru_maxrss cannot be reset and carries the nanny's peak over the fork, so
    it would hide the write pass.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """Runs on a worker: its peak RSS since the reset (ru_maxrss where /proc is missing)."""
    peak = _status_mb("VmHWM")
    return peak if not math.isnan(peak) else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB


def timed_build(files: list[Path], out: Path, chunk_rows: int, cluster=None) -> tuple[float, float, dict]:
    from cutout_etl import pipeline
    from cutout_etl.inputs.scan import ReadOptions

    marks: dict[str, float] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "scan" and done == total:
            marks["scan_end"] = time.perf_counter()

    start = time.perf_counter()
    metadata = pipeline.build(files, out, ReadOptions(chunk_rows=chunk_rows), progress=progress, cluster=cluster)
    end = time.perf_counter()
    out.unlink()
    return end - start, end - marks["scan_end"], metadata


@contextlib.contextmanager
def tcp_cluster(workers: int, workdir: Path):
    """A `dask scheduler` and `workers` `dask worker` processes on 127.0.0.1; yields the scheduler address."""
    from distributed import Client

    dask = Path(sys.executable).parent / "dask"
    scheduler_file = workdir / f"scheduler-{workers}.json"
    common = ["--scheduler-file", str(scheduler_file), "--no-dashboard"]
    processes = [subprocess.Popen([str(dask), "scheduler", "--host", "127.0.0.1", "--port", "0", *common])]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        worker = [str(dask), "worker", "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny", *common]
        processes += [subprocess.Popen(worker, stderr=subprocess.DEVNULL) for _ in range(workers)]
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(workers, timeout=60)
        yield address
    finally:  # workers first: a worker told to stop says goodbye to its scheduler
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000, help="demo rows per class")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--chunk-rows", type=int, default=512)
    parser.add_argument("--blocks-per-task", type=int, default=16)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--tcp", action="store_true", help="separate scheduler and worker processes, over tcp://")
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    from cutout_etl.execution.dask_cluster import ClusterOptions

    workdir = Path(tempfile.mkdtemp(prefix="bench_dask_", dir=args.workdir))
    try:
        subprocess.run([str(CLI), "demo-data", str(workdir), "--rows", str(args.rows)], check=True, capture_output=True)
        files = sorted(workdir.glob("*.hdf5"))
        wall, write, local = timed_build(files, workdir / "local.h5", args.chunk_rows)
        rows = sum(t["rows"] for t in local["tables_rows"].values())
        row_bytes = 4 * int(__import__("numpy").prod(local["image_shape"])) + 100
        block_mb = args.chunk_rows * row_bytes / MB
        print(
            f"{rows} rows, {rows * row_bytes / MB:.0f} MB; blocks of {args.chunk_rows} rows = {block_mb:.1f} MB; "
            f"{args.blocks_per_task} blocks a task"
        )
        print(
            f"{'run':<12} {'build s':>8} {'write s':>8} {'rows/s':>8} {'MB/s':>6}  worker RSS MB (before -> peak, growth)"
        )
        print(
            f"{'local':<12} {wall:8.2f} {write:8.2f} {rows / write:8.0f} {rows * row_bytes / MB / write:6.0f}  (client process)"
        )
        kind = "tcp" if args.tcp else "dask"
        for n in args.workers:
            with contextlib.ExitStack() as stack:
                if args.tcp:
                    address = stack.enter_context(tcp_cluster(n, workdir))
                else:
                    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0")
                    address = stack.enter_context(cluster).scheduler_address
                client = stack.enter_context(Client(address))
                before = client.run(reset_peak_rss_mb)
                options = ClusterOptions(scheduler=address, workers=n, blocks_per_task=args.blocks_per_task)
                wall, write, metadata = timed_build(files, workdir / "dask.h5", args.chunk_rows, options)
                after = client.run(peak_rss_mb)
            if metadata["digest"] != local["digest"]:
                sys.exit(f"dask with {n} workers: digest {metadata['digest']} differs from the local {local['digest']}")
            memory = ", ".join(
                f"{before[w]:.0f} -> {after[w]:.0f} (+{after[w] - before[w]:.0f} = {(after[w] - before[w]) / block_mb:.1f} blocks)"
                for w in sorted(after)
            )
            worst = max(after[w] - before[w] for w in after) / block_mb
            if worst > BOUND_BLOCKS:
                sys.exit(f"dask with {n} workers: a worker grew by {worst:.1f} blocks (bound {BOUND_BLOCKS})")
            print(
                f"{f'{kind} x{n}':<12} {wall:8.2f} {write:8.2f} {rows / write:8.0f} {rows * row_bytes / MB / write:6.0f}  {memory}"
            )
        print(f"digests: equal to the local path's; worker growth within {BOUND_BLOCKS} blocks")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
