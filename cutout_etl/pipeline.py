"""The steps chained: merge, split, stats, build and convert.

Every command is two streaming passes over row chunks:
1. scan: ID, label, position and pixel finiteness of every row (`scan.py`);
   then, in memory and on those facts only, drops, duplicates and the split;
2. write: each output table in stored order, block by block, gathering the
   block's rows from the inputs; worker threads write the block (`Sink`),
   checksum it and feed the training blocks to the statistics.
Only per-row bookkeeping (ID, class, file, row, position, split: ~80 bytes a
row) grows with the number of rows; images never exceed a few blocks in memory.
With a Dask scheduler (`ClusterOptions`), pass 1 stays here and pass 2 runs
as Dask tasks of whole blocks (`distributed.py`); the output is the same.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xxhash

from . import __version__, distributed, formats, readers, sky, validate
from .checksums import ALGORITHM, BlockChecker, TableChecksums, dataset_digest, stored_checksums
from .dataset import open_dataset, row_dtype
from .distributed import ClusterOptions
from .errors import DatasetError, EmptyTableError, InvalidRowError, MissingClassError, UsageError
from .merge import UNKNOWN, DuplicateReport, parse_classes, resolve_duplicates
from .records import Block, RecordFiller, RowFacts, open_row_readers
from .scan import FileHasher, ProgressFn, ReadOptions, Scan, no_progress, scan_inputs
from .schema import (
    DEFAULT_CLASSES,
    DEFAULT_ROWS_PER_SHARD,
    FORMAT_NAME,
    FORMAT_VERSION,
    MERGED_TABLE,
    PIXEL_UNIT,
    SPLIT_NAMES,
    band_names,
    output_dtype,
)
from .split import assign_splits, parse_fractions
from .stats import BandStats
from .formats import OutputFormat, Sink
from .formats.hdf5 import HDF5Sink
from .writers import atomic_output

DROP_REASONS = (
    "unknown_label",
    "empty_id",
    "invalid_position",
    "no_finite_pixel",
    "duplicate_id",
    "conflicting_labels",
    "duplicate_position",
    "conflicting_position",
)


@dataclass
class MergeOptions:
    """How labels, unknown classes and duplicate IDs are handled."""

    classes: Sequence[str] | None = None
    drop_unknown: bool = False
    on_conflict: str = "error"  # or "drop"
    match_radius: float = 1.0  # arcsec: closer objects are one object; 0 turns matching off
    drop_invalid: bool = False  # drop (and count) rows with an empty ID or an invalid position instead of failing


@dataclass
class SplitOptions:
    """Fractions, seed, and what must stay together in one split."""

    fractions: Sequence[float] = (0.7, 0.15, 0.15)
    seed: int = 0
    group_radius: float | None = None  # arcsec; None: the cutout's half-diagonal; 0: no groups
    pixel_scale: float = 0.2  # arcsec per pixel, for the default group radius
    group_by: str = "none"  # or "sky": whole sky cells go to one split
    cell_deg: float = 1.0
    tolerance: float = 0.02  # allowed |achieved - target| class fraction per split, reported


@dataclass
class Plan:
    """Which rows are kept, and why the others are not."""

    scan: Scan
    keep: np.ndarray
    dropped: dict[str, np.ndarray]  # reason -> bool mask of rows
    duplicates: DuplicateReport = field(default_factory=DuplicateReport)
    positions: DuplicateReport = field(default_factory=DuplicateReport)
    match_radius: float = 0.0

    def report(self) -> dict:
        files = self.scan.files
        cast = [i for i, f in enumerate(files) if f.info.image_dtype != np.float32]
        per_file = []
        for index, entry in enumerate(files):
            in_file = self.scan.file_index == index
            per_file.append(
                {
                    **entry.describe(),
                    "labels": dict(sorted(entry.label_counts.items())),
                    "rows_kept": int(np.count_nonzero(self.keep & in_file)),
                    "dropped": {r: int(np.count_nonzero(m & in_file)) for r, m in self.dropped.items()},
                    "rows_partly_nonfinite_kept": int(np.count_nonzero(self.keep & in_file & self.scan.partly_nonfinite)),
                    "image_cast_to_float32": entry.info.image_dtype != np.float32,
                    "notes": list(entry.info.notes),
                }
            )
        return {
            "rows_read": len(self.keep),
            "rows_kept": int(self.keep.sum()),
            "dropped": {r: int(m.sum()) for r, m in self.dropped.items()},
            "duplicate_ids": vars(self.duplicates),
            "duplicate_positions": {"match_radius_arcsec": self.match_radius, **vars(self.positions)},
            "rows_partly_nonfinite": int(np.count_nonzero(self.keep & self.scan.partly_nonfinite)),
            "rows_cast_to_float32": int(np.count_nonzero(self.keep & np.isin(self.scan.file_index, cast))),
            "files": per_file,
        }


def plan_rows(scan: Scan, options: MergeOptions) -> Plan:
    """Drop unusable rows, then resolve duplicate IDs among the rest.

    A row is counted under the first reason that applies, in DROP_REASONS
    order. Rows with an empty ID or an invalid position are refused (or
    dropped with `drop_invalid`) before any matching: an empty ID is no
    object's name and an impossible position is no place on the sky.
    """
    dropped = {reason: np.zeros(len(scan.ids), dtype=bool) for reason in DROP_REASONS}
    dropped["unknown_label"] = scan.codes == UNKNOWN
    dropped["empty_id"] = _empty_ids(scan.ids) & ~dropped["unknown_label"]
    invalid = validate.invalid_positions(scan.ra, scan.dec)
    dropped["invalid_position"] = invalid & ~(dropped["unknown_label"] | dropped["empty_id"])
    if not options.drop_invalid:
        _refuse_invalid_rows(scan, dropped)
    keep = ~(dropped["unknown_label"] | dropped["empty_id"] | dropped["invalid_position"])
    dropped["no_finite_pixel"] = scan.no_finite & keep
    keep &= ~dropped["no_finite_pixel"]
    candidates = np.flatnonzero(keep)
    extra, conflicting, duplicates = resolve_duplicates(
        scan.ids[candidates],
        scan.codes[candidates],
        _copy_order(scan, candidates),
        scan.classes,
        options.on_conflict,
        lambda i: scan.describe_row(candidates[i]),
    )
    dropped["duplicate_id"][candidates[extra]] = True
    dropped["conflicting_labels"][candidates[conflicting]] = True
    keep[candidates[extra | conflicting]] = False
    positions = _resolve_positions(scan, keep, dropped, options)
    if not keep.any():
        reasons = ", ".join(f"{r.replace('_', ' ')} {int(m.sum())}" for r, m in dropped.items() if m.any())
        raise EmptyTableError(f"nothing to write: all {len(keep)} rows were dropped ({reasons})")
    _refuse_missing_classes(scan, keep)
    return Plan(scan, keep, dropped, duplicates, positions, options.match_radius)


def _refuse_missing_classes(scan: Scan, keep: np.ndarray) -> None:
    """A class of the class list with no kept rows: a class file left out, or a wrong --classes."""
    counts = np.bincount(scan.codes[keep], minlength=len(scan.classes))
    missing = [c for c, n in zip(scan.classes, counts) if n == 0]
    if not missing:
        return
    present = [(c, int(n)) for c, n in zip(scan.classes, counts) if n]
    kept = ", ".join(f"{c} {n}" for c, n in present)
    raise MissingClassError(
        f"no rows of class{'es' if len(missing) > 1 else ''} {', '.join(missing)} (kept: {kept}); "
        f"name the classes present with --classes {','.join(c for c, _ in present)}"
    )


def _empty_ids(ids: np.ndarray, step: int = 1 << 20) -> np.ndarray:
    """`validate.empty_ids` in slices: its stripped copy of the IDs stays small."""
    flags = np.zeros(len(ids), dtype=bool)
    for first in range(0, len(ids), step):
        flags[first : first + step] = validate.empty_ids(ids[first : first + step])
    return flags


INVALID_ROWS = {
    "empty_id": "with an empty ID",
    "invalid_position": "with an invalid sky position (RA/Dec NaN, infinite or out of range)",
}


def _refuse_invalid_rows(scan: Scan, dropped: dict[str, np.ndarray]) -> None:
    """InvalidRowError naming the first file (by name) with such rows, their count and the first of them."""
    for reason, what in INVALID_ROWS.items():
        mask = dropped[reason]
        if not mask.any():
            continue
        per_file = np.bincount(scan.file_index[mask], minlength=len(scan.files))
        index = int(np.flatnonzero(per_file)[0])
        first = int(scan.row[mask & (scan.file_index == index)].min())
        count = int(per_file[index])
        raise InvalidRowError(
            f"{scan.files[index].info.path}: {count} row{'s' if count != 1 else ''} {what}, e.g. row {first}; "
            "use --drop-invalid to drop them"
        )


def _copy_order(scan: Scan, rows: np.ndarray) -> np.ndarray:
    """Which copy of a repeated ID is kept: ranked by content (pixel hash, then RA, then Dec), then file and row.

    Copies may differ in their pixels or their position; ranking them on
    content keeps the same one whatever the order of the files or of their
    rows. File and row decide only between copies identical in every output
    column, so they change provenance only. Only the repeated IDs' images are
    read again.
    """
    ids = scan.ids[rows]
    _, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    repeated = np.flatnonzero(counts[inverse] > 1)
    content = np.zeros(len(rows), dtype=np.uint64)
    if len(repeated):
        content[repeated] = _image_hashes(scan, rows[repeated])
    rank = np.empty(len(rows), dtype=np.int64)
    keys = (scan.row[rows], scan.file_index[rows], scan.dec[rows], scan.ra[rows], content)  # last key first
    rank[np.lexsort(keys)] = np.arange(len(rows))
    return rank


def _image_hashes(scan: Scan, rows: np.ndarray) -> np.ndarray:
    hashes = np.empty(len(rows), dtype=np.uint64)
    with contextlib.ExitStack() as stack:
        sources = open_row_readers([f.info for f in scan.files], stack)
        for file_index in np.unique(scan.file_index[rows]):
            mine = np.flatnonzero(scan.file_index[rows] == file_index)
            mine = mine[np.argsort(scan.row[rows[mine]])]
            images = sources[file_index].read(scan.row[rows[mine]])[sources[file_index].info.columns.image]
            hashes[mine] = [xxhash.xxh3_64_intdigest(np.ascontiguousarray(image, dtype="<f4")) for image in images]
    return hashes


def _resolve_positions(scan: Scan, keep: np.ndarray, dropped: dict, options: MergeOptions) -> DuplicateReport:
    """Objects within the match radius are one object: keep the smallest ID, or refuse differing labels."""
    candidates = np.flatnonzero(keep)
    pairs = sky.pairs_within(scan.ra[candidates], scan.dec[candidates], options.match_radius)
    if len(pairs) == 0:
        return DuplicateReport()
    group = sky.components(len(candidates), pairs)
    ids = scan.ids[candidates]
    extra, conflicting, report = resolve_duplicates(
        group,
        scan.codes[candidates],
        np.argsort(np.argsort(ids, kind="stable")),  # rank of the ID: the smallest ID is kept
        scan.classes,
        options.on_conflict,
        lambda i: f"'{ids[i].decode(errors='replace')}' ({scan.describe_row(candidates[i])})",
        what=f"objects within {options.match_radius:g} arcsec of another",
        shown=ids,
    )
    dropped["duplicate_position"][candidates[extra]] = True
    dropped["conflicting_position"][candidates[conflicting]] = True
    keep[candidates[extra | conflicting]] = False
    return report


# ---------------------------------------------------------------- pass 2


@dataclass
class Layout:
    """Where each kept row goes: a table and a position inside it."""

    tables: list[str]
    table_of_row: np.ndarray  # int8 index into tables, -1 for dropped rows
    position: np.ndarray  # int64
    tables_rows: dict[str, dict]  # table -> {"rows": n, "class_counts": {...}}

    def rows(self) -> dict[str, int]:
        return {name: self.tables_rows[name]["rows"] for name in self.tables}


def _write_tables(
    plan: Plan,
    layout: Layout,
    sink: Sink,
    options: ReadOptions,
    progress: ProgressFn,
    carry_provenance: bool = False,
    stats_table: str | None = None,
    cluster: tuple[object, ClusterOptions] | None = None,
) -> tuple[dict | None, dict[str, dict]]:
    """Write every table in stored order, gathering its rows from the inputs.

    Returns the statistics of `stats_table` and every table's checksums, both
    accumulated on the way in stored order, so they do not depend on the
    order of the inputs. With a `cluster` (a Dask client and its options),
    the blocks are written by Dask tasks (`distributed.py`); the result is the same.
    """
    scan = plan.scan
    dtype = _row_dtype(scan)
    tables = _tables_in_order(plan, layout)
    if cluster is not None:
        client, cluster_options = cluster
        assert isinstance(sink, HDF5Sink), "Dask tasks write HDF5 only (_check_cluster)"
        job = distributed.WriteJob(
            [f.info for f in scan.files], scan.classes, dtype, sink.path, sink.offsets,
            options.chunk_rows, carry_provenance, scan.image_shape[-1],
        )
        acc, checksums = distributed.write_tables(client, job, tables, stats_table, cluster_options.blocks_per_task, progress)
    else:
        acc, checksums = _write_here(scan, dtype, tables, sink, options.chunk_rows, progress, carry_provenance, stats_table)
    stats = {"split": stats_table, **acc.summary(bands=band_names(scan.image_shape[-1]))} if stats_table else None
    return stats, {name: c.to_dict() for name, c in checksums.items()}


def _tables_in_order(plan: Plan, layout: Layout) -> list[tuple[str, RowFacts, np.ndarray]]:
    """Each table's rows in stored order: their facts and their positions."""
    scan = plan.scan
    facts = RowFacts(scan.ids, scan.codes, scan.file_index, scan.row)
    tables = []
    for t, name in enumerate(layout.tables):
        members = np.flatnonzero(layout.table_of_row == t)
        in_order = members[np.argsort(layout.position[members])]
        tables.append((name, facts.take(in_order), layout.position[in_order]))
    return tables


