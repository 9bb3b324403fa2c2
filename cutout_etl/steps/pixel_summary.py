"""Per-band pixel summary for `inspect`: min, max, sketch median and non-finite counts (numpy only).

The cheap subset of `stats.BandStats` (no moments, no per-cutout sky): what inspect prints per band.
Its fields mean what BandStats' fields of the same name mean: min and max of the finite pixels
(exact), `nan_pixels`, `inf_pixels`, `cutouts_no_finite` (cutouts with no finite pixel in that band),
and the median from the same 65,536-bin sketch (`sketch.py`), so it is approximate: the midpoint of the
bin holding numpy's inverted-CDF median of the finite pixels, within `quantile_bound(median)`
(<= 2^-8 * |median|) of it. Memory is fixed: one (B, 65536) int64 histogram.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .sketch import NBINS, bit_histogram, chunk_profile, quantile_bound, sketch_quantiles

MEDIAN_METHOD = "sketch median: within 2^-8 * |median| of the exact one (the midpoint of its 65536-bin histogram bin)"


class PixelSummary:
    """Mergeable per-band min, max, sketch median and counts of invalid pixels of image cutouts."""

    def __init__(self, n_bands: int) -> None:
        if n_bands < 1:
            raise ValueError(f"n_bands must be at least 1 (got {n_bands})")
        self.n_bands = n_bands
        self.n_pixels = 0  # per band
        self._hist = np.zeros((n_bands, NBINS), np.int64)
        self._min = np.full(n_bands, np.inf)
        self._max = np.full(n_bands, -np.inf)
        self._nan = np.zeros(n_bands, np.int64)
        self._inf = np.zeros(n_bands, np.int64)
        self._no_finite = np.zeros(n_bands, np.int64)

    def update(self, images: np.ndarray, all_finite: np.ndarray | None = None) -> None:
        """Add a chunk of cutouts (N, H, W, B), any float dtype (counted as float32, the output's type).

        `images` may be a view, e.g. the image field of structured rows: it is not copied when it is
        native float32. `all_finite` (per cutout: every pixel is finite), if known, spares a pass.
        """
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != self.n_bands:
            raise ValueError(f"expected images of shape (N, H, W, {self.n_bands}) (got {images.shape})")
        if images.dtype != np.float32 or not images.dtype.isnative:
            images, all_finite = images.astype(np.float32), None  # the cast may overflow to inf
        if len(images) == 0:
            return
        flat = images.reshape(len(images), -1)
        if all_finite is None:
            all_finite = np.isfinite(flat.sum(axis=1))
        hist = bit_histogram(images)
        for band, counts in enumerate(hist):
            self._hist[band] += counts
        self.n_pixels += images[..., 0].size
        suspect = np.flatnonzero(~all_finite)
        if len(suspect):
            self._add_invalid(flat[suspect].reshape(len(suspect), -1, self.n_bands))
        # As in BandStats: a chunk whose occupied finite bins lie strictly inside (min, max) cannot move them.
        _, low, high = chunk_profile(hist)
        if ((low <= self._min) | (high >= self._max)).any():
            self._add_extremes(flat, all_finite[:, None] if len(suspect) else True)

    def _add_extremes(self, flat: np.ndarray, where: np.ndarray | bool) -> None:
        """Min and max of the finite pixels of the cutouts `where` selects (long contiguous axis first)."""
        low = flat.min(axis=0, where=where, initial=np.inf).reshape(-1, self.n_bands).min(axis=0)
        high = flat.max(axis=0, where=where, initial=-np.inf).reshape(-1, self.n_bands).max(axis=0)
        self._min = np.minimum(self._min, low.astype(np.float64))
        self._max = np.maximum(self._max, high.astype(np.float64))

    def _add_invalid(self, pixels: np.ndarray) -> None:
        """Counts and finite extremes of the few cutouts (M, H*W, B) with a NaN or inf pixel."""
        finite = np.isfinite(pixels)
        nan = np.isnan(pixels).sum(axis=(0, 1))
        self._nan += nan
        self._inf += (~finite).sum(axis=(0, 1)) - nan
        self._no_finite += (~finite.any(axis=1)).sum(axis=0)
        self._min = np.minimum(self._min, np.where(finite, pixels, np.inf).min(axis=(0, 1)))
        self._max = np.maximum(self._max, np.where(finite, pixels, -np.inf).max(axis=(0, 1)))

    def merge(self, other: PixelSummary) -> PixelSummary:
        """Add `other` into this summary in place and return self."""
        if other.n_bands != self.n_bands:
            raise ValueError(f"cannot merge summaries of {other.n_bands} and {self.n_bands} bands")
        self.n_pixels += other.n_pixels
        self._hist += other._hist
        self._min, self._max = np.minimum(self._min, other._min), np.maximum(self._max, other._max)
        self._nan += other._nan
        self._inf += other._inf
        self._no_finite += other._no_finite
        return self

    def summary(self, bands: Sequence[str]) -> dict:
        """Per band: min, median, median_bound (its absolute error bound), max, and the invalid counts.

        min, median, max and median_bound are None for a band without a finite pixel.
        """
        return {name: self._band(i) for i, name in enumerate(bands)}

    def _band(self, band: int) -> dict:
        finite = self.n_pixels - int(self._nan[band]) - int(self._inf[band])
        median = sketch_quantiles(self._hist[band], [0.5])[0] if finite else None
        return {
            "min": float(self._min[band]) if finite else None,
            "median": median,
            "median_bound": None if median is None else quantile_bound(median),
            "max": float(self._max[band]) if finite else None,
            "nan_pixels": int(self._nan[band]),
            "inf_pixels": int(self._inf[band]),
            "cutouts_no_finite": int(self._no_finite[band]),
        }
