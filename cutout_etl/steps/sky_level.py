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
"""

from __future__ import annotations

import numpy as np

MAD_TO_SIGMA = 1.4826
SKY_METHODS = ("lag2", "mad")
DEFAULT_SKY_METHOD = "lag2"
LEGACY_SKY_METHOD = "mad"  # what statistics without a recorded sky_method used


def _border_frame(images: np.ndarray, border: int) -> np.ndarray:
    """Outer `border`-pixel frame of each cutout and band as (N * B, K)."""
    n, h, w, n_bands = images.shape
    inner_end_row, inner_end_col = max(border, h - border), max(border, w - border)
    middle = images[:, border:inner_end_row]
    parts = [
        images[:, :border],
        images[:, inner_end_row:],
        middle[:, :, :border],
        middle[:, :, inner_end_col:],
    ]
    parts = [p.reshape(n, -1, n_bands).transpose(0, 2, 1) for p in parts]
    # Filled in place: one fresh array instead of two (page faults dominate).
    frame = np.empty((n, n_bands, sum(p.shape[2] for p in parts)), np.float32)
    start = 0
    for part in parts:
        frame[:, :, start : start + part.shape[2]] = part
        start += part.shape[2]
    return frame.reshape(n * n_bands, -1)


def _row_medians(rows: np.ndarray) -> np.ndarray:
    """Median of each row of finite float32 values; reorders rows in place."""
    half = rows.shape[1] // 2
    # One kth is ~5x faster than two; the lower middle is then the max below.
    rows.partition(half, axis=1)
    upper = rows[:, half].astype(np.float64)
    if rows.shape[1] % 2:
        return upper
    return (rows[:, :half].max(axis=1) + upper) / 2


def _finite_row_sky(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and MAD sigma of rows that are all finite; overwrites rows."""
    median = _row_medians(rows)
    np.subtract(rows, median.astype(np.float32)[:, None], out=rows)
    np.abs(rows, out=rows)
    return median, MAD_TO_SIGMA * _row_medians(rows)


def _sorted_medians(rows: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Medians of the first `count` values of each sorted row (NaN if none)."""
    index = np.arange(len(rows))
    safe = np.maximum(count, 1)
    median = (rows[index, (safe - 1) // 2].astype(np.float64) + rows[index, safe // 2]) / 2
    median[count == 0] = np.nan
    return median


def _masked_row_sky(rows: np.ndarray, finite: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and MAD sigma of the finite values of each row (NaN if none)."""
    values = np.where(finite, rows, np.float32(np.nan))
    count = finite.sum(axis=1)
    values.sort(axis=1)  # NaN sorts last, so each row starts with its finite values
    median = _sorted_medians(values, count)
    deviation = np.abs(values - median.astype(np.float32)[:, None])
    deviation.sort(axis=1)
    return median, MAD_TO_SIGMA * _sorted_medians(deviation, count)


def _frame_sky(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row sky median and MAD sigma of a (R, K) frame; NaN where skipped."""
    finite = np.isfinite(frame)
    if finite.all():
        return _finite_row_sky(frame)
    clean = finite.all(axis=1)
    median, sigma = np.empty(len(frame)), np.empty(len(frame))
    median[clean], sigma[clean] = _finite_row_sky(frame[clean])
    median[~clean], sigma[~clean] = _masked_row_sky(frame[~clean], finite[~clean])
    return median, sigma


def _lag2_differences(images: np.ndarray, border: int) -> np.ndarray:
    """x[j + 2] - x[j] along each side of the frame, NaN where either pixel is invalid, as (N * B, K)."""
    n, h, w, n_bands = images.shape
    inner_end_row, inner_end_col = max(border, h - border), max(border, w - border)
    middle = images[:, border:inner_end_row]
    strips = [images[:, :border], images[:, inner_end_row:], middle[:, :, :border], middle[:, :, inner_end_col:]]
    parts = []
    for index, strip in enumerate(strips):
        strip = np.array(strip, dtype=np.float32)  # a small copy: the frame only
        strip[(strip == 0) | ~np.isfinite(strip)] = np.nan  # 0: no coverage
        diff = strip[:, :, 2:] - strip[:, :, :-2] if index < 2 else strip[:, 2:] - strip[:, :-2]
        parts.append(diff.reshape(n, -1, n_bands).transpose(0, 2, 1))
    return np.concatenate(parts, axis=2).reshape(n * n_bands, -1)


def chunk_sky(images: np.ndarray, border: int, method: str = DEFAULT_SKY_METHOD) -> tuple[np.ndarray, np.ndarray]:
    """Per-cutout sky median and noise sigma, each (N, B); NaN (both) where skipped."""
    if method not in SKY_METHODS:
        raise ValueError(f"sky method must be one of {', '.join(SKY_METHODS)} (got {method!r})")
    n, n_bands = len(images), images.shape[-1]
    frame = _border_frame(images, border)
    differences = _lag2_differences(images, border) if method == "lag2" else None
    if differences is None or differences.shape[1] == 0:  # mad, or a frame too small for lag-2 differences
        median, sigma = _frame_sky(frame)
    else:
        frame[frame == 0] = np.nan
        median = _frame_sky(frame)[0]
        sigma = _frame_sky(differences)[1] / np.sqrt(2.0)
        median[np.isnan(sigma)] = np.nan
        sigma[np.isnan(median)] = np.nan
    return median.reshape(n, n_bands), sigma.reshape(n, n_bands)