def _write_here(
    scan: Scan,
    dtype: np.dtype,
    tables: list[tuple[str, RowFacts, np.ndarray]],
    sink: Sink,
    chunk_rows: int,
    progress: ProgressFn,
    carry_provenance: bool,
    stats_table: str | None,
) -> tuple[BandStats, dict[str, TableChecksums]]:
    """The local write pass: this process reads; worker threads write, checksum and add statistics."""
    fill = RecordFiller(scan.classes, dtype, carry_provenance)
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
        for t, first in _interleaved_blocks([len(facts) for _, facts, _ in tables], chunk_rows):
            name, facts, positions = tables[t]
            block = slice(first, first + chunk_rows)
            rows = fill(facts.take(block), sources)
            write(name, positions[block], rows)
            if name == stats_table:
                add_stats[stats_blocks % STATS_LANES](rows.images)
                stats_blocks += 1
            done += len(rows)
            progress("write", done, total)
    for lane in lanes[1:]:
        lanes[0].merge(lane)
    return lanes[0], checksums


STATS_LANES = 2  # statistics are the slowest step: blocks alternate between two accumulators


def _interleaved_blocks(table_rows: Sequence[int], chunk_rows: int) -> list[tuple[int, int]]:
    """(table, first row) of every block, the tables interleaved in proportion to their size.

    Each table's blocks stay in stored order. Only training blocks carry
    statistics: spread over the whole pass, they keep both cores busy to the end.
    """
    blocks = [((first + chunk_rows / 2) / rows, t, first) for t, rows in enumerate(table_rows) for first in range(0, rows, chunk_rows)]
    return [(t, first) for _, t, first in sorted(blocks)]


