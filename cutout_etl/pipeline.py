"""The commands: merge, split, stats, build and convert, each a short chain of steps.

Data flows one way, and every command is two streaming passes over row chunks:
1. `scan` (pass 1): ID, label, position and pixel finiteness of every row;
   then, in memory and on those facts only, `merge.plan_rows` (drops and
   duplicates) and `split.split_layout` (where each kept row goes);
2. `execution.write_tables` (pass 2): each output table in stored order,
   block by block, gathering the block's rows from the inputs, here in worker
   threads or as Dask tasks; then `metadata` records the statistics and the
   provenance and seals the output with checksums and the content digest.
Only per-row bookkeeping (ID, class, file, row, position, split: ~80 bytes a
row) grows with the number of rows; images never exceed a few blocks in memory.

The options of the steps are here (the CLI derives its defaults from them);
choices with fixed values are str Enums defined next to their step and
re-exported here: `OnConflict` (merge), `GroupBy` and `SplitMethod` (split).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import formats
from .dataset import open_dataset, row_dtype
from .errors import DatasetError, InvalidRowError, UsageError
from .execution import local as execution
from .execution.dask_cluster import ClusterOptions
from .execution.heap import return_freed_memory
from .formats import OutputFormat, Sink
from .formats.atomic import atomic_output
from .inputs import readers
from .inputs.records import Block, image_hashes
from .inputs.scan import FileHasher, ProgressFn, ReadOptions, Scan, no_progress, scan_inputs
from .schema import DEFAULT_CLASSES, DEFAULT_ROWS_PER_SHARD, MERGED_TABLE, output_dtype
from .steps.checksums import BlockChecker, TableChecksums, stored_checksums
from .steps.merge import DROP_REASONS, OnConflict, Plan, parse_classes, plan_rows
from .steps.metadata import describe, record_provenance, seal, stats_entry, store_stats
from .steps.split import GroupBy, Layout, merged_layout, parse_fractions, split_layout
from .steps.split_methods import SplitMethod, check_faint_fraction

__all__ = [
    "DROP_REASONS",
    "GroupBy",
    "Layout",
    "MergeOptions",
    "OnConflict",
    "OutputOptions",
    "Plan",
    "SplitMethod",
    "SplitOptions",
    "build",
    "convert",
    "merge",
    "open_sink",
    "plan_rows",
    "split",
    "stats",
]


@dataclass
class MergeOptions:
    """How labels, unknown classes and duplicate IDs are handled."""

    classes: Sequence[str] | None = None
    drop_unknown: bool = False
    on_conflict: OnConflict | str = OnConflict.ERROR
    match_radius: float = 1.0  # arcsec: closer objects are one object; 0 turns matching off
    drop_invalid: bool = False  # drop (and count) rows with an empty ID or an invalid position instead of failing
    keep_duplicate_images: bool = False  # keep identical images under different IDs (they then share a split)


@dataclass
class SplitOptions:
    """Fractions, seed, and what must stay together in one split."""

    fractions: Sequence[float] = (0.7, 0.15, 0.15)
    seed: int = 0
    group_radius: float | None = None  # arcsec; None: the cutout's half-diagonal; 0: no groups
    pixel_scale: float = 0.2  # arcsec per pixel, for the default group radius
    group_by: GroupBy | str = GroupBy.NONE  # GroupBy.SKY: whole sky cells go to one split
    cell_deg: float = 1.0
    tolerance: float = 0.02  # allowed |achieved - target| class fraction per split, reported
    method: SplitMethod | str = SplitMethod.EXACT  # STABLE: a row's split depends on (seed, ID) only
    faint_test: float = 0.0  # this fraction of each class, faintest first, goes to table test_faint


@dataclass
class OutputOptions:
    """Where and how the output is written."""

    format: str | None = None  # "hdf5", "parquet", or None: from the path
    overwrite: bool = False
    fsync: bool = False
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD


def _check_merge(options: MergeOptions) -> list[str]:
    """Usage errors about the merge options, before any work; the class list in code order."""
    OnConflict.parse(options.on_conflict, "--on-conflict")
    return parse_classes(options.classes, DEFAULT_CLASSES)


def _check_split(options: SplitOptions) -> None:
    """Usage errors about the split options, before any work."""
    parse_fractions(options.fractions)
    GroupBy.parse(options.group_by, "--group-by")
    SplitMethod.parse(options.method, "--split-method")
    if check_faint_fraction(options.faint_test) and GroupBy(options.group_by) == GroupBy.SKY:
        raise UsageError("--faint-test: not with --group-by sky (each faint object would pull its whole sky cell)")


def _plan(
    paths: Sequence[Path], classes: list[str], read: ReadOptions, options: MergeOptions, progress: ProgressFn
) -> Plan:
    """Pass 1 and the merge step: which rows of the inputs are kept."""
    scan = scan_inputs(paths, classes, read, options.drop_unknown, progress)
    return plan_rows(scan, options, image_hashes)


def merge(
    paths: Sequence[Path],
    out: str | Path,
    read: ReadOptions | None = None,
    merge_options: MergeOptions | None = None,
    output: OutputOptions | None = None,
    progress: ProgressFn = no_progress,
    cluster: ClusterOptions | None = None,
) -> dict:
    """`cutout-etl merge`: one table of all kept rows, sorted by class then ID."""
    read, merge_options = read or ReadOptions(), merge_options or MergeOptions()
    output = output or OutputOptions()
    classes = _check_merge(merge_options)
    _check_cluster(cluster, out, output)
    paths = [Path(p) for p in paths]
    with _job(paths, out, output) as job, execution.cluster(cluster) as client:
        plan = _plan(paths, classes, read, merge_options, progress)
        layout = merged_layout(plan)
        metadata = describe("merged", plan, layout, [])
        return _write_dataset(job, plan, layout, metadata, read, output, progress, client)


def build(
    paths: Sequence[Path],
    out: str | Path,
    read: ReadOptions | None = None,
    merge_options: MergeOptions | None = None,
    split_options: SplitOptions | None = None,
    output: OutputOptions | None = None,
    progress: ProgressFn = no_progress,
    cluster: ClusterOptions | None = None,
) -> dict:
    """`cutout-etl build`: merge, split and statistics of the train split in one run.

    `cluster` runs the write pass on Dask (`execution/dask_cluster.py`); the output is the same.
    """
    read, merge_options = read or ReadOptions(), merge_options or MergeOptions()
    split_options, output = split_options or SplitOptions(), output or OutputOptions()
    classes = _check_merge(merge_options)
    _check_split(split_options)
    _check_cluster(cluster, out, output)
    paths = [Path(p) for p in paths]
    with _job(paths, out, output) as job, execution.cluster(cluster) as client:
        plan = _plan(paths, classes, read, merge_options, progress)
        layout, split_metadata = split_layout(plan, split_options)
        metadata = describe("dataset", plan, layout, [], split=split_metadata)
        return _write_dataset(job, plan, layout, metadata, read, output, progress, client, stats_table="train")


def split(
    path: Path,
    out: str | Path,
    split_options: SplitOptions | None = None,
    output: OutputOptions | None = None,
    chunk_rows: int = readers.DEFAULT_CHUNK_ROWS,
    progress: ProgressFn = no_progress,
    cluster: ClusterOptions | None = None,
) -> dict:
    """`cutout-etl split`: split a merged HDF5 file; provenance points at the original inputs."""
    split_options, output = split_options or SplitOptions(), output or OutputOptions()
    _check_split(split_options)
    _check_cluster(cluster, out, output)
    parent_meta = _merged_parent(path)
    read = ReadOptions(table_path=MERGED_TABLE, chunk_rows=chunk_rows)
    classes = parent_meta["classes"]
    checker = BlockChecker(path, MERGED_TABLE, stored_checksums(path, parent_meta, MERGED_TABLE))
    # Pass 1 reads the parent in its stored blocks and checks each one.
    scan_read = ReadOptions(table_path=MERGED_TABLE, chunk_rows=checker.block_rows)
    with _job([Path(path)], out, output) as job, execution.cluster(cluster) as client:
        # merge already resolved duplicates (or kept identical images on request: they stay)
        merged = MergeOptions(classes=classes, match_radius=0.0, keep_duplicate_images=True)
        scan = scan_inputs([Path(path)], classes, scan_read, False, progress, checker.check_chunk)
        plan = plan_rows(scan, merged, image_hashes)
        layout, split_metadata = split_layout(plan, split_options)
        metadata = describe("dataset", plan, layout, parent_meta["inputs"], parent_meta["report"], split_metadata)
        return _write_dataset(
            job, plan, layout, metadata, read, output, progress, client, "train", carry_provenance=True
        )


def _merged_parent(path: Path) -> dict:
    """The metadata of the HDF5 output of merge at `path`; DatasetError for anything else."""
    with open_dataset(path) as parent:
        parent_meta = parent.metadata
        parent_format, readable = parent.format, parent.engine.rows_as_input
    if parent_meta.get("kind") != "merged" or not readable:
        raise DatasetError(
            f"{path}: is a cutout-etl {parent_meta.get('kind')} ({parent_format}), expected the HDF5 output of merge"
        )
    return parent_meta


def stats(
    path: Path,
    split: str = "train",
    chunk_rows: int = readers.DEFAULT_CHUNK_ROWS,
    progress: ProgressFn = no_progress,
    cluster: ClusterOptions | None = None,
    fsync: bool = False,
) -> dict:
    """`cutout-etl stats`: compute a split's statistics and store them in the dataset.

    The train split's go to `stats` (what models use); any other split's to
    `split_stats[split]`, so they never replace the training statistics. The
    file is updated copy-on-write (the format's `replace_metadata`; a format that cannot refuses first).
    """
    if cluster is not None:
        cluster.check()
    path = Path(path)
    with open_dataset(path) as ds:
        metadata = ds.metadata
        if split not in ds.splits:
            raise DatasetError(f"{path}: no split '{split}' (splits: {', '.join(ds.splits)})")
        engine = ds.engine
        engine.check_can_update(path)
        table = ds[split].hdf5_table()
        assert table is not None, "only HDF5 updates its metadata (check_can_update)"
        read = readers.FileIdentity.of_h5(table.file)  # replaced only if the path still names this file at the end
        rows = len(ds[split])
        checksums = stored_checksums(path, metadata, split)
    bands = metadata["bands"]
    with execution.cluster(cluster) as client:
        acc = execution.table_stats(path, split, rows, len(bands), chunk_rows, progress, client, checksums)
    store_stats(metadata, stats_entry(split, acc, bands))
    engine.replace_metadata(path, metadata, read, fsync)
    return metadata


def _write_dataset(
    job: tuple[Path, FileHasher, OutputFormat],
    plan: Plan,
    layout: Layout,
    metadata: dict,
    read: ReadOptions,
    output: OutputOptions,
    progress: ProgressFn,
    client: execution.Cluster | None,
    stats_table: str | None = None,
    carry_provenance: bool = False,
) -> dict:
    """Pass 2 and the end of every command: write the tables, wait for the input hashes, seal."""
    tmp, hasher, fmt = job
    scan = plan.scan
    if fmt.text_ids:
        _refuse_non_utf8_ids(plan)
    dtype, rows = _row_dtype(scan), layout.rows()
    _release_rows(plan, layout, keep=PASS_2_FACTS)  # before `tables` copy the facts pass 2 reads
    tables = execution.tables_in_order(scan, layout)
    _release_rows(plan, layout)  # pass 2 needs only `tables`: the rest of pass 1's per-row facts go before it
    return_freed_memory()
    with contextlib.closing(open_sink(tmp, fmt, rows, dtype, scan.classes, output)) as sink:
        acc, checksums = execution.write_tables(
            scan, tables, sink, dtype, read.chunk_rows, progress, carry_provenance, stats_table, client
        )
        if acc is not None and stats_table is not None:
            store_stats(metadata, stats_entry(stats_table, acc, metadata["bands"]))
        hasher.finish(scan.files, progress)
        for entry in scan.files:  # last look before sealing: nothing written if an input changed during the run
            entry.info.check_unchanged()
        record_provenance(metadata, scan.files, carry_provenance)
        sink.finish(seal(metadata, checksums))
    return metadata


PASS_2_FACTS = ("codes", "file_index", "row", "table_of_row", "position")  # what `tables_in_order` reads


def _release_rows(plan: Plan, layout: Layout, keep: Sequence[str] = ()) -> None:
    """Free the plan's per-row arrays but those named in `keep` (in place: the callers' references go empty too).

    Its files stay.
    """
    for holder in (plan.scan, plan, layout):
        for name, value in vars(holder).items():
            if isinstance(value, np.ndarray) and name not in keep:
                setattr(holder, name, np.zeros(0, dtype=value.dtype))
    plan.dropped = {reason: np.zeros(0, dtype=np.int64) for reason in plan.dropped}


def _refuse_non_utf8_ids(plan: Plan) -> None:
    """Parquet stores IDs as strings: name the first kept row whose ID is not UTF-8, before writing anything."""
    from .formats.parquet import first_non_utf8, not_utf8_message

    kept = np.flatnonzero(plan.keep)
    bad = first_non_utf8(plan.scan.ids[kept])
    if bad is not None:
        row = kept[bad]
        source = plan.scan.files[plan.scan.file_index[row]].info.path
        raise InvalidRowError(f"{source}: row {plan.scan.row[row]}: {not_utf8_message(plan.scan.ids[row])}")


def _row_dtype(scan: Scan) -> np.dtype:
    return output_dtype(scan.id_len, max(len(c) for c in scan.classes), scan.image_shape)


@contextlib.contextmanager
def _job(paths: Sequence[Path], out: str | Path, output: OutputOptions, hash_inputs: bool = True):
    """An atomic output that is none of the inputs and holds none, and the background hashing of the inputs.

    The output format comes from the one place that decides it: `formats.choose(out, --format)`.
    """
    if not str(out).strip():
        raise UsageError("--output: empty path; name the output file or directory")
    fmt = formats.choose(out, output.format)
    target = Path(out).resolve()
    if any(Path(p).resolve() == target for p in paths):
        raise UsageError(f"{out}: is also an input; write the output elsewhere")
    hashed = paths if hash_inputs else []
    atomic = atomic_output(Path(out), output.overwrite, output.fsync, fmt.directory, protected=paths)
    with atomic as tmp, FileHasher(hashed) as hasher:
        yield tmp, hasher, fmt


def _check_cluster(options: ClusterOptions | None, out: str | Path, output: OutputOptions) -> None:
    """Usage errors about --scheduler, before any work."""
    if options is None:
        return
    options.check()
    fmt = formats.choose(out, output.format)
    if not options.is_local and not fmt.distributed_writes:
        raise UsageError(
            f"{out}: --scheduler {options.scheduler}: {fmt.title} output is written by the local path only; write HDF5, then `cutout-etl convert`"
        )


def open_sink(
    tmp: Path, fmt: OutputFormat, rows: dict[str, int], dtype: np.dtype, classes: Sequence[str], output: OutputOptions
) -> Sink:
    return fmt.open_sink(tmp, rows, dtype, classes, output.rows_per_shard)


def _refuse_non_utf8_block(path: Path, table: str, start: int, block: Block) -> None:
    from .formats.parquet import first_non_utf8, not_utf8_message

    ids = block.columns["ID"]
    bad = first_non_utf8(ids)
    if bad is not None:
        raise InvalidRowError(f"{path}: table {table} row {start + bad}: {not_utf8_message(ids[bad])}")


def convert(
    path: Path,
    out: str | Path,
    output: OutputOptions | None = None,
    progress: ProgressFn = no_progress,
) -> dict:
    """`cutout-etl convert`: HDF5 <-> Parquet, block by block, checked bit-exact by the content digest."""
    output = output or OutputOptions()
    with open_dataset(path) as ds, _job([Path(path)], out, output, hash_inputs=False) as (tmp, _, fmt):
        metadata = dict(ds.metadata)
        checkers = {name: BlockChecker(path, name, stored_checksums(path, metadata, name)) for name in ds.splits}
        rows = {name: len(ds[name]) for name in ds.splits}
        checksums = {name: TableChecksums(checkers[name].block_rows) for name in ds.splits}
        with contextlib.closing(open_sink(tmp, fmt, rows, row_dtype(metadata), ds.classes, output)) as sink:
            total, done = sum(rows.values()), 0
            for name in ds.splits:
                block_rows = checkers[name].block_rows
                for start in range(0, rows[name], block_rows):
                    records = ds[name].read(start, start + block_rows)
                    found = checkers[name].check(start // block_rows, records)
                    block = Block.from_records(records)
                    if fmt.text_ids:
                        _refuse_non_utf8_block(path, name, start, block)
                    sink.write(name, np.arange(start, start + len(block)), block)
                    checksums[name].add_block(found)
                    done += len(block)
                    progress("convert", done, total)
            digest = metadata.get("digest")
            seal(metadata, {name: c.to_dict() for name, c in checksums.items()})
            if digest is not None and metadata["digest"] != digest:
                raise DatasetError(
                    f"{path}: converted content differs from the source (digest {metadata['digest']} != {digest})"
                )
            sink.finish(metadata)
    return metadata
