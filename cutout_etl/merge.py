"""Label normalisation, integer encoding and duplicate IDs. No I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import LabelConflictError, UsageError
from .schema import as_bytes

UNKNOWN = -1
MAX_LISTED = 5


def normalize_labels(values: np.ndarray) -> np.ndarray:
    """Bytes or str labels as stripped, upper-case bytes."""
    return np.char.upper(as_bytes(values))


def parse_classes(classes: Sequence[str] | None, default: Sequence[str]) -> list[str]:
    """The class list in code order: sorted by default, or as the user gave it."""
    if classes is None:
        return sorted(default)
    names = [c.strip().upper() for c in classes if c.strip()]
    if not names:
        raise UsageError("--classes: no class names given")
    if len(set(names)) != len(names):
        raise UsageError(f"--classes: a class is listed twice ({', '.join(names)})")
    odd = [n for n in names if not n.isascii()]
    if odd:  # labels are compared and stored as ASCII bytes, as the survey catalogues write them
        raise UsageError(f"--classes: class names must be ASCII (got {', '.join(odd)})")
    return names


def encode_labels(normalized: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Integer codes in class-list order; UNKNOWN (-1) for anything else."""
    values, inverse = np.unique(normalized, return_inverse=True)
    lookup = {c.encode(): i for i, c in enumerate(classes)}
    codes = np.array([lookup.get(v, UNKNOWN) for v in values], dtype=np.int16)
    return codes[inverse.reshape(-1)]


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
    on_conflict: str,
    describe_row,
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
    if conflicts.any() and on_conflict != "drop":
        members = [order[a : a + n] for a, n in zip(dup_starts[conflicts], dup_sizes[conflicts])]
        raise LabelConflictError(_conflict_message(members, shown, codes, classes, describe_row, what))
    for start, size, conflict in zip(dup_starts, dup_sizes, conflicts):
        members = order[start : start + size]
        if conflict:
            conflicted[members] = True
            report.conflict_groups += 1
            report.conflict_dropped += int(size)
        else:
            drop[members[1:]] = True
            report.same_label_groups += 1
            report.same_label_dropped += int(size - 1)
        if len(report.examples) < MAX_LISTED:
            report.examples.append(shown[members[0]].decode(errors="replace"))
    return drop, conflicted, report


def _conflict_message(groups, shown, codes, classes, describe_row, what: str) -> str:
    parts = []
    for members in groups[:MAX_LISTED]:
        copies = ", ".join(sorted(f"{classes[codes[m]]} in {describe_row(m)}" for m in members))
        parts.append(f"'{shown[members[0]].decode(errors='replace')}' ({copies})")
    more = f" and {len(groups) - MAX_LISTED} more" if len(groups) > MAX_LISTED else ""
    return (
        f"{len(groups)} {what} carry conflicting labels: {'; '.join(parts)}{more}; "
        "use --on-conflict drop to drop them"
    )
