"""Pass 2 on a Dask cluster: `--scheduler dask` or `--scheduler tcp://host:port`.

The client keeps pass 1 (the label-and-ID scan, the plan and the split) and
cuts each output table, in stored order, into tasks of whole blocks
(`blocks_per_task` x `chunk_rows` rows). A task receives only small per-row
arrays for its rows (`RowFacts`, positions) and the input and output paths;
it opens the inputs itself, builds the records as the local path does
(`records.RecordFiller`), pwrites them at their offsets into the
preallocated HDF5 output (every worker must see the same file system), and
returns its per-block checksums and, for the statistics table, its
`BandStats` partial. The client combines both in task order, so checksums
and the digest equal the local path's for the same `chunk_rows`.

`dask.distributed` is imported only here, and only when a scheduler other
than `local` is asked for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..choices import Choice
from ..errors import UsageError
from ..formats.hdf5 import RowWriter
from ..inputs import readers
from ..inputs.readers import TableInfo
from ..inputs.records import RecordFiller, RowFacts, open_row_readers
from ..steps.checksums import BlockChecker, TableChecksums, block_checksums
from ..steps.stats import BandStats
from .dask_connect import connect, results_in_order

__all__ = ["ClusterOptions", "Scheduler", "connect", "stats_task", "table_stats", "write_tables"]


class Scheduler(Choice):
    """The named schedulers; `--scheduler` also takes a scheduler address such as tcp://host:8786."""

    LOCAL = "local"  # this process: worker threads (`local.py`)
    DASK = "dask"  # a new LocalCluster of --workers processes


LOCAL = Scheduler.LOCAL.value
LOCAL_CLUSTER = Scheduler.DASK.value
DEFAULT_BLOCKS_PER_TASK = 16
DEFAULT_WORKER_TIMEOUT = 120.0


@dataclass
class ClusterOptions:
    """Where pass 2 runs: here (`local`), a new LocalCluster (`dask`), or an existing scheduler."""

    scheduler: Scheduler | str = Scheduler.LOCAL  # or an address such as tcp://host:8786
    workers: int | None = None  # dask: LocalCluster size [cores]; an address: wait for this many
    scheduler_file: str | None = None  # as dask-jobqueue, dask-mpi and `dask scheduler --scheduler-file` write it
    blocks_per_task: int = DEFAULT_BLOCKS_PER_TASK
    worker_timeout: float = DEFAULT_WORKER_TIMEOUT  # s: bounds every wait for workers or a scheduler file
    show_logs: bool = False  # Dask's own log lines on stderr (the CLI's --debug)

    @property
    def is_local(self) -> bool:
        return self.scheduler == LOCAL and self.scheduler_file is None

    def check(self) -> None:
        """A usage error before any work."""
        known = self.scheduler in (LOCAL, LOCAL_CLUSTER) or "://" in self.scheduler
        if not known:
            raise UsageError(
                f"--scheduler: '{self.scheduler}' is not local, dask or a scheduler address such as tcp://host:8786"
            )
        if self.is_local and self.workers is not None:
            raise UsageError("--workers: needs --scheduler dask, a scheduler address or --scheduler-file")
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"--workers: must be at least 1 (got {self.workers})")
        if not self.worker_timeout > 0 or self.worker_timeout == float("inf"):
            raise UsageError(f"--worker-timeout: must be a positive number of seconds (got {self.worker_timeout:g})")
        if self.blocks_per_task < 1:
            raise UsageError(f"blocks_per_task: must be at least 1 (got {self.blocks_per_task})")


@dataclass
class WriteJob:
    """What every task shares: paths, the row type, block size. Small and picklable."""

    inputs: list[TableInfo]
    classes: list[str]
    dtype: np.dtype
    output: Path
    offsets: dict[str, int]
    chunk_rows: int
    carry_provenance: bool
    n_bands: int


@dataclass
class Task:
    """Whole blocks of one table: its rows' facts and their positions in the table."""

    table: str
    facts: RowFacts
    positions: np.ndarray
    stats: bool


