"""Which keys (IDs, image digests) occur more than once, found with little memory. No I/O.

Sorting fixed-width byte keys holds several copies of them at once (the
keys taken, the sorted keys, the sort's own buffers: ~100 bytes a row for
29-byte IDs). Almost every key of a catalogue is unique, so a 64-bit hash of
each key, sorted, finds the few rows that may share one with 16 bytes a row;
only those rows' keys are then compared exactly. The answer is exact:
a hash collision only makes a row a candidate.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

import numpy as np

IndexT = TypeVar("IndexT", np.ndarray, slice)

SLICE_ROWS = 1 << 14  # keys hashed at a time: their copies stay ~1 MB
_PRIME = np.uint64(0x100000001B3)  # FNV-1a, 64-bit
_OFFSET = np.uint64(0xCBF29CE484222325)
_MIX = np.uint64(0xFF51AFD7ED558CCD)  # murmur3's finaliser: spreads the high bytes into the low ones


def repeated(keys: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Positions in `rows` (default: all of `keys`), ascending, of the rows whose key occurs more than once among them.

    `keys` is a fixed-width bytes array (dtype S); `keys[rows]` is never taken whole.
    """
    candidates = _repeated_values(key_hashes(keys, rows))
    if len(candidates) == 0:
        return candidates
    return candidates[_repeated_values(keys[rows_at(rows, candidates)])]


def key_hashes(keys: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """A 64-bit FNV-1a hash of each key's bytes (of `keys[rows]`), computed a slice of rows at a time."""
    if keys.dtype.kind != "S":
        raise TypeError(f"expected fixed-width bytes keys, got {keys.dtype}")
    out = np.empty(len(keys) if rows is None else len(rows), dtype=np.uint64)
    first = 0
    for part in key_slices(keys, rows):
        out[first : first + len(part)] = _fnv1a(np.ascontiguousarray(part))
        first += len(part)
    return out


def key_slices(keys: np.ndarray, rows: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """`keys[rows]` (default: all of `keys`) in slices of `SLICE_ROWS`: never taken whole."""
    for first in range(0, len(keys) if rows is None else len(rows), SLICE_ROWS):
        yield keys[rows_at(rows, slice(first, first + SLICE_ROWS))]


def _fnv1a(keys: np.ndarray) -> np.ndarray:
    data = keys.view(np.uint8).reshape(len(keys), keys.dtype.itemsize)
    h = np.full(len(keys), _OFFSET, dtype=np.uint64)
    for column in data.T:
        h ^= column
        h *= _PRIME  # wraps modulo 2**64, as FNV intends
    h ^= h >> np.uint64(33)
    h *= _MIX
    h ^= h >> np.uint64(33)
    return h


def _repeated_values(values: np.ndarray) -> np.ndarray:
    """Indices of the values that occur more than once, ascending."""
    order = np.argsort(values, kind="stable")
    ranked = values[order]
    same = np.flatnonzero(ranked[1:] == ranked[:-1])
    del ranked
    repeated = np.zeros(len(values), dtype=bool)
    repeated[order[same]] = True
    repeated[order[same + 1]] = True
    return np.flatnonzero(repeated)


def chained_pairs(keys: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """(first, other) pairs of positions in `rows` (default: all of `keys`) whose keys are equal, chained by group.

    Only the rows whose key repeats (`repeated`) are sorted.
    """
    shared = repeated(keys, rows)
    if len(shared) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    order = shared[np.argsort(keys[rows_at(rows, shared)], kind="stable")]
    ranked = keys[rows_at(rows, order)]
    same = np.flatnonzero(ranked[1:] == ranked[:-1])
    return np.column_stack([order[same], order[same + 1]]).astype(np.int64)


def order_by_hash_then_key(hashes: np.ndarray, keys: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """`np.lexsort((keys[rows], hashes))` without taking `keys[rows]`: only rows with equal hashes compare keys."""
    order = np.argsort(hashes, kind="stable")
    ranked = hashes[order]
    tied = np.flatnonzero(ranked[1:] == ranked[:-1])
    if len(tied):
        in_tie = np.zeros(len(order), dtype=bool)
        in_tie[tied] = in_tie[tied + 1] = True
        at = np.flatnonzero(in_tie)  # runs of equal hashes, in hash order; each run's rows in row order
        members = order[at]
        order[at] = members[np.lexsort((keys[rows_at(rows, members)], ranked[at]))]
    return order


def group_sizes(groups: np.ndarray) -> np.ndarray:
    """How many rows share each row's group label; by counting when labels run from 0 (`sky.components`)."""
    if len(groups) and 0 <= groups.min() and groups.max() < 2 * len(groups):
        return np.bincount(groups)[groups]
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    return counts[inverse]


def inverse_permutation(permutation: np.ndarray) -> np.ndarray:
    """The inverse of a permutation of 0..n-1: a rank from an order, or an order from a rank."""
    inverse = np.empty(len(permutation), dtype=np.int64)
    inverse[permutation] = np.arange(len(permutation))
    return inverse


def rows_at(rows: np.ndarray | None, at: IndexT) -> np.ndarray | IndexT:
    """`rows[at]`; `at` itself (index array or slice) when `rows` is None: every row, with no 8-byte-a-row index."""
    return at if rows is None else rows[at]


def of_rows(column: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    """`column[rows]`; the column itself (no copy) when `rows` is None (every row)."""
    return column if rows is None else column[rows]
