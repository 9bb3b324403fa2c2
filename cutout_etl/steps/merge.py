"""Which rows are kept, and why the others are not: the merge step. No I/O of its own.

`plan_rows` works on the facts of pass 1 (`scan.Scan`) in memory: it drops
unusable rows (counted by reason, in DROP_REASONS order), resolves duplicate
IDs, identical images under different IDs (by the scan's image digest) and
objects at one sky position (`sky`), and refuses what cannot be resolved. Which copy of a repeated ID is kept depends on its pixels, so the
repeated IDs' images must be read again: the caller passes that read in as
`image_hashes` (`records.image_hashes` re-reads the rows through the same
readers as the write pass), which keeps this module pure numpy and testable
on made-up facts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..choices import Choice
from ..errors import EmptyTableError, InvalidRowError, LabelConflictError, MissingClassError
from ..inputs import validate
from ..inputs.labels import UNKNOWN, encode_labels, normalize_labels, parse_classes
from ..inputs.scan import Scan
from . import repeats, sky

__all__ = [
    "DROP_REASONS",
    "UNKNOWN",
    "DuplicateReport",
    "MergePolicy",
    "OnConflict",
    "Plan",
    "encode_labels",
    "normalize_labels",
    "parse_classes",
    "plan_rows",
    "resolve_duplicates",
]

MAX_LISTED = 5

DROP_REASONS = (
    "unknown_label",
    "empty_id",
    "invalid_position",
    "no_finite_pixel",
    "duplicate_id",
    "conflicting_labels",
    "duplicate_image",
    "conflicting_image",
    "duplicate_position",
    "conflicting_position",
)

INVALID_ROWS = {
    "empty_id": "with an empty ID",
    "invalid_position": "with an invalid sky position (RA/Dec NaN, infinite or out of range)",
}


class OnConflict(Choice):
    """One ID (or one sky position) with different labels: refuse the run, or drop every copy (counted)."""

    ERROR = "error"
    DROP = "drop"


class MergePolicy(Protocol):
    """What `plan_rows` reads of `pipeline.MergeOptions`."""

    @property
    def on_conflict(self) -> OnConflict | str: ...

    @property
    def match_radius(self) -> float: ...  # arcsec: closer objects are one object; 0 turns matching off

    @property
    def drop_invalid(self) -> bool: ...

    @property
    def keep_duplicate_images(self) -> bool: ...  # keep identical images under different IDs (all copies)


ImageHashes = Callable[[Scan, np.ndarray], np.ndarray]  # (scan, scan rows) -> a uint64 hash of each row's image


@dataclass
class DuplicateReport:
    """What duplicate resolution did, for the run report."""

    same_label_groups: int = 0
    same_label_dropped: int = 0
    conflict_groups: int = 0
    conflict_dropped: int = 0
    examples: list[str] = field(default_factory=list)


def resolve_duplicates(
    ids: np.ndarray,
    codes: np.ndarray,
    tiebreak: np.ndarray,
    classes: Sequence[str],
    on_conflict: OnConflict | str,
    describe_row: Callable[[int], str],
    what: str = "IDs",
    shown: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, DuplicateReport]:
    """Rows to drop so every key in `ids` appears once: (extra copies, conflicting rows, report).

    `tiebreak` orders the copies of one key (lower is kept); it must not
    depend on the order the files were given in. Copies with one label keep
    the first; copies with different labels are an error, or all dropped when
    on_conflict == "drop". `describe_row(i)` names row i for messages, `what`
    names the keys, and `shown` (default: the keys) is what examples show.
    """
    shown = ids if shown is None else shown
    drop = np.zeros(len(ids), dtype=bool)
    conflicted = np.zeros(len(ids), dtype=bool)
    report = DuplicateReport()
    if len(ids) < 2:
        return drop, conflicted, report
    order = np.lexsort((tiebreak, ids))
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    sizes = np.diff(np.r_[starts, len(ids)])
    dup_starts = starts[sizes > 1]
    if len(dup_starts) == 0:
        return drop, conflicted, report
    sorted_codes = codes[order]
    lo = np.minimum.reduceat(sorted_codes, starts)[sizes > 1]
    hi = np.maximum.reduceat(sorted_codes, starts)[sizes > 1]
    dup_sizes = sizes[sizes > 1]
    conflicts = lo != hi
    if conflicts.any() and on_conflict != OnConflict.DROP:
        members = [order[a : a + n] for a, n in zip(dup_starts[conflicts], dup_sizes[conflicts])]
        raise LabelConflictError(_conflict_message(members, shown, codes, classes, describe_row, what))
    for start, size, conflict in zip(dup_starts, dup_sizes, conflicts):
        _drop_group(order[start : start + size], bool(conflict), drop, conflicted, report, shown)
    return drop, conflicted, report


def _drop_group(members, conflict: bool, drop, conflicted, report: DuplicateReport, shown) -> None:
    """One key's copies: all of them if their labels conflict, else all but the first."""
    if conflict:
        conflicted[members] = True
        report.conflict_groups += 1
        report.conflict_dropped += len(members)
    else:
        drop[members[1:]] = True
        report.same_label_groups += 1
        report.same_label_dropped += len(members) - 1
    if len(report.examples) < MAX_LISTED:
        report.examples.append(shown[members[0]].decode(errors="replace"))


