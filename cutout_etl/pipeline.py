"""The steps chained: merge, split, stats and build.

Every command is at most three streaming passes over row chunks:
1. scan: IDs, labels and pixel finiteness of every row (`scan.py`);
2. write: read the inputs again in order and write each kept row straight
   to its final position in the output (`writers.RowWriter`);
3. stats: read the training split back and accumulate statistics.
Only per-row bookkeeping (ID, class, file, row: ~50 bytes a row) grows with
the number of rows; images never exceed one chunk in memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__, readers
from .dataset import open_dataset
from .errors import DatasetError
from .merge import UNKNOWN, DuplicateReport, parse_classes, resolve_duplicates
from .scan import ProgressFn, ReadOptions, Scan, no_progress, open_inputs, scan_inputs
from .schema import (
    DEFAULT_CLASSES,
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
from .writers import RowWriter, atomic_output, create_tables, write_metadata

DROP_REASONS = ("unknown_label", "no_finite_pixel", "duplicate_id", "conflicting_labels")


@dataclass
class MergeOptions:
    """How labels, unknown classes and duplicate IDs are handled."""

    classes: Sequence[str] | None = None
    drop_unknown: bool = False
    on_conflict: str = "error"  # or "drop"


@dataclass
class SplitOptions:
    fractions: Sequence[float] = (0.7, 0.15, 0.15)
    seed: int = 0


@dataclass
class Plan:
    """Which rows are kept, and why the others are not."""

    scan: Scan
    keep: np.ndarray
    dropped: dict[str, np.ndarray]  # reason -> bool mask of rows
    duplicates: DuplicateReport = field(default_factory=DuplicateReport)

    def report(self) -> dict:
        files = self.scan.files
        per_file = []
        for index, entry in enumerate(files):
            in_file = self.scan.file_index == index
            per_file.append(
                {
                    **entry.describe(),
                    "labels": dict(sorted(entry.label_counts.items())),
                    "rows_kept": int(np.count_nonzero(self.keep & in_file)),
                    "dropped": {r: int(np.count_nonzero(m & in_file)) for r, m in self.dropped.items()},
                    "rows_partly_nonfinite_kept": entry.rows_partly_nonfinite,
                    "image_cast_to_float32": entry.info.image_dtype != np.float32,
                }
            )
        return {
            "rows_read": int(len(self.keep)),
            "rows_kept": int(self.keep.sum()),
            "dropped": {r: int(m.sum()) for r, m in self.dropped.items()},
            "duplicate_ids": vars(self.duplicates),
            "rows_partly_nonfinite": sum(f.rows_partly_nonfinite for f in files),
            "rows_cast_to_float32": sum(f.info.rows for f in files if f.info.image_dtype != np.float32),
            "files": per_file,
        }


def plan_rows(scan: Scan, options: MergeOptions) -> Plan:
    """Drop unusable rows, then resolve duplicate IDs among the rest."""
    dropped = {reason: np.zeros(len(scan.ids), dtype=bool) for reason in DROP_REASONS}
    dropped["unknown_label"] = scan.codes == UNKNOWN
    dropped["no_finite_pixel"] = scan.no_finite & ~dropped["unknown_label"]
    keep = ~(dropped["unknown_label"] | dropped["no_finite_pixel"])
    candidates = np.flatnonzero(keep)
    tiebreak = scan.file_index.astype(np.int64) << 40 | scan.row
    extra, conflicting, duplicates = resolve_duplicates(
        scan.ids[candidates],
        scan.codes[candidates],
        tiebreak[candidates],
        scan.classes,
        options.on_conflict,
        lambda i: scan.describe_row(candidates[i]),
    )
    dropped["duplicate_id"][candidates[extra]] = True
    dropped["conflicting_labels"][candidates[conflicting]] = True
    keep[candidates[extra | conflicting]] = False
    return Plan(scan=scan, keep=keep, dropped=dropped, duplicates=duplicates)


# ---------------------------------------------------------------- pass 2


def _write_rows(
    plan: Plan,
    table_of_row: np.ndarray,
    position: np.ndarray,
    tables: Sequence[str],
    out: Path,
    metadata: dict,
    options: ReadOptions,
    progress: ProgressFn,
    carry_provenance: bool = False,
) -> None:
    """Read the inputs in scan order and write every kept row at its position."""
    scan = plan.scan
    class_len = max(len(c) for c in scan.classes)
    dtype = output_dtype(scan.id_len, class_len, scan.image_shape)
    sizes = {t: int(np.count_nonzero(plan.keep & (table_of_row == i))) for i, t in enumerate(tables)}
    offsets = create_tables(out, sizes, dtype, metadata)
    class_names = np.array([c.encode() for c in scan.classes])
    total, done = int(plan.keep.sum()), 0
    with contextlib.ExitStack() as stack, RowWriter(out, offsets, dtype.itemsize) as writer:
        opened = open_inputs([scan.files[i].info.path for i in scan.read_order], options, stack)
        base = 0
        for file_index, (info, f) in zip(scan.read_order, opened):
            for start, chunk in readers.iter_chunks(info, f, options.chunk_rows):
                rows = np.arange(base + start, base + start + len(chunk))
                kept = rows[plan.keep[rows]]
                if len(kept) == 0:
                    continue
                records = np.empty(len(kept), dtype)
                local = kept - base - start
                records["ID"] = scan.ids[kept]
                records["RAJ2000"] = chunk[info.columns.ra][local]
                records["DECJ2000"] = chunk[info.columns.dec][local]
                records["label"] = scan.codes[kept]
                records["SPECTYPE"] = class_names[scan.codes[kept]]
                if carry_provenance:
                    records["source_file"] = chunk["source_file"][local]
                    records["source_row"] = chunk["source_row"][local]
                else:
                    records["source_file"] = file_index
                    records["source_row"] = scan.row[kept]
                records["image"] = chunk[info.columns.image][local]
                for t, name in enumerate(tables):
                    mine = table_of_row[kept] == t
                    if mine.any():
                        writer.write(name, position[kept[mine]], records[mine])
                done += len(kept)
                progress("write", done, total)
            base += info.rows


# ---------------------------------------------------------------- pass 3


def compute_stats(path: Path, split: str = "train", chunk_rows: int = readers.DEFAULT_CHUNK_ROWS, progress: ProgressFn = no_progress) -> dict:
    """Per-band statistics of one split, in one streaming pass."""
    with open_dataset(path) as ds:
        table = ds[split]
        acc = BandStats(n_bands=ds.image_shape[-1])
        done = 0
        for images, _ in table.batches(chunk_rows):
            acc.update(images)
            done += len(images)
            progress("stats", done, len(table))
        summary = acc.summary(bands=ds.bands)
    return {"split": split, **summary}


def stats(path: Path, split: str = "train", chunk_rows: int = readers.DEFAULT_CHUNK_ROWS, progress: ProgressFn = no_progress) -> dict:
    """`cutout-etl stats`: compute a split's statistics and store them in the dataset."""
    with open_dataset(path) as ds:
        metadata = ds.metadata
        if split not in ds.splits:
            raise DatasetError(f"{path}: no split '{split}' (splits: {', '.join(ds.splits)})")
    metadata["stats"] = compute_stats(path, split, chunk_rows, progress)
    write_metadata(path, metadata)
    return metadata