def _seal(metadata: dict, checksums: dict[str, dict]) -> dict:
    """Add the checksums and the content digest: the last step before writing metadata."""
    metadata["checksums"] = {"algorithm": ALGORITHM, "tables": checksums}
    metadata["digest"] = dataset_digest(metadata, checksums)
    return metadata


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

    def __call__(self, *args: object) -> None:
        self._pending.append(self._pool.submit(self._fn, *args))
        while len(self._pending) > self._depth:
            self._pending.popleft().result()

    def __enter__(self) -> _Background:
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        try:
            while self._pending and exc_type is None:
                self._pending.popleft().result()
        finally:
            for future in self._pending:
                future.cancel()
            self._pool.shutdown(wait=True)


# ---------------------------------------------------------------- pass 3


def _table_stats(
    path: Path,
    table: str,
    bands: list[str],
    chunk_rows: int,
    progress: ProgressFn,
    cluster: tuple[object, ClusterOptions] | None = None,
    checksums: dict | None = None,
) -> dict:
    """Per-band statistics of one table, in one streaming pass in stored order (or Dask tasks merged in that order).

    With the table's stored `checksums`, every block is checked as it is read.
    """
    with readers.open_h5(path) as f:
        rows = len(f[table])
    if cluster is not None:
        client, options = cluster
        acc = distributed.table_stats(
            client, path, table, rows, len(bands), chunk_rows, options.blocks_per_task, progress, checksums
        )
    else:
        acc = distributed.stats_task(path, table, 0, rows, len(bands), chunk_rows, progress, checksums)
    return {"split": table, **acc.summary(bands=bands)}


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
        read = readers.FileIdentity.of_path(path)  # the file is replaced only if the path still names it at the end
        metadata = ds.metadata
        if split not in ds.splits:
            raise DatasetError(f"{path}: no split '{split}' (splits: {', '.join(ds.splits)})")
        engine = ds.engine
        engine.check_can_update(path)
        checksums = stored_checksums(path, metadata, split)
    with _cluster(cluster) as client:
        computed = _table_stats(path, split, metadata["bands"], chunk_rows, progress, client, checksums)
    if split == "train":
        metadata["stats"] = computed
    else:
        metadata.setdefault("split_stats", {})[split] = computed
    engine.replace_metadata(path, metadata, read, fsync)
    return metadata


