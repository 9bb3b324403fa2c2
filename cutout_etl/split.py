"""Stratified, order-independent train/val/test assignment. No I/O.

Within a class, rows are ranked by a keyed hash of (seed, ID): the first
n_train go to train, the next n_val to val, the rest to test. Inside each
split the classes are interleaved in proportion: a row ranked r among the
n rows of its class in that split sorts at (r + 1/2) / n, so any block of
consecutive rows holds each class within one row of its share, and the
order within a class is the hash order (a seeded shuffle). Nothing depends
on the order of files or rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import SplitError, UsageError
from .schema import SPLIT_NAMES


def parse_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != len(SPLIT_NAMES):
        raise UsageError(f"--fractions: expected 3 values for train,val,test (got {len(values)})")
    if any(not np.isfinite(v) or v < 0 for v in values):
        raise UsageError(f"--fractions: values must be >= 0 (got {values})")
    if values[0] == 0:
        raise UsageError("--fractions: the train fraction must be > 0")
    if abs(sum(values) - 1) > 1e-6:
        raise UsageError(f"--fractions: values must sum to 1 (got {sum(values):.6g})")
    return values  # type: ignore[return-value]


def keyed_hash(ids: np.ndarray, seed: int) -> np.ndarray:
    """A 64-bit BLAKE2b of each ID keyed by the seed."""
    key = int(seed).to_bytes(16, "little", signed=True)
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(i, digest_size=8, key=key).digest(), "little") for i in ids.tolist()),
        dtype=np.uint64,
        count=len(ids),
    )


def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Exact counts by largest remainder, each non-empty split given >= 1 row."""
    quotas = np.asarray(fractions, dtype=float) * n
    counts = np.floor(quotas).astype(int)
    remainders = quotas - counts
    for i in np.argsort(-remainders, kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    for i in np.flatnonzero((counts == 0) & (np.asarray(fractions) > 0)):
        donor = int(np.argmax(counts))
        if counts[donor] > 1:
            counts[donor] -= 1
            counts[i] += 1
    return counts.tolist()


@dataclass
class SplitPlan:
    """Which split each row goes to and where in it."""

    split: np.ndarray  # int8, index into SPLIT_NAMES
    position: np.ndarray  # int64, row index inside its split
    counts: dict[str, dict[str, int]]  # split -> class -> rows

    def rows(self, split_index: int) -> int:
        return int(np.count_nonzero(self.split == split_index))


def assign_splits(
    ids: np.ndarray,
    codes: np.ndarray,
    classes: Sequence[str],
    fractions: Sequence[float],
    seed: int,
) -> SplitPlan:
    """Stratified assignment of unique IDs with class codes to the splits."""
    hashes = keyed_hash(ids, seed)
    split = np.empty(len(ids), dtype=np.int8)
    non_empty = sum(f > 0 for f in fractions)
    interleave = np.empty(len(ids), dtype=np.float64)  # where a row sorts inside its split
    counts: dict[str, dict[str, int]] = {name: {} for name in SPLIT_NAMES}
    for code, name in enumerate(classes):
        members = np.flatnonzero(codes == code)
        if 0 < len(members) < non_empty:
            raise SplitError(
                f"class {name} has {len(members)} rows, fewer than the {non_empty} non-empty splits"
            )
        ranked = members[np.lexsort((ids[members], hashes[members]))]
        bounds = np.cumsum([0, *split_counts(len(members), fractions)])
        for s, split_name in enumerate(SPLIT_NAMES):
            rows = ranked[bounds[s] : bounds[s + 1]]
            split[rows] = s
            interleave[rows] = (np.arange(len(rows)) + 0.5) / max(len(rows), 1)
            counts[split_name][name] = len(rows)
    position = np.empty(len(ids), dtype=np.int64)
    for s in range(len(SPLIT_NAMES)):
        members = np.flatnonzero(split == s)
        ordered = members[np.lexsort((codes[members], interleave[members]))]
        position[ordered] = np.arange(len(ordered))
    return SplitPlan(split=split, position=position, counts=counts)