# ---------------------------------------------------------------- commands


def _base_metadata(kind: str, plan: Plan, inputs: list[dict], parent: dict | None = None) -> dict:
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
        "inputs": inputs,
        "parent": parent,
        "report": plan.report(),
    }


def _scan_and_plan(paths, read: ReadOptions, merge: MergeOptions, classes, progress) -> Plan:
    scan = scan_inputs([Path(p) for p in paths], classes, read, merge.drop_unknown, progress)
    return plan_rows(scan, merge)


def merge(
    paths: Sequence[Path],
    out: Path,
    read: ReadOptions = ReadOptions(),
    merge_options: MergeOptions = MergeOptions(),
    overwrite: bool = False,
    progress: ProgressFn = no_progress,
) -> dict:
    """`cutout-etl merge`: one table of all kept rows, sorted by class then ID."""
    classes = parse_classes(merge_options.classes, DEFAULT_CLASSES)
    with atomic_output(Path(out), overwrite) as tmp:
        plan = _scan_and_plan(paths, read, merge_options, classes, progress)
        scan = plan.scan
        kept = np.flatnonzero(plan.keep)
        order = kept[np.lexsort((scan.ids[kept], scan.codes[kept]))]
        position = np.zeros(len(scan.ids), dtype=np.int64)
        position[order] = np.arange(len(order))
        metadata = _base_metadata("merged", plan, [f.describe() for f in scan.files])
        metadata["tables"] = [MERGED_TABLE]
        metadata["tables_rows"] = {MERGED_TABLE: {"rows": len(order), "class_counts": _class_counts(scan, plan.keep)}}
        table_of_row = np.zeros(len(scan.ids), dtype=np.int8)
        _write_rows(plan, table_of_row, position, [MERGED_TABLE], tmp, metadata, read, progress)
    return metadata


