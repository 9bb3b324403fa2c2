"""Reaching a Dask cluster, and waiting on it, with every wait bounded by `--worker-timeout`.

A cluster fails in ways a local run does not: the scheduler file never
appears, fewer workers arrive than asked for, every worker dies mid-run (Dask
then keeps the tasks pending for ever), or the scheduler goes away (Dask
cancels every future). Each becomes one `ClusterError` line here instead of a
hang or a Dask traceback; Dask's own log lines are silenced unless
`ClusterOptions.show_logs` (the CLI's --debug).

`allocation_cpus` is how many worker processes `--scheduler dask` starts
when --workers is not given: the CPUs this process may run on (its affinity
mask, which SLURM and taskset set), or fewer if SLURM's variables say so.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ClusterError, UsageError

if TYPE_CHECKING:
    from .dask_cluster import ClusterOptions

T = TypeVar("T")

LOCAL_CLUSTER = "dask"
CONNECT_TIMEOUT = 30.0  # seconds to reach a scheduler at all (a typo should not wait --worker-timeout)
POLL = 1.0  # seconds between looks at the workers while a result is awaited
# In the order they are consulted: the first one set (and a number) caps the affinity mask.
SLURM_CPU_VARIABLES = ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE", "SLURM_JOB_CPUS_PER_NODE")


def allocation_cpus(environ: Mapping[str, str] | None = None) -> int:
    """The CPUs this process may use: its affinity mask, capped by SLURM's allocation when that is smaller.

    SLURM_JOB_CPUS_PER_NODE looks like "8" or "4(x2),2": its first count is this node's.
    """
    environ = os.environ if environ is None else environ
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    for name in SLURM_CPU_VARIABLES:
        digits = environ.get(name, "").split("(")[0].split(",")[0].strip()
        if digits.isdigit() and int(digits) > 0:
            return min(cpus, int(digits))
    return max(cpus, 1)


@contextlib.contextmanager
def connect(options: ClusterOptions) -> Iterator[Any]:
    """A `distributed.Client` for the options, with its workers there; a LocalCluster lives as long as the context."""
    try:
        import distributed
    except ImportError:
        raise UsageError("--scheduler: Dask is not installed; pip install 'cutout-etl[dask]'") from None
    with _dask_logs(options.show_logs):
        if options.scheduler == LOCAL_CLUSTER and options.scheduler_file is None:
            n = options.workers or allocation_cpus()
            with (
                distributed.LocalCluster(
                    n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0"
                ) as cluster,
                distributed.Client(cluster) as client,
            ):
                yield client
            return
        client = _client(options, distributed.Client)
        with client:
            _wait_for_workers(client, options)
            yield client


def _client(options: ClusterOptions, client_type: Callable[..., Any]) -> Any:
    """Connected to --scheduler-file's or --scheduler's address, within the bounds."""
    address = options.scheduler
    if options.scheduler_file is not None:
        address = _address_from_file(options.scheduler_file, options.worker_timeout)
    timeout = min(CONNECT_TIMEOUT, options.worker_timeout)
    try:
        return client_type(address, timeout=f"{timeout}s")
    except (OSError, TimeoutError, ValueError) as exc:
        where = f"{options.scheduler_file}: the Dask scheduler at {address}" if options.scheduler_file else address
        raise ClusterError(f"{where}: cannot reach the Dask scheduler ({_first_line(exc)})") from None


def _address_from_file(path: str, timeout: float) -> str:
    """The scheduler address in a scheduler file, waiting up to `timeout` s for it to be written (a job may be starting)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError), open(path, encoding="utf-8") as fh:
            return str(json.load(fh)["address"])
        if time.monotonic() >= deadline:
            problem = "no readable Dask scheduler file" if os.path.exists(path) else "no Dask scheduler file"
            raise ClusterError(f"{path}: {problem} appeared within {timeout:g} s (--worker-timeout)")
        time.sleep(0.2)


def _wait_for_workers(client: Any, options: ClusterOptions) -> None:
    """--workers (or at least one) running workers within --worker-timeout; ClusterError naming how many came."""
    from distributed.exceptions import WorkerStartTimeoutError

    wanted = options.workers or 1
    try:
        client.wait_for_workers(wanted, timeout=options.worker_timeout)
    except WorkerStartTimeoutError as exc:
        where = options.scheduler_file or options.scheduler
        raise ClusterError(
            f"{where}: {exc.available_workers} of {wanted} Dask workers arrived within "
            f"{options.worker_timeout:g} s (--worker-timeout)"
        ) from None


def results_in_order(client: Any, futures: Iterable[Any], options: ClusterOptions) -> Iterator[Any]:
    """Each future's result in turn; a lost scheduler, or no worker for --worker-timeout, is one ClusterError.

    Dask keeps tasks pending for ever when every worker is gone, so while a
    result is awaited the workers are counted every POLL seconds.
    """
    from distributed.client import FutureCancelledError

    where = options.scheduler_file or options.scheduler
    for future in futures:
        no_workers_since: float | None = None
        while True:
            try:
                yield future.result(timeout=POLL)
                break
            except TimeoutError:
                no_workers_since = _still_waiting(client, where, options.worker_timeout, no_workers_since)
            except FutureCancelledError as exc:
                raise ClusterError(
                    f"{where}: lost the Dask scheduler mid-run ({exc.reason}); no output written"
                ) from None


def _still_waiting(client: Any, where: str, timeout: float, no_workers_since: float | None) -> float | None:
    """When the workers were last all gone (None: some are there); ClusterError once that lasts `timeout` s."""
    try:
        workers = len(client.nthreads())
    except (OSError, TimeoutError):
        workers = 0  # the scheduler does not answer: the future will be cancelled, or the bound ends it
    if workers:
        return None
    now = time.monotonic()
    if no_workers_since is not None and now - no_workers_since >= timeout:
        raise ClusterError(
            f"{where}: all Dask workers lost mid-run; none came back within {timeout:g} s (--worker-timeout)"
        )
    return now if no_workers_since is None else no_workers_since


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


@contextlib.contextmanager
def _dask_logs(show: bool) -> Iterator[None]:
    """Dask's log lines (reconnect attempts, lost workers) only with --debug: the failure is one line.

    Dask gives its loggers their own levels, so each logger of the tree is switched off, and back after.
    """
    names = [n for n in logging.root.manager.loggerDict if n == "distributed" or n.startswith("distributed.")]
    loggers = [logging.getLogger(n) for n in names]
    before = [lg.disabled for lg in loggers]
    if not show:
        for lg in loggers:
            lg.disabled = True
    try:
        yield
    finally:
        for lg, disabled in zip(loggers, before, strict=True):
            lg.disabled = disabled
