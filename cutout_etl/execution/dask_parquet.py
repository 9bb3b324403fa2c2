"""Parquet output on a Dask cluster: one task per shard, each writing its whole shard.

A task gets the facts of the blocks that overlap its shard (blocks of
`chunk_rows` rows from the start of the table, as everywhere), builds each
block as the local path does, and writes the block's rows that fall in its
shard as one row group: the row groups the local sink writes. It writes
under a temporary name in the output's temporary directory
(`parquet_shards.temp_shard_path`) and returns that name, the checksums of
the blocks that start in its shard (whole blocks: a block that runs over
the shard's end is built by both tasks and counted by the first) and their
statistics partial. The client combines them in stored order, as for HDF5;
the sink's `finish` seals every shard with the final metadata.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..formats.parquet import ParquetSink, records_to_table
from ..formats.parquet_shards import ShardWriter, temp_shard_path
from ..inputs.readers import TableInfo
from ..inputs.records import RecordFiller, RowFacts, open_row_readers
from ..steps.checksums import TableChecksums, block_checksums
from ..steps.stats import BandStats
from .dask_cluster import ClusterOptions
from .dask_connect import results_in_order


@dataclass
class ShardJob:
    """What every shard task shares. Small and picklable (the Arrow schema pickles by value)."""

    inputs: list[TableInfo]
    classes: list[str]
    dtype: np.dtype
    schema: object  # pyarrow.Schema
    chunk_rows: int
    carry_provenance: bool
    n_bands: int


@dataclass
class ShardTask:
    """One shard: table rows [start, stop), and the facts of the blocks that overlap them, from row `first`."""

    final: Path
    start: int
    stop: int
    first: int  # the first row of the first overlapping block (a multiple of chunk_rows)
    facts: RowFacts
    stats: bool


def run_shard_task(job: ShardJob, task: ShardTask) -> tuple[Path, list[dict], BandStats | None]:
    """Runs on a worker: write one whole shard under a temporary name; checksums and statistics of its blocks."""
    fill = RecordFiller(job.classes, job.dtype, job.carry_provenance)
    acc = BandStats(n_bands=job.n_bands) if task.stats else None
    blocks = []
    temp = temp_shard_path(task.final)
    with contextlib.ExitStack() as stack:
        sources = open_row_readers(job.inputs, stack)
        writer = ShardWriter(temp, job.schema)
        stack.callback(writer.close)
        for block_start in range(task.first, task.stop, job.chunk_rows):
            offset = block_start - task.first
            block = fill(task.facts.take(slice(offset, offset + job.chunk_rows)), sources)
            lo, hi = max(task.start, block_start), min(task.stop, block_start + len(block))
            table = records_to_table(block, job.schema)
            writer.write_table(table.slice(lo - block_start, hi - lo), row_group_size=hi - lo)
            if block_start >= task.start:
                blocks.append(block_checksums(block))
                if acc is not None:
                    acc.update(block.images)
    return temp, blocks, acc


def shard_tasks(
    name: str, facts: RowFacts, shards: Sequence[Path], rows_per_shard: int, chunk_rows: int, stats: bool
) -> list[ShardTask]:
    """One task per shard of a table, in stored order."""
    tasks = []
    for index, final in enumerate(shards):
        start, stop = index * rows_per_shard, min((index + 1) * rows_per_shard, len(facts))
        first = start - start % chunk_rows
        end = min(len(facts), stop + (-stop) % chunk_rows)  # the end of the last overlapping block
        tasks.append(ShardTask(final, start, stop, first, facts.take(slice(first, end)), stats))
    return tasks


def write_shards(
    client: object,
    job: ShardJob,
    tables: Sequence[tuple[str, RowFacts, np.ndarray]],
    sink: ParquetSink,
    stats_table: str | None,
    options: ClusterOptions,
    progress: Callable[[str, int, int], None],
) -> tuple[BandStats, dict[str, TableChecksums]]:
    """Submit a task per shard of every non-empty table, collect in stored order; the sink seals the shards."""
    job = replace(job, inputs=[replace(i, path=Path(i.path).resolve()) for i in job.inputs])
    futures = []
    for name, facts, _ in tables:
        if len(facts) == 0:
            continue  # the sink wrote its one empty shard
        shards = [Path(s).resolve() for s in sink.shards[name]]
        for task in shard_tasks(name, facts, shards, sink.rows_per_shard, job.chunk_rows, name == stats_table):
            futures.append((name, task, client.submit(run_shard_task, job, task, pure=False)))  # type: ignore[attr-defined]
    acc = BandStats(n_bands=job.n_bands)
    checksums = {name: TableChecksums(job.chunk_rows) for name, _, _ in tables}
    total, done = sum(len(facts) for _, facts, _ in tables), 0
    try:
        for i, (temp, blocks, partial) in enumerate(results_in_order(client, [f for _, _, f in futures], options)):
            name, task, _ = futures[i]
            futures[i] = (name, task, None)
            sink.from_workers.append((temp, task.final))
            for block in blocks:
                checksums[name].add_block(block)
            if partial is not None:
                acc.merge(partial)
            done += task.stop - task.start
            progress("write", done, total)
    finally:
        client.cancel([f for _, _, f in futures if f is not None])  # type: ignore[attr-defined]
    return acc, checksums