def _class_counts(scan: Scan, mask: np.ndarray) -> dict[str, int]:
    counts = np.bincount(scan.codes[mask], minlength=len(scan.classes))
    return {c: int(n) for c, n in zip(scan.classes, counts)}


def _split_and_write(
    plan: Plan, tmp: Path, read: ReadOptions, split_options: SplitOptions, metadata: dict, progress, carry_provenance: bool = False
) -> dict:
    fractions = parse_fractions(split_options.fractions)
    scan = plan.scan
    kept = np.flatnonzero(plan.keep)
    assignment = assign_splits(scan.ids[kept], scan.codes[kept], scan.classes, fractions, split_options.seed)
    table_of_row = np.full(len(scan.ids), -1, dtype=np.int8)
    position = np.zeros(len(scan.ids), dtype=np.int64)
    table_of_row[kept] = assignment.split
    position[kept] = assignment.position
    metadata["tables"] = list(SPLIT_NAMES)
    metadata["split"] = {
        "fractions": list(fractions),
        "seed": split_options.seed,
        "method": "stratified by class; rows ranked by BLAKE2b-64 of the ID keyed by the seed",
        "order": "rows inside each split in keyed-hash order (a seeded shuffle)",
    }
    metadata["tables_rows"] = {
        name: {"rows": sum(assignment.counts[name].values()), "class_counts": assignment.counts[name]}
        for name in SPLIT_NAMES
    }
    _write_rows(plan, table_of_row, position, SPLIT_NAMES, tmp, metadata, read, progress, carry_provenance)
    metadata["stats"] = compute_stats(tmp, "train", read.chunk_rows, progress)
    write_metadata(tmp, metadata)
    return metadata


def build(
    paths: Sequence[Path],
    out: Path,
    read: ReadOptions = ReadOptions(),
    merge_options: MergeOptions = MergeOptions(),
    split_options: SplitOptions = SplitOptions(),
    overwrite: bool = False,
    progress: ProgressFn = no_progress,
) -> dict:
    """`cutout-etl build`: merge, split and stats in one run."""
    classes = parse_classes(merge_options.classes, DEFAULT_CLASSES)
    parse_fractions(split_options.fractions)
    with atomic_output(Path(out), overwrite) as tmp:
        plan = _scan_and_plan(paths, read, merge_options, classes, progress)
        metadata = _base_metadata("dataset", plan, [f.describe() for f in plan.scan.files])
        return _split_and_write(plan, tmp, read, split_options, metadata, progress)


def split(
    path: Path,
    out: Path,
    split_options: SplitOptions = SplitOptions(),
    overwrite: bool = False,
    chunk_rows: int = readers.DEFAULT_CHUNK_ROWS,
    progress: ProgressFn = no_progress,
) -> dict:
    """`cutout-etl split`: split a merged file; provenance points at the original inputs."""
    parse_fractions(split_options.fractions)
    with open_dataset(path) as parent:
        parent_meta = parent.metadata
        if parent_meta.get("kind") != "merged":
            raise DatasetError(f"{path}: is a cutout-etl {parent_meta.get('kind')}, expected the output of merge")
    read = ReadOptions(table_path=MERGED_TABLE, chunk_rows=chunk_rows)
    with atomic_output(Path(out), overwrite) as tmp:
        plan = _scan_and_plan([path], read, MergeOptions(classes=parent_meta["classes"]), parent_meta["classes"], progress)
        metadata = _base_metadata("dataset", plan, parent_meta["inputs"], parent=plan.scan.files[0].describe())
        metadata["report"] = parent_meta["report"]
        return _split_and_write(plan, tmp, read, split_options, metadata, progress, carry_provenance=True)