def run_task(job: WriteJob, task: Task) -> tuple[list[dict], BandStats | None]:
    """Runs on a worker: gather, write and checksum the task's blocks; its statistics partial."""
    fill = RecordFiller(job.classes, job.dtype, job.carry_provenance)
    acc = BandStats(n_bands=job.n_bands) if task.stats else None
    blocks = []
    with contextlib.ExitStack() as stack:
        sources = open_row_readers(job.inputs, stack)
        writer = stack.enter_context(RowWriter(job.output, job.offsets, job.dtype))
        for first in range(0, len(task.facts), job.chunk_rows):
            part = slice(first, first + job.chunk_rows)
            block = fill(task.facts.take(part), sources)
            writer.write(task.table, task.positions[part], block)
            blocks.append(block_checksums(block))
            if acc is not None:
                acc.update(block.images)
    return blocks, acc


def write_tables(
    client: object,
    job: WriteJob,
    tables: Sequence[tuple[str, RowFacts, np.ndarray]],
    stats_table: str | None,
    options: ClusterOptions,
    progress: Callable[[str, int, int], None],
) -> tuple[BandStats, dict[str, TableChecksums]]:
    """Submit every task, then collect them in stored order (checksums and statistics in that order)."""
    inputs = [replace(i, path=Path(i.path).resolve()) for i in job.inputs]
    job = replace(job, inputs=inputs, output=Path(job.output).resolve())
    step = job.chunk_rows * options.blocks_per_task
    futures = []
    for name, facts, positions in tables:
        for first in range(0, len(facts), step):
            part = slice(first, first + step)
            task = Task(name, facts.take(part), positions[part], name == stats_table)
            futures.append((name, len(task.facts), client.submit(run_task, job, task, pure=False)))  # type: ignore[attr-defined]
    acc = BandStats(n_bands=job.n_bands)
    checksums = {name: TableChecksums(job.chunk_rows) for name, _, _ in tables}
    total, done = sum(n for _, n, _ in futures), 0
    try:
        results = results_in_order(client, [f for _, _, f in futures], options)
        for i, (blocks, partial) in enumerate(results):
            name, n, _ = futures[i]
            futures[i] = (name, n, None)  # release the result on the workers
            for block in blocks:
                checksums[name].add_block(block)
            if partial is not None:
                acc.merge(partial)
            done += n
            progress("write", done, total)
    finally:
        client.cancel([f for _, _, f in futures if f is not None])  # type: ignore[attr-defined]
    return acc, checksums


def stats_task(
    path: Path,
    table: str,
    start: int,
    stop: int,
    n_bands: int,
    chunk_rows: int,
    progress: Callable[[str, int, int], None] | None = None,
    checksums: dict | None = None,
) -> BandStats:
    """The statistics partial of rows [start, stop) of one table: a Dask task, or the whole local pass.

    With the table's stored `checksums` (`start` then a block boundary), rows
    are read in the stored blocks and each is checked before its statistics
    are added, in sub-chunks of `chunk_rows`.
    """
    acc = BandStats(n_bands=n_bands)
    checker = BlockChecker(path, table, checksums) if checksums is not None else None
    read_rows = checker.block_rows if checker is not None else chunk_rows
    with readers.open_h5(path) as f:
        ds = f[table]
        for first in range(start, stop, read_rows):
            rows = readers.read_rows(path, ds, first, min(first + read_rows, stop))
            if checker is not None:
                checker.check(first // read_rows, rows)
            for sub in range(0, len(rows), chunk_rows):
                acc.update(rows["image"][sub : sub + chunk_rows])
            if progress is not None:
                progress("stats", first + len(rows) - start, stop - start)
    return acc


def table_stats(
    client: object,
    path: Path,
    table: str,
    rows: int,
    n_bands: int,
    chunk_rows: int,
    options: ClusterOptions,
    progress: Callable[[str, int, int], None],
    checksums: dict | None = None,
) -> BandStats:
    """`stats` on Dask: a task per row range of whole stored blocks, partials merged on the client in stored order."""
    block_rows = checksums["block_rows"] if checksums is not None else chunk_rows
    path, step = Path(path).resolve(), block_rows * options.blocks_per_task
    futures = []
    for start in range(0, rows, step):
        stop = min(start + step, rows)
        args = (path, table, start, stop, n_bands, chunk_rows, None, checksums)
        futures.append((stop, client.submit(stats_task, *args, pure=False)))  # type: ignore[attr-defined]
    acc = BandStats(n_bands=n_bands)
    try:
        for i, partial in enumerate(results_in_order(client, [f for _, f in futures], options)):
            acc.merge(partial)
            stop, _ = futures[i]
            futures[i] = (stop, None)
            progress("stats", stop, rows)
    finally:
        client.cancel([f for _, f in futures if f is not None])  # type: ignore[attr-defined]
    return acc