# ---------------------------------------------------------------- commands


def _row_dtype(scan: Scan) -> np.dtype:
    return output_dtype(scan.id_len, max(len(c) for c in scan.classes), scan.image_shape)


def _metadata(kind: str, plan: Plan, layout: Layout, inputs: list[dict]) -> dict:
    scan = plan.scan
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "created_by": f"cutout-etl {__version__}",
        "classes": scan.classes,
        "bands": band_names(scan.image_shape[-1]),
        "image_shape": list(scan.image_shape),
        "image_layout": "channels last (height, width, bands)",
        "pixel_unit": PIXEL_UNIT,
        "row_dtype": {"id_bytes": scan.id_len, "class_bytes": max(len(c) for c in scan.classes)},
        "tables": layout.tables,
        "tables_rows": layout.tables_rows,
        "inputs": inputs,
        "report": plan.report(),
    }


@dataclass
class OutputOptions:
    """Where and how the output is written."""

    format: str | None = None  # "hdf5", "parquet", or None: from the path
    overwrite: bool = False
    fsync: bool = False
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD


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


@contextlib.contextmanager
def _cluster(options: ClusterOptions | None) -> Iterator[tuple[object, ClusterOptions] | None]:
    """None for the local path; else a Dask client (and its options) for the write pass."""
    if options is None or options.is_local:
        yield None
        return
    with distributed.connect(options) as client:
        yield client, options


