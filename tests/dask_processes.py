"""A real Dask cluster for tests: a `dask scheduler` and `dask worker` processes on 127.0.0.1.

Ports are chosen by the scheduler (port 0) and read from its scheduler file.
Each process runs in its own session, so `stop()` kills it (and anything it
started) by its process group; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

DASK = Path(sys.executable).parent / "dask"
START_TIMEOUT = 60.0  # s: scheduler file and workers, on a busy 2-core machine
REPOSITORY = Path(__file__).resolve().parent.parent


def _environment() -> dict[str, str]:
    """This environment, with the repository importable: functions of `tests` sent to the scheduler unpickle there."""
    paths = [str(REPOSITORY), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


class DaskProcesses:
    """A scheduler and `workers` single-threaded workers (no nanny: one process each, so a kill is final)."""

    def __init__(self, directory: Path) -> None:
        self.scheduler_file = directory / "scheduler.json"
        self.log_dir = directory
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.address = ""

    def start(self, workers: int) -> None:
        self.scheduler = self._start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"])
        self.address = self._wait_for_address()
        for i in range(workers):
            self.workers.append(self.add_worker(i))
        self.wait_for_workers(workers)

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [str(DASK), *args, "--scheduler-file", str(self.scheduler_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=_environment(),
        )
        log.close()
        return process

    def add_worker(self, index: int) -> subprocess.Popen:
        args = ["worker", "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny", "--no-dashboard"]
        return self._start(f"worker{index}", args)

    def _wait_for_address(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError, KeyError):
                return json.loads(self.scheduler_file.read_text())["address"]
            if self.scheduler is None or self.scheduler.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"dask scheduler did not start: {(self.log_dir / 'scheduler.log').read_text()[-2000:]}")

    def wait_for_workers(self, n: int) -> None:
        with self.client() as client:
            client.wait_for_workers(n, timeout=START_TIMEOUT)

    @contextlib.contextmanager
    def client(self) -> Iterator[object]:
        from distributed import Client

        with Client(self.address, timeout="30s") as client:
            yield client

    def tasks_on_scheduler(self) -> int:
        with self.client() as client:
            return client.run_on_scheduler(_count_tasks)  # type: ignore[attr-defined]

    def signal_workers(self, signum: int) -> None:
        for worker in self.workers:
            os.killpg(worker.pid, signum)

    def kill_scheduler(self) -> None:
        assert self.scheduler is not None
        os.killpg(self.scheduler.pid, signal.SIGKILL)

    def stop(self) -> None:
        for process in [*self.workers, *([self.scheduler] if self.scheduler else [])]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def _count_tasks(dask_scheduler: object) -> int:
    return len(dask_scheduler.tasks)  # type: ignore[attr-defined]


@contextlib.contextmanager
def dask_processes(directory: Path, workers: int) -> Iterator[DaskProcesses]:
    processes = DaskProcesses(directory)
    try:
        processes.start(workers)
        yield processes
    finally:
        processes.stop()


def wait_until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    """Poll `condition` until it is true; AssertionError naming `what` after `timeout` s (a bound, not a measurement)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)
