"""Where pass 2 runs: worker threads here, or Dask tasks (`dask_cluster.py`). The one place that decides.

`write_tables` writes every output table in stored order and returns the
statistics of one table and every table's checksums; `table_stats` is the
`stats` command's pass over one stored table. Each takes `cluster`, the
`Cluster` that `cluster()` yields: None runs here, a Dask client runs the
same work as tasks, and the result is the same for the same `chunk_rows`.

Locally, this process gathers each block's rows from the inputs and hands
the block to worker threads (`_Background`) that write and checksum it and
add training blocks to the statistics; pwrite and numpy release the GIL, so
they use the second core.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..formats import Sink
from ..formats.hdf5 import HDF5Sink
from ..formats.parquet import ParquetSink
from ..inputs.records import Block, RecordFiller, RowFacts, advise_reads, open_row_readers
from ..inputs.row_reader import RowReader
from ..inputs.scan import ProgressFn, Scan
from ..steps.checksums import TableChecksums
from ..steps.split import Layout
from ..steps.stats import BandStats
from . import dask_cluster, dask_parquet
from .dask_cluster import ClusterOptions

if TYPE_CHECKING:
    from typing_extensions import Self

Cluster = tuple[object, ClusterOptions]  # a Dask client and its options
TableRows = tuple[str, RowFacts, np.ndarray]  # a table's name, its rows' facts and their positions, in stored order

STATS_LANES = 2  # statistics are the slowest step: blocks alternate between two accumulators
RING_BLOCKS = 2 + STATS_LANES  # blocks in flight: one filling, one writing, one per statistics lane


@contextlib.contextmanager
def cluster(options: ClusterOptions | None) -> Iterator[Cluster | None]:
    """None for the local path; else a Dask client (and its options) for the write pass."""
    if options is None or options.is_local:
        yield None
        return
    with dask_cluster.connect(options) as client:
        yield client, options


def tables_in_order(scan: Scan, layout: Layout) -> list[TableRows]:
    """Each table's rows in stored order: their facts and their positions."""
    facts = RowFacts(scan.codes, scan.file_index, scan.row)
    tables = []
    for t, name in enumerate(layout.tables):
        members = np.flatnonzero(layout.table_of_row == t)
        in_order = members[np.argsort(layout.position[members])]
        tables.append((name, facts.take(in_order), layout.position[in_order]))
    return tables


def write_tables(
    scan: Scan,
    tables: list[TableRows],
    sink: Sink,
    dtype: np.dtype,
    chunk_rows: int,
    progress: ProgressFn,
    carry_provenance: bool = False,
    stats_table: str | None = None,
    cluster: Cluster | None = None,
) -> tuple[BandStats | None, dict[str, dict]]:
    """Write every table (`tables_in_order`) in stored order, gathering its rows from the inputs.

    Only `scan`'s files, classes and image shape are used. Returns the statistics of `stats_table` (None without one) and every
    table's checksums, both accumulated in stored order, so they do not
    depend on the order of the inputs.
    """
    if cluster is not None:
        acc, checksums = _write_on_dask(
            cluster, scan, tables, sink, dtype, chunk_rows, progress, carry_provenance, stats_table
        )
    else:
        fill = RecordFiller(scan.classes, dtype, carry_provenance)
        acc, checksums = _write_here(scan, fill, tables, sink, chunk_rows, progress, stats_table)
    return (acc if stats_table else None), {name: c.to_dict() for name, c in checksums.items()}


def _write_on_dask(
    cluster: Cluster,
    scan: Scan,
    tables: list[TableRows],
    sink: Sink,
    dtype: np.dtype,
    chunk_rows: int,
    progress: ProgressFn,
    carry_provenance: bool,
    stats_table: str | None,
) -> tuple[BandStats, dict[str, TableChecksums]]:
    """Tasks write HDF5 rows at their offsets in the one output file, or whole Parquet shards."""
    client, options = cluster
    infos, n_bands = [f.info for f in scan.files], scan.image_shape[-1]
    if isinstance(sink, ParquetSink):
        shard_job = dask_parquet.ShardJob(
            infos, scan.classes, dtype, sink.schema, chunk_rows, carry_provenance, n_bands
        )
        return dask_parquet.write_shards(client, shard_job, tables, sink, stats_table, options, progress)
    assert isinstance(sink, HDF5Sink), "a format with distributed_writes has its Dask path here"
    job = dask_cluster.WriteJob(
        infos, scan.classes, dtype, sink.path, sink.offsets, chunk_rows, carry_provenance, n_bands
    )
    return dask_cluster.write_tables(client, job, tables, stats_table, options, progress)