def _conflict_message(groups, shown, codes, classes, describe_row, what: str) -> str:
    parts = []
    for members in groups[:MAX_LISTED]:
        copies = ", ".join(sorted(f"{classes[codes[m]]} in {describe_row(m)}" for m in members))
        parts.append(f"'{shown[members[0]].decode(errors='replace')}' ({copies})")
    more = f" and {len(groups) - MAX_LISTED} more" if len(groups) > MAX_LISTED else ""
    return (
        f"{len(groups)} {what} carry conflicting labels: {'; '.join(parts)}{more}; use --on-conflict drop to drop them"
    )


@dataclass
class Plan:
    """Which rows are kept, and why the others are not."""

    scan: Scan
    keep: np.ndarray
    dropped: dict[str, np.ndarray]  # reason -> the rows dropped for it, ascending (no mask of a byte a row each)
    duplicates: DuplicateReport = field(default_factory=DuplicateReport)
    positions: DuplicateReport = field(default_factory=DuplicateReport)
    match_radius: float = 0.0
    images: DuplicateReport = field(default_factory=DuplicateReport)
    keep_duplicate_images: bool = False

    def report(self) -> dict:
        files = self.scan.files
        cast = [i for i, f in enumerate(files) if f.info.image_dtype != np.float32]
        partly = self.scan.partly_nonfinite
        per_file = []
        for index, entry in enumerate(files):
            in_file = self.scan.file_index == index
            per_file.append(
                {
                    **{k: v for k, v in entry.describe().items() if k != "sha256"},  # `inputs` has it, once hashed
                    "labels": dict(sorted(entry.label_counts.items())),
                    "rows_kept": int(np.count_nonzero(self.keep & in_file)),
                    "dropped": {r: int(np.count_nonzero(in_file[rows])) for r, rows in self.dropped.items()},
                    "rows_partly_nonfinite_kept": int(np.count_nonzero(self.keep & in_file & partly)),
                    "image_cast_to_float32": entry.info.image_dtype != np.float32,
                    "notes": list(entry.info.notes),
                }
            )
        return {
            "rows_read": len(self.keep),
            "rows_kept": int(self.keep.sum()),
            "dropped": {r: len(rows) for r, rows in self.dropped.items()},
            "duplicate_ids": vars(self.duplicates),
            "duplicate_images": {"kept": self.keep_duplicate_images, **vars(self.images)},
            "duplicate_positions": {"match_radius_arcsec": self.match_radius, **vars(self.positions)},
            "rows_partly_nonfinite": int(np.count_nonzero(self.keep & self.scan.partly_nonfinite)),
            "rows_cast_to_float32": int(np.count_nonzero(self.keep & np.isin(self.scan.file_index, cast))),
            "files": per_file,
        }