def _check_cluster(options: ClusterOptions | None, out: str | Path, output: OutputOptions) -> None:
    """Usage errors about --scheduler, before any work."""
    if options is None:
        return
    options.check()
    fmt = formats.choose(out, output.format)
    if not options.is_local and not fmt.distributed_writes:
        raise UsageError(f"{out}: --scheduler {options.scheduler}: {fmt.title} output is written by the local path only; write HDF5, then `cutout-etl convert`")


def open_sink(tmp: Path, fmt: OutputFormat, rows: dict[str, int], dtype: np.dtype, classes: Sequence[str], output: OutputOptions) -> Sink:
    return fmt.open_sink(tmp, rows, dtype, classes, output.rows_per_shard)


def _class_counts(scan: Scan, mask: np.ndarray) -> dict[str, int]:
    counts = np.bincount(scan.codes[mask], minlength=len(scan.classes))
    return {c: int(n) for c, n in zip(scan.classes, counts)}


def _merged_layout(plan: Plan) -> Layout:
    """One table, rows sorted by class code then ID."""
    scan = plan.scan
    kept = np.flatnonzero(plan.keep)
    order = kept[np.lexsort((scan.ids[kept], scan.codes[kept]))]
    position = np.zeros(len(scan.ids), dtype=np.int64)
    position[order] = np.arange(len(order))
    table_of_row = np.where(plan.keep, 0, -1).astype(np.int8)
    rows = {MERGED_TABLE: {"rows": len(order), "class_counts": _class_counts(scan, plan.keep)}}
    return Layout([MERGED_TABLE], table_of_row, position, rows)


