"""Where the band files are read: a pool of processes here (the default), this process, or a Dask cluster.

Each returns futures with `.result()`; the driver keeps a bounded number in
flight and takes results in submission order, so the output does not depend
on which worker finishes first.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
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
def workers(options: ClusterOptions, tasks: int) -> Iterator[tuple[Submit, int]]:
    """A submit function and how many calls to keep in flight, for `tasks` calls in all.

    Locally `--workers` is the size of the process pool (1: read in this
    process), never more than `tasks` (a pool costs a second or two to start);
    with a Dask scheduler it means what it means for the other commands.
    """
    if not options.is_local:
        options.check()
        with dask_cluster.connect(options) as client:
            cores: dict[str, int] = client.ncores()
            slots = max(1, sum(cores.values()))
            yield (lambda fn, *args: client.submit(fn, *args, pure=False)), 2 * slots
        return
    processes = default_processes() if options.workers is None else options.workers
    if processes < 1:
        raise UsageError(f"--workers: must be at least 1 (got {processes})")
    if min(processes, tasks) == 1:
        yield _here, 1
        return
    # spawn, not fork: the parent may hold threads (Rich's progress bar), and forking those is unsafe
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(processes, tasks), mp_context=context, initializer=_leave_signals_to_parent) as pool:
        try:
            yield _signals_held_while_spawning(pool), 2 * processes
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _signals_held_while_spawning(pool: ProcessPoolExecutor) -> Submit:
    """`pool.submit` with SIGINT and SIGHUP blocked while it runs: it may start a worker process.

    A started process inherits the blocked mask across exec, so a Ctrl-C that lands while a worker is still
    importing (before its initializer ignores the signal) stays pending there and is discarded, instead of
    printing a traceback from the worker's start-up; in this process it is delivered when the mask is restored.
    """
    held = {signal.SIGINT, signal.SIGHUP}

    def submit(fn: Callable[..., Any], *args: Any) -> Future:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            return pool.submit(fn, *args)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    return submit


def _leave_signals_to_parent() -> None:
    """A terminal's Ctrl-C or hang-up reaches the whole process group: the parent stops the pool, once, quietly."""
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)


def _here(fn: Callable[..., Any], *args: Any) -> Future:
    future: Future = Future()
    future.set_result(fn(*args))
    return future