def plan_rows(scan: Scan, options: MergePolicy, image_hashes: ImageHashes) -> Plan:
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
    copies = _sharing(scan.ids, keep)  # only rows whose ID another row shares can be dropped as duplicates
    extra, conflicting, duplicates = resolve_duplicates(
        scan.ids[copies],
        scan.codes[copies],
        _copy_order(scan, copies, image_hashes),
        scan.classes,
        options.on_conflict,
        lambda i: scan.describe_row(copies[i]),
    )
    dropped["duplicate_id"][copies[extra]] = True
    dropped["conflicting_labels"][copies[conflicting]] = True
    keep[copies[extra | conflicting]] = False
    images = _resolve_images(scan, keep, dropped, options)
    positions = _resolve_positions(scan, keep, dropped, options)
    if not keep.any():
        reasons = ", ".join(f"{r.replace('_', ' ')} {int(m.sum())}" for r, m in dropped.items() if m.any())
        raise EmptyTableError(f"nothing to write: all {len(keep)} rows were dropped ({reasons})")
    _refuse_missing_classes(scan, keep)
    rows = {reason: np.flatnonzero(dropped.pop(reason)) for reason in DROP_REASONS}  # a mask freed as each goes
    return Plan(scan, keep, rows, duplicates, positions, options.match_radius, images, options.keep_duplicate_images)


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


def _empty_ids(ids: np.ndarray, step: int = 1 << 16) -> np.ndarray:
    """`validate.empty_ids` in slices: its stripped copy of the IDs stays small."""
    flags = np.zeros(len(ids), dtype=bool)
    for first in range(0, len(ids), step):
        flags[first : first + step] = validate.empty_ids(ids[first : first + step])
    return flags


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


def _sharing(keys: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The kept rows, ascending, whose key (ID, image digest) another kept row shares.

    Rows with a unique key are alone in their group, so resolving duplicates
    among these rows only drops the same rows as among all, and costs memory
    in proportion to the duplicates (`repeats`), not to the rows.
    """
    candidates = np.flatnonzero(keep)
    return candidates[repeats.repeated(keys, candidates)]


def _copy_order(scan: Scan, copies: np.ndarray, image_hashes: ImageHashes) -> np.ndarray:
    """Which copy of a repeated ID is kept: ranked by content (pixel hash, then RA, then Dec), then file and row.

    Copies may differ in their pixels or their position; ranking them on
    content keeps the same one whatever the order of the files or of their
    rows. File and row decide only between copies identical in every output
    column, so they change provenance only. Only the repeated IDs' images are
    read again.
    """
    rank = np.zeros(len(copies), dtype=np.int64)
    if len(copies):
        content = image_hashes(scan, copies)
        keys = (scan.row[copies], scan.file_index[copies], scan.dec[copies], scan.ra[copies], content)  # last key first
        rank[np.lexsort(keys)] = np.arange(len(copies))
    return rank


def _resolve_images(scan: Scan, keep: np.ndarray, dropped: dict, options: MergePolicy) -> DuplicateReport:
    """Identical images under different IDs are one object: keep the smallest ID, or refuse differing labels.

    With `keep_duplicate_images` every copy stays (the split then keeps them in one split);
    the groups are still counted in the report.
    """
    candidates = _sharing(scan.image_digest, keep)  # the smallest ID among them: the same as among all kept rows
    ids = scan.ids[candidates]
    extra, conflicting, report = resolve_duplicates(
        scan.image_digest[candidates],
        scan.codes[candidates],
        np.argsort(np.argsort(ids, kind="stable")),  # rank of the ID: the smallest ID is kept
        scan.classes,
        OnConflict.DROP if options.keep_duplicate_images else options.on_conflict,
        lambda i: f"'{ids[i].decode(errors='replace')}' ({scan.describe_row(candidates[i])})",
        what="images identical to another under a different ID",
        shown=ids,
    )
    if options.keep_duplicate_images:
        report.same_label_dropped = report.conflict_dropped = 0
    else:
        dropped["duplicate_image"][candidates[extra]] = True
        dropped["conflicting_image"][candidates[conflicting]] = True
        keep[candidates[extra | conflicting]] = False
    return report


def _resolve_positions(scan: Scan, keep: np.ndarray, dropped: dict, options: MergePolicy) -> DuplicateReport:
    """Objects within the match radius are one object: keep the smallest ID, or refuse differing labels."""
    kept = np.flatnonzero(keep)
    pairs = sky.pairs_within(scan.ra, scan.dec, options.match_radius, kept)
    if len(pairs) == 0:
        return DuplicateReport()
    near = np.unique(pairs)  # only rows with a neighbour can be dropped; their groups keep their order
    candidates = kept[near]
    del kept
    group = sky.components(len(near), np.searchsorted(near, pairs))
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
