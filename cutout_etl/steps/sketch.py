"""The quantile sketch of `stats`: fixed bins on the top 16 bits of each float32 (numpy only).

Quantile sketch and its error bound
-----------------------------------
A finite float32 value is binned by the top 16 bits of its bit pattern (sign,
8 exponent bits, 7 mantissa bits): 65536 fixed bins per band, disjoint value
intervals that are ordered by value once the negative half is reversed.  In
the binade [2**e, 2**(e+1)) a bin is 2**(e-7) wide; below 2**-126
(subnormals) every bin is 2**-133 wide.

Let x_(1) <= ... <= x_(n) be the finite pixels of a band and
k = min(max(ceil(q * n), 1), n): x_(k) is exactly what
``np.quantile(x, q, method="inverted_cdf")`` returns.  Walking the cumulative
counts finds the bin holding x_(k) with no error (up to the sign of a zero:
-0.0 and +0.0 sit in adjacent bins), and the sketch returns that bin's
midpoint.  Hence

    |estimate - x_(k)| <= quantile_bound(x_(k))

where `quantile_bound(v)` is the half-width of the bin holding float32(v):
2**(e-8) <= 2**-8 * |v| for |v| in [2**e, 2**(e+1)), and 2**-134 for
|v| < 2**-126.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import numpy as np

NBINS = 1 << 16
_KEYS = np.arange(NBINS, dtype=np.uint32)
_EXPONENT = (_KEYS >> 7) & 0xFF
POSITIVE_INF_KEY = 0x7F80
NONFINITE_POSITIVE = slice(POSITIVE_INF_KEY, 0x8000)
NONFINITE_NEGATIVE = slice(0xFF80, NBINS)
# Keys in ascending value order: negatives run from most negative (0xFFFF)
# down to -0 (0x8000), then +0 (0x0000) up to the positive NaNs (0x7FFF).
_ASCENDING = np.concatenate([np.arange(0xFFFF, 0x7FFF, -1), np.arange(0x8000)])
_FINITE_ASCENDING = _ASCENDING[_EXPONENT[_ASCENDING] != 0xFF]
# High 16-bit half of a native float32 when viewed as two uint16.
_HIGH_HALF = 1 if sys.byteorder == "little" else 0


def _bin_midpoints() -> np.ndarray:
    with np.errstate(invalid="ignore"):
        low = np.abs((_KEYS << 16).view(np.float32).astype(np.float64))
    half = np.ldexp(1.0, np.maximum(_EXPONENT, 1).astype(np.int64) - 135)
    return np.where(_KEYS & 0x8000, -(low + half), low + half)


_MIDPOINTS = _bin_midpoints()
_FINITE_MIDPOINTS = _MIDPOINTS[_FINITE_ASCENDING]


def _bin_edges() -> tuple[np.ndarray, np.ndarray]:
    """The least and the greatest float32 value of each finite bin, in ascending bin order, as float64."""
    keys = _FINITE_ASCENDING.astype(np.uint32) << 16
    smallest_magnitude, largest_magnitude = keys.view(np.float32), (keys | 0xFFFF).view(np.float32)
    negative = (_FINITE_ASCENDING & 0x8000) != 0
    low = np.where(negative, largest_magnitude, smallest_magnitude).astype(np.float64)
    high = np.where(negative, smallest_magnitude, largest_magnitude).astype(np.float64)
    return low, high


_FINITE_LOW_EDGES, _FINITE_HIGH_EDGES = _bin_edges()


def quantile_bound(value: float) -> float:
    """Absolute error bound of a sketch quantile whose exact value is `value`.

    The half-width of the bin holding float32(value): 2**(e-8) for |value| in
    [2**e, 2**(e+1)) (so at most 2**-8 * |value|), 2**-134 below 2**-126.
    """
    with np.errstate(over="ignore"):
        magnitude = abs(float(np.float32(value)))
    if not math.isfinite(magnitude):
        return math.inf
    if magnitude < 2.0**-126:
        return 2.0**-134
    return math.ldexp(1.0, math.frexp(magnitude)[1] - 9)


def _bin_keys(values: np.ndarray) -> np.ndarray:
    """The 16-bit bin key of each native float32 value of shape (..., B), as (M, B)."""
    n_bands = values.shape[-1]
    return values.reshape(-1, n_bands).view(np.uint16)[:, _HIGH_HALF::2]


def bit_histogram(values: np.ndarray) -> list[np.ndarray]:
    """Count native float32 values of shape (..., B) into 65536 bins per band.

    A list of B count arrays, not one (B, 65536) array: stacking them costs
    a fresh 2 MB array per chunk, which page faults cost more than counting.
    A view whose last axis is contiguous (the image field of structured rows)
    is not copied: each band's keys go straight to the intp array bincount
    counts (it would make that copy itself), ~1.5x faster than copying first.
    """
    if values.ndim < 2 or values.strides[-1] != values.itemsize:
        values = np.ascontiguousarray(values)
    keys = values.view(np.uint16)[..., _HIGH_HALF::2]
    return [np.bincount(keys[..., band].astype(np.intp).reshape(-1), minlength=NBINS) for band in range(keys.shape[-1])]


def count_into(hist: np.ndarray, values: np.ndarray) -> None:
    """Add a few float32 values of shape (N, B) to the (B, 65536) counts `hist`."""
    keys = _bin_keys(values)
    np.add.at(hist, (np.broadcast_to(np.arange(keys.shape[1]), keys.shape), keys), 1)


def _rank(n: int, q: float) -> int:
    """1-based rank of numpy's inverted-CDF quantile q of n values."""
    return min(max(math.ceil(n * q), 1), n)


