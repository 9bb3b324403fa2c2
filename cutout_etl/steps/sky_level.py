"""Per-cutout sky level and noise, measured on the outer frame of each cutout (numpy only).

Sky level: per cutout and band, the median of the valid frame pixels (mean of
the two middle float32 values, in float64). Sky noise, by method:

* ``lag2`` (the default since statistics record ``sky_method``): valid pixels
  are finite and not exactly 0 (0 is what a cutout holds where no exposure
  covered it). The noise is 1.4826 * MAD / sqrt(2) of the differences between
  pixels two apart along each side of the frame (x[j + 2] - x[j], rows for the
  top and bottom strips, columns for the sides), a difference being used only
  when both pixels are valid. The light of an extended source or a neighbour
  reaching the frame varies slowly and cancels in the differences, where it
  inflates a MAD of the pixels themselves; lag 2 rather than 1 because
  resampled coadds correlate adjacent pixels (~0.2), which would bias a lag-1
  estimate low.
* ``mad``: 1.4826 * the median of |x - median| of the finite frame pixels,
  zeros included (statistics written before ``sky_method`` existed; verify
  recomputes those with it).

Deviations are formed in float32 (~1e-7 relative rounding, far below 2**-8).
These float64 values are cast to float32 and sketched the same way, so the
statement above holds for the float32-cast per-cutout values.

How: the frame is gathered once as (cutout x band, pixel) rows, invalid pixels set to NaN, and the rows
sorted (numpy's SIMD sort costs less than a partition per row; NaN sorts last). A median is read off a
sorted row; a MAD is the k-th smallest deviation from it, found by a binary search on the sorted row
(`_kth_deviation`) instead of sorting the deviations. In ``mad``, where -0 and +0 both count, the sign of
a zero median from a tie of the two is whichever the sort leaves in the middle (as with the partition
before).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

MAD_TO_SIGMA = 1.4826
SKY_METHODS = ("lag2", "mad")
DEFAULT_SKY_METHOD = "lag2"
LEGACY_SKY_METHOD = "mad"  # what statistics without a recorded sky_method used


def _frame_sides(images: np.ndarray, border: int) -> tuple[np.ndarray, ...]:
    """The frame's four sides of (N, H, W, B) images as views, each (N, lines, length, B), lag-2 pairs along a line.

    Top and bottom strips run by row, the left and right strips (rows between them) by column.
    """
    h, w = images.shape[1:3]
    inner_end_row, inner_end_col = max(border, h - border), max(border, w - border)
    middle = images[:, border:inner_end_row]
    top, bottom = images[:, :border], images[:, inner_end_row:]
    return top, bottom, middle[:, :, :border].swapaxes(1, 2), middle[:, :, inner_end_col:].swapaxes(1, 2)


def _border_frame(images: np.ndarray, border: int) -> np.ndarray:
    """The frame pixels of each cutout and band as (N * B, K), side after side, line after line.

    Sliced side by side: ~1.8x faster than one fancy-indexed gather of the frame.
    """
    n, n_bands = len(images), images.shape[-1]
    sides = _frame_sides(images, border)
    sizes = [side.shape[1] * side.shape[2] for side in sides]
    frame = np.empty((n, n_bands, sum(sizes)), images.dtype)
    start = 0
    for side, size in zip(sides, sizes):
        frame[:, :, start : start + size] = side.reshape(n, size, n_bands).transpose(0, 2, 1)
        start += size
    return frame.reshape(n * n_bands, -1)


def _no_coverage_to_nan(frame: np.ndarray) -> None:
    """Set 0 (no coverage) and non-finite pixels to NaN, in place."""
    with np.errstate(invalid="ignore", divide="ignore"):
        frame *= frame / frame  # x / x is exactly 1 for finite non-zero x, NaN for 0, +-inf and NaN


def _nonfinite_to_nan(frame: np.ndarray) -> None:
    infinite = np.isinf(frame)
    if infinite.any():
        frame[infinite] = np.nan


@lru_cache(maxsize=16)
def _unpaired(h: int, w: int, border: int) -> np.ndarray:
    """Columns j of the frame rows where pixels j and j + 2 lie on different lines (no lag-2 pair)."""
    sides = _frame_sides(np.empty((0, h, w, 1), np.float32), border)
    lengths = [side.shape[2] for side in sides for _ in range(side.shape[1])]
    line = np.repeat(np.arange(len(lengths)), lengths)  # the line of each frame column
    return np.flatnonzero(line[2:] != line[:-2])


def _lag2_differences(frame: np.ndarray, unpaired: np.ndarray) -> np.ndarray:
    """x[j + 2] - x[j] along the frame rows.

    NaN where either pixel is NaN, where the two are not on one line, or where the difference overflows.
    """
    try:
        with np.errstate(over="raise"):
            out = frame[:, 2:] - frame[:, :-2]
    except FloatingPointError:  # finite pixels too far apart for float32: not a noise sample
        with np.errstate(over="ignore"):
            out = frame[:, 2:] - frame[:, :-2]
        _nonfinite_to_nan(out)
    out[:, unpaired] = np.nan
    return out


def _valid_counts(rows: np.ndarray, nan_columns: int = 0) -> np.ndarray:
    """Number of non-NaN values in each sorted row (NaN sorts last) that has at least `nan_columns` NaN."""
    count = np.full(len(rows), rows.shape[1] - nan_columns)
    if nan_columns >= rows.shape[1]:
        return count
    partial = np.flatnonzero(np.isnan(rows[:, rows.shape[1] - nan_columns - 1]))
    if len(partial):
        count[partial] = rows.shape[1] - np.isnan(rows[partial]).sum(axis=1)
    return count


def _sorted_medians(rows: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Medians of the first `count` values of each sorted row (NaN if none): mean of the two middles in float64."""
    index = np.arange(len(rows))
    safe = np.maximum(count, 1)
    median = (rows[index, (safe - 1) // 2].astype(np.float64) + rows[index, safe // 2]) / 2
    median[count == 0] = np.nan
    return median


def _kth_deviation(
    rows: np.ndarray, index: np.ndarray, count: np.ndarray, center: np.ndarray, k: np.ndarray
) -> np.ndarray:
    """The k-th smallest |x - center| (float32, 1 <= k <= count) of the first `count` values of sorted rows[index].

    The k values of a sorted row closest to `center` are k consecutive values: a binary search finds the first
    window where the value leaving it is no farther than the one entering it (k-closest-elements search). Float32
    rounding of the differences is monotone, so the window holds the k smallest float32 deviations.
    """
    low, high = np.zeros(len(index), np.intp), count - k
    last = rows.shape[1] - 1
    with np.errstate(over="ignore"):  # deviations beyond float32's range are inf, still in order
        while (active := low < high).any():
            mid = (low + high) // 2
            leaving = center - rows[index, mid]
            entering = rows[index, np.minimum(mid + k, last)] - center
            right = active & (leaving > entering)
            low = np.where(right, mid + 1, low)
            high = np.where(active & ~right, mid, high)
        return np.maximum(np.abs(rows[index, low] - center), np.abs(rows[index, low + k - 1] - center))


def _sorted_sky(rows: np.ndarray, nan_columns: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Median and MAD sigma of the non-NaN values of sorted rows (NaN where none)."""
    count = _valid_counts(rows, nan_columns)
    median = _sorted_medians(rows, count)
    safe = np.maximum(count, 1)
    both = np.concatenate([(safe - 1) // 2, safe // 2]) + 1  # ranks of the two middle deviations
    index = np.tile(np.arange(len(rows)), 2)
    center = median.astype(np.float32)[index]
    middles = _kth_deviation(rows, index, np.concatenate([safe, safe]), center, both).reshape(2, -1)
    mad = (middles[0].astype(np.float64) + middles[1]) / 2
    mad[count == 0] = np.nan
    return median, MAD_TO_SIGMA * mad


def chunk_sky(images: np.ndarray, border: int, method: str = DEFAULT_SKY_METHOD) -> tuple[np.ndarray, np.ndarray]:
    """Per-cutout sky median and noise sigma, each (N, B); NaN (both) where skipped."""
    if method not in SKY_METHODS:
        raise ValueError(f"sky method must be one of {', '.join(SKY_METHODS)} (got {method!r})")
    n, h, w, n_bands = images.shape
    frame = _border_frame(images, border)
    unpaired = _unpaired(h, w, border)
    if method == "mad" or len(unpaired) == max(frame.shape[1] - 2, 0):  # mad, or no lag-2 pair
        _nonfinite_to_nan(frame)
        frame.sort(axis=1)
        median, sigma = _sorted_sky(frame)
    else:
        _no_coverage_to_nan(frame)
        differences = _lag2_differences(frame, unpaired)
        frame.sort(axis=1)
        differences.sort(axis=1)
        median = _sorted_medians(frame, _valid_counts(frame))
        sigma = _sorted_sky(differences, len(unpaired))[1] / np.sqrt(2.0)
        median[np.isnan(sigma)] = np.nan
        sigma[np.isnan(median)] = np.nan
    return median.reshape(n, n_bands), sigma.reshape(n, n_bands)