def _split_layout(plan: Plan, options: SplitOptions) -> tuple[Layout, dict]:
    """The split of the kept rows, and its description for the metadata."""
    scan = plan.scan
    kept = np.flatnonzero(plan.keep)
    fractions = parse_fractions(options.fractions)
    groups, grouping = _groups(scan, kept, options)
    assignment = assign_splits(scan.ids[kept], scan.codes[kept], scan.classes, fractions, options.seed, groups)
    table_of_row = np.full(len(scan.ids), -1, dtype=np.int8)
    position = np.zeros(len(scan.ids), dtype=np.int64)
    table_of_row[kept] = assignment.split
    position[kept] = assignment.position
    rows = {
        name: {"rows": sum(assignment.counts[name].values()), "class_counts": assignment.counts[name]}
        for name in SPLIT_NAMES
    }
    description = {
        "fractions": list(fractions),
        "seed": options.seed,
        "method": "stratified by class; rows ranked by BLAKE2b-64 of the ID keyed by the seed; "
        "groups of rows placed whole, largest first",
        "order": "classes interleaved in proportion inside each split; keyed-hash order within a class",
        **grouping,
        **_achieved(assignment.counts, scan.classes, fractions, options.tolerance),
    }
    return Layout(list(SPLIT_NAMES), table_of_row, position, rows), description


def _groups(scan: Scan, kept: np.ndarray, options: SplitOptions) -> tuple[np.ndarray, dict]:
    """Rows that must share a split: neighbours within the group radius, and sky cells."""
    radius = options.group_radius
    if radius is None:
        radius = sky.half_diagonal_arcsec(scan.image_shape, options.pixel_scale)
    ra, dec = scan.ra[kept], scan.dec[kept]
    pairs = sky.pairs_within(ra, dec, radius)
    if options.group_by == "sky":
        _, first, cell = np.unique(sky.sky_cells(ra, dec, options.cell_deg), return_index=True, return_inverse=True)
        pairs = np.concatenate([pairs, np.column_stack([first[cell], np.arange(len(kept))])])
    groups = sky.components(len(kept), pairs)
    sizes = np.bincount(groups)
    description = {
        "group_radius_arcsec": radius,
        "pixel_scale_arcsec": options.pixel_scale,
        "group_by": options.group_by,
        "cell_deg": options.cell_deg if options.group_by == "sky" else None,
        "groups_of_several_rows": int((sizes > 1).sum()),
        "rows_in_groups": int(sizes[sizes > 1].sum()),
        "largest_group": int(sizes.max(initial=0)),
    }
    return groups, description


def _achieved(counts: dict, classes: Sequence[str], fractions: Sequence[float], tolerance: float) -> dict:
    """Each class's share in each split, and how far it is from the target."""
    achieved, worst = {}, 0.0
    for name in classes:
        total = sum(counts[s][name] for s in SPLIT_NAMES)
        shares = [counts[s][name] / total if total else 0.0 for s in SPLIT_NAMES]
        achieved[name] = dict(zip(SPLIT_NAMES, shares))
        worst = max([worst, *(abs(a - f) for a, f in zip(shares, fractions))] if total else [worst])
    return {"achieved_fractions": achieved, "max_fraction_deviation": worst, "tolerance": tolerance, "within_tolerance": worst <= tolerance}


def _write_dataset(
    job: tuple[Path, FileHasher, OutputFormat],
    plan: Plan,
    layout: Layout,
    metadata: dict,
    read: ReadOptions,
    output: OutputOptions,
    progress: ProgressFn,
    client: tuple[object, ClusterOptions] | None,
    stats_table: str | None = None,
    carry_provenance: bool = False,
) -> dict:
    """Pass 2 and the end of every command: write the tables, wait for the input hashes, seal.

    The hashed files are the `inputs`; for a split of a merged file, whose rows
    carry the original provenance (`carry_provenance`), the one file is the `parent`.
    """
    tmp, hasher, fmt = job
    scan = plan.scan
    if fmt.text_ids:
        _refuse_non_utf8_ids(plan)
    with contextlib.closing(open_sink(tmp, fmt, layout.rows(), _row_dtype(scan), scan.classes, output)) as sink:
        stats, checksums = _write_tables(plan, layout, sink, read, progress, carry_provenance, stats_table, client)
        if stats is not None:
            metadata["stats"] = stats
        hasher.finish(scan.files, progress)
        for entry in scan.files:  # last look before sealing: nothing written if an input changed during the run
            entry.info.check_unchanged()
        described = [f.describe() for f in scan.files]
        if carry_provenance:
            metadata["parent"] = described[0]
        else:
            metadata["inputs"] = described
        sink.finish(_seal(metadata, checksums))
    return metadata