def sketch_quantiles(counts: np.ndarray, qs: Sequence[float]) -> list[float | None]:
    cumulative = np.cumsum(_ascending_finite(counts))
    n = int(cumulative[-1])
    if n == 0:
        return [None] * len(qs)
    bins = np.searchsorted(cumulative, [_rank(n, q) for q in qs], side="left")
    return [float(v) for v in _FINITE_MIDPOINTS[bins]]


def _ascending_finite(counts: np.ndarray) -> np.ndarray:
    """counts[_FINITE_ASCENDING] from two slices (negatives reversed): cheaper than the gather."""
    return np.concatenate([counts[0xFF7F:0x7FFF:-1], counts[:POSITIVE_INF_KEY]])


def chunk_profile(hist: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per band: the sketch median as float32, and the least and the greatest value the occupied finite
    bins can hold, as float64 (+inf and -inf for an empty band).

    The median is 0 for an empty band, and where it falls in a bin of +-0: those bins also hold every
    value below 2**-133 in magnitude, and their midpoint (2**-134) can lie ~10**4 times above all the
    values, which would cost the moments' shifted sums (stats._shifted_sums) their conditioning.
    """
    shift, low, high = np.zeros(len(hist), np.float32), np.full(len(hist), np.inf), np.full(len(hist), -np.inf)
    for band, counts in enumerate(hist):
        cumulative = np.cumsum(_ascending_finite(counts))
        n = int(cumulative[-1])
        if n:
            first, median, last = np.searchsorted(cumulative, [1, _rank(n, 0.5), n], side="left")
            shift[band] = 0.0 if _FINITE_ASCENDING[median] & 0x7FFF == 0 else _FINITE_MIDPOINTS[median]
            low[band], high[band] = _FINITE_LOW_EDGES[first], _FINITE_HIGH_EDGES[last]
    return shift, low, high


def sketch_mad(counts: np.ndarray, median: float) -> float:
    ascending = _ascending_finite(counts)
    occupied = np.flatnonzero(ascending)
    deviation = np.abs(_FINITE_MIDPOINTS[occupied] - median)
    order = np.argsort(deviation, kind="stable")
    cumulative = np.cumsum(ascending[occupied][order])
    at = np.searchsorted(cumulative, _rank(int(cumulative[-1]), 0.5), side="left")
    return float(deviation[order][at])
