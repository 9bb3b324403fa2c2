"""Where the band files are read: a pool of processes here (the default), this process, or a Dask cluster.

Each returns futures with `.result()`; the driver keeps a bounded number in
flight and takes results in submission order, so the output does not depend
on which worker finishes first.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from ..errors import UsageError
from ..execution import dask_cluster
from ..execution.dask_cluster import ClusterOptions

DEFAULT_MAX_PROCESSES = 8


Submit = Callable[..., Any]  # submit(fn, *args) -> a future with .result()


def default_processes() -> int:
    return max(1, min(os.cpu_count() or 1, DEFAULT_MAX_PROCESSES))


@contextlib.contextmanager
def workers(options: ClusterOptions) -> Iterator[tuple[Submit, int]]:
    """A submit function and how many calls to keep in flight.

    Locally `--workers` is the size of the process pool (1: read in this
    process); with a Dask scheduler it means what it means for the other commands.
    """
    if not options.is_local:
        options.check()
        with dask_cluster.connect(options) as client:
            cores: dict[str, int] = client.ncores()  # type: ignore[attr-defined]
            slots = max(1, sum(cores.values()))
            yield (lambda fn, *args: client.submit(fn, *args, pure=False)), 2 * slots  # type: ignore[attr-defined]
        return
    processes = default_processes() if options.workers is None else options.workers
    if processes < 1:
        raise UsageError(f"--workers: must be at least 1 (got {processes})")
    if processes == 1:
        yield _here, 1
        return
    # spawn, not fork: the parent may hold threads (Rich's progress bar), and forking those is unsafe
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            yield pool.submit, 2 * processes
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _here(fn: Callable[..., Any], *args: Any) -> Future:
    future: Future = Future()
    future.set_result(fn(*args))
    return future