def _refuse_non_utf8_ids(plan: Plan) -> None:
    """Parquet stores IDs as strings: name the first kept row whose ID is not UTF-8, before writing anything."""
    from .formats.parquet import first_non_utf8, not_utf8_message

    kept = np.flatnonzero(plan.keep)
    bad = first_non_utf8(plan.scan.ids[kept])
    if bad is not None:
        row = kept[bad]
        source = plan.scan.files[plan.scan.file_index[row]].info.path
        raise InvalidRowError(f"{source}: row {plan.scan.row[row]}: {not_utf8_message(plan.scan.ids[row])}")


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
    classes = parse_classes(merge_options.classes, DEFAULT_CLASSES)
    _check_cluster(cluster, out, output)
    paths = [Path(p) for p in paths]
    with _job(paths, out, output) as job, _cluster(cluster) as client:
        plan = plan_rows(scan_inputs(paths, classes, read, merge_options.drop_unknown, progress), merge_options)
        layout = _merged_layout(plan)
        metadata = _metadata("merged", plan, layout, [])
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

    `cluster` runs the write pass on Dask (`distributed.py`); the output is the same.
    """
    read, merge_options = read or ReadOptions(), merge_options or MergeOptions()
    split_options, output = split_options or SplitOptions(), output or OutputOptions()
    classes = parse_classes(merge_options.classes, DEFAULT_CLASSES)
    parse_fractions(split_options.fractions)  # a usage error before any work
    _check_cluster(cluster, out, output)
    paths = [Path(p) for p in paths]
    with _job(paths, out, output) as job, _cluster(cluster) as client:
        plan = plan_rows(scan_inputs(paths, classes, read, merge_options.drop_unknown, progress), merge_options)
        layout, split_metadata = _split_layout(plan, split_options)
        metadata = _metadata("dataset", plan, layout, [])
        metadata["split"] = split_metadata
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
    parse_fractions(split_options.fractions)
    _check_cluster(cluster, out, output)
    with open_dataset(path) as parent:
        parent_meta = parent.metadata
        parent_format, readable = parent.format, parent.engine.rows_as_input
    if parent_meta.get("kind") != "merged" or not readable:
        raise DatasetError(f"{path}: is a cutout-etl {parent_meta.get('kind')} ({parent_format}), expected the HDF5 output of merge")
    read = ReadOptions(table_path=MERGED_TABLE, chunk_rows=chunk_rows)
    classes = parent_meta["classes"]
    checker = BlockChecker(path, MERGED_TABLE, stored_checksums(path, parent_meta, MERGED_TABLE))
    # Pass 1 reads the parent in its stored blocks and checks each one.
    scan_read = ReadOptions(table_path=MERGED_TABLE, chunk_rows=checker.block_rows)
    with _job([Path(path)], out, output) as job, _cluster(cluster) as client:
        merged = MergeOptions(classes=classes, match_radius=0.0)  # merge already resolved duplicates
        scan = scan_inputs([Path(path)], classes, scan_read, False, progress, checker.check_chunk)
        plan = plan_rows(scan, merged)
        layout, split_metadata = _split_layout(plan, split_options)
        metadata = _metadata("dataset", plan, layout, parent_meta["inputs"])
        metadata["report"] = parent_meta["report"]
        metadata["split"] = split_metadata
        return _write_dataset(job, plan, layout, metadata, read, output, progress, client, "train", carry_provenance=True)


def _refuse_non_utf8_block(path: Path, table: str, start: int, block: Block) -> None:
    from .formats.parquet import first_non_utf8, not_utf8_message

    bad = first_non_utf8(block["ID"])
    if bad is not None:
        raise InvalidRowError(f"{path}: table {table} row {start + bad}: {not_utf8_message(block['ID'][bad])}")


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
            _seal(metadata, {name: c.to_dict() for name, c in checksums.items()})
            if digest is not None and metadata["digest"] != digest:
                raise DatasetError(f"{path}: converted content differs from the source (digest {metadata['digest']} != {digest})")
            sink.finish(metadata)
    return metadata