def _write_here(
    scan: Scan,
    fill: RecordFiller,
    tables: list[TableRows],
    sink: Sink,
    chunk_rows: int,
    progress: ProgressFn,
    stats_table: str | None,
) -> tuple[BandStats, dict[str, TableChecksums]]:
    """The local write pass: this process reads; worker threads write, checksum and add statistics."""
    lanes = [BandStats(n_bands=scan.image_shape[-1]) for _ in range(STATS_LANES)]
    stats_blocks = 0
    checksums = {name: TableChecksums(chunk_rows) for name, _, _ in tables}
    total, done = sum(len(facts) for _, facts, _ in tables), 0

    def store(name: str, positions: np.ndarray, block: Block) -> None:
        sink.write(name, positions, block)
        checksums[name].add(block)

    with contextlib.ExitStack() as stack:
        write = stack.enter_context(_Background(store))
        add_stats = [stack.enter_context(_Background(lane.update)) for lane in lanes]
        sources = open_row_readers([f.info for f in scan.files], stack)
        ring = _BlockRing(RING_BLOCKS, chunk_rows, fill.dtype)
        blocks = interleaved_blocks([len(facts) for _, facts, _ in tables], chunk_rows)
        for i, (t, first) in enumerate(blocks):
            name, facts, positions = tables[t]
            block = slice(first, first + chunk_rows)
            if i + 1 < len(blocks):
                _advise_block(tables, blocks[i + 1], chunk_rows, sources)
            slot, buffer = ring.take()
            rows = fill(facts.take(block), sources, buffer)
            ring.used_by(slot, write(name, positions[block], rows))
            if name == stats_table:
                ring.used_by(slot, add_stats[stats_blocks % STATS_LANES](rows.images))
                stats_blocks += 1
            done += len(rows)
            progress("write", done, total)
    for lane in lanes[1:]:
        lanes[0].merge(lane)
    return lanes[0], checksums


def _advise_block(tables: list[TableRows], block: tuple[int, int], chunk_rows: int, sources: list[RowReader]) -> None:
    t, first = block
    advise_reads(tables[t][1].take(slice(first, first + chunk_rows)), sources)


def interleaved_blocks(table_rows: Sequence[int], chunk_rows: int) -> list[tuple[int, int]]:
    """(table, first row) of every block, the tables interleaved in proportion to their size.

    Each table's blocks stay in stored order. Only training blocks carry
    statistics: spread over the whole pass, they keep both cores busy to the end.
    """
    blocks = [
        ((first + chunk_rows / 2) / rows, t, first)
        for t, rows in enumerate(table_rows)
        for first in range(0, rows, chunk_rows)
    ]
    return [(t, first) for _, t, first in sorted(blocks)]


def table_stats(
    path: Path,
    table: str,
    rows: int,
    n_bands: int,
    chunk_rows: int,
    progress: ProgressFn,
    cluster: Cluster | None = None,
    checksums: dict | None = None,
) -> BandStats:
    """Per-band statistics of one stored table: one streaming pass in stored order, or Dask tasks merged in that order.

    With the table's stored `checksums`, every block is checked as it is read.
    """
    if cluster is None:
        return dask_cluster.stats_task(path, table, 0, rows, n_bands, chunk_rows, progress, checksums)
    client, options = cluster
    return dask_cluster.table_stats(client, path, table, rows, n_bands, chunk_rows, options, progress, checksums)


class _BlockRing:
    """A few blocks reused in turn: a block is filled again only once the work handed its rows is done.

    A fresh block each time would fault in new pages (10.6 MB a block) and let
    memory follow how far the writer and the statistics lag; the ring bounds both.
    """

    def __init__(self, count: int, rows: int, dtype: np.dtype) -> None:
        self._blocks = [Block.empty(rows, dtype) for _ in range(count)]
        self._users: list[list[Future]] = [[] for _ in range(count)]
        self._next = 0

    def take(self) -> tuple[int, Block]:
        slot, self._next = self._next, (self._next + 1) % len(self._blocks)
        for future in self._users[slot]:
            future.result()
        self._users[slot] = []
        return slot, self._blocks[slot]

    def used_by(self, slot: int, future: Future) -> None:
        self._users[slot].append(future)


class _Background:
    """Calls `fn` in a worker thread, in submission order, at most `depth` calls behind.

    Writing and statistics each cost about as much as gathering the rows;
    pwrite and numpy release the GIL, so they overlap on the second core.
    """

    def __init__(self, fn: Callable[..., None], depth: int = 2) -> None:
        self._fn = fn
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending: deque[Future] = deque()
        self._depth = depth

    def __call__(self, *args: object) -> Future:
        future = self._pool.submit(self._fn, *args)
        self._pending.append(future)
        while len(self._pending) > self._depth:
            self._pending.popleft().result()
        return future

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        try:
            while self._pending and exc_type is None:
                self._pending.popleft().result()
        finally:
            for future in self._pending:
                future.cancel()
            self._pool.shutdown(wait=True)
