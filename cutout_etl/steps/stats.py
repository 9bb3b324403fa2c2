"""Mergeable per-band pixel statistics of image cutouts (no I/O, numpy only).

Images are chunks of shape (N, H, W, B), float32, channels last.  A
`BandStats` accumulates, per band, counts of invalid pixels, float64 moments
of the finite pixels, a quantile sketch of the finite pixels and a sketch of
the per-cutout sky level and noise measured on the outer `border` frame.
Accumulators merge exactly (integer counts) apart from the float64 moments,
which merge with Chan, Golub & LeVeque's pairwise update.

The quantile sketch and its error bound: see `sketch.py`.

The per-cutout sky level and noise: see `sky_level.py`.

`mad_sigma` is 1.4826 * MAD with MAD = the inverted-CDF median of |x - m|
and m the inverted-CDF median.  From the sketch each |x - m| is replaced by
|midpoint(x) - estimate(m)|, which moves it by at most 2**-8 * (|x| + |m|),
so |MAD_sketch - MAD| <= 2**-8 * (MAD + 2 * |m|).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .sketch import (
    NBINS,
    NONFINITE_NEGATIVE,
    NONFINITE_POSITIVE,
    POSITIVE_INF_KEY,
    bit_histogram,
    chunk_profile,
    count_into,
    quantile_bound,
    sketch_mad,
    sketch_quantiles,
)
from .sky_level import DEFAULT_SKY_METHOD, MAD_TO_SIGMA, SKY_METHODS, chunk_sky

# MAD_TO_SIGMA and quantile_bound are part of what the statistics mean: importable from here.
__all__ = ["MAD_TO_SIGMA", "QUANTILES", "QUANTILE_METHOD", "SKY_QUANTILES", "BandStats", "quantile_bound"]

QUANTILES: tuple[float, ...] = (
    0.001,
    0.01,
    0.05,
    0.16,
    0.25,
    0.5,
    0.75,
    0.84,
    0.95,
    0.99,
    0.999,
)
SKY_QUANTILES: tuple[float, ...] = (0.16, 0.5, 0.84)

QUANTILE_METHOD = (
    "fixed-edge histogram of the top 16 bits of each float32 value (sign, "
    "exponent, 7 mantissa bits; 65536 bins per band); a quantile q is the "
    "midpoint of the bin holding the order statistic x_(ceil(q*n)) (numpy "
    "method='inverted_cdf'), within 2^-8*|x| of it (2^-134 below 2^-126); "
    "mad_sigma = 1.4826 * median(|x - median|) from bin midpoints, within "
    "1.4826 * 2^-8 * (MAD + 2|median|); sky values are cast to float32 "
    "before binning"
)

# Float64 scratch per block in the moment pass: a few MiB stays in cache and
# is ~2x faster than casting a whole chunk to float64 at once.
_BLOCK_BYTES = 1 << 21

_COUNTS = (
    "finite_pixels",
    "nan_pixels",
    "inf_pixels",
    "zero_pixels",
    "cutouts_with_invalid",
    "cutouts_no_finite",
    "saturated_pixels",
    "sky_cutouts",
    "sky_cutouts_skipped",
)


def _band_total(mask: np.ndarray, n_bands: int) -> np.ndarray:
    """Count True in (N, ..., B) per band, long contiguous axis first."""
    if np.count_nonzero(mask) <= mask.size // 16:  # sparse (a few no-coverage strips): index the True ones
        return np.bincount(np.flatnonzero(mask) % n_bands, minlength=n_bands)
    as_bytes = mask.reshape(len(mask), -1).view(np.uint8)  # ~2x faster than bool
    per_position = as_bytes.sum(axis=0, dtype=np.int64)
    return per_position.reshape(-1, n_bands).sum(axis=0)


def _nonfinite_indices(images: np.ndarray) -> np.ndarray:
    """Sorted flat indices of the NaN and +-inf pixels; only cutouts whose sum is not finite are searched."""
    flat = images.reshape(len(images), -1)
    with np.errstate(over="ignore", invalid="ignore"):  # a sum that overflows only adds a row to search
        rows = np.flatnonzero(~np.isfinite(flat.sum(axis=1)))
    local = np.flatnonzero(~np.isfinite(flat[rows]))
    return rows[local // flat.shape[1]] * flat.shape[1] + local % flat.shape[1]


def _combine(
    n_a: np.ndarray, mean_a: np.ndarray, m2_a: np.ndarray, n_b: np.ndarray, mean_b: np.ndarray, m2_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Chan, Golub & LeVeque: mean and M2 of the union of two samples."""
    delta = mean_b - mean_a
    weight_b = n_b / np.maximum(n_a + n_b, 1)
    return mean_a + delta * weight_b, m2_a + m2_b + delta * delta * n_a * weight_b


def _shifted_sums(flat: np.ndarray, shift: np.ndarray, invalid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-band float64 sums of (x - shift) and (x - shift)**2 of (N, H*W*B), skipping the sorted flat indices `invalid`.

    The shift (a chunk median) keeps S2 - S1**2/n well conditioned when the
    mean is large compared with the spread. An invalid pixel adds exactly 0.
    """
    n_bands, width = len(shift), flat.shape[1]
    shift_row = np.tile(shift, width // n_bands)
    rows = max(1, _BLOCK_BYTES // (8 * width))
    scratch = np.empty((rows, width))
    s1 = np.zeros(width)
    s2 = np.zeros(width)
    for start in range(0, len(flat), rows):
        block = scratch[: len(flat[start : start + rows])]
        # Cast, then subtract in float64: the same values as a mixed-type subtract, ~2x faster.
        np.copyto(block, flat[start : start + rows])
        np.subtract(block, shift_row, out=block)
        if invalid is not None:
            first, stop = np.searchsorted(invalid, [start * width, (start + len(block)) * width])
            block.reshape(-1)[invalid[first:stop] - start * width] = 0.0
        s1 += block.sum(axis=0)
        s2 += np.einsum("ij,ij->j", block, block)
    return s1.reshape(-1, n_bands).sum(axis=0), s2.reshape(-1, n_bands).sum(axis=0)


def _extremes(flat: np.ndarray, n_bands: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-band min and max of (N, H*W*B), long contiguous axis first."""
    low = flat.min(axis=0).reshape(-1, n_bands).min(axis=0)
    high = flat.max(axis=0).reshape(-1, n_bands).max(axis=0)
    return low.astype(np.float64), high.astype(np.float64)


def _masked_extremes(images: np.ndarray, bad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band min and max ignoring the pixels at flat indices `bad` (NaN if none left)."""
    values = images.reshape(len(images), -1).copy()
    values.reshape(-1)[bad] = np.nan
    n_bands = images.shape[-1]
    low = np.fmin.reduce(np.fmin.reduce(values, axis=0).reshape(-1, n_bands), axis=0)
    high = np.fmax.reduce(np.fmax.reduce(values, axis=0).reshape(-1, n_bands), axis=0)
    return low.astype(np.float64), high.astype(np.float64)


def _none_if_empty(n: int, value: float) -> float | None:
    return float(value) if n > 0 else None


def _quantile_dict(values: list[float | None], qs: Sequence[float]) -> dict:
    return {f"p{100 * q:g}": v for q, v in zip(qs, values)}


class BandStats:
    """Mergeable per-band statistics of image cutouts.

    Feed chunks with `update`, combine accumulators built on other chunks or
    processes with `merge`, read the result with `summary`.  Memory is fixed:
    three (B, 65536) int64 histograms plus a few per-band scalars.
    `saturated_pixels` counts finite pixels >= float32(saturation), as numpy
    compares float32 pixels with a Python float.
    """

    def __init__(
        self, n_bands: int, border: int = 4, saturation: float = 1.5e-8, sky_method: str = DEFAULT_SKY_METHOD
    ) -> None:
        if sky_method not in SKY_METHODS:
            raise ValueError(f"sky_method must be one of {', '.join(SKY_METHODS)} (got {sky_method!r})")
        if n_bands < 1:
            raise ValueError(f"n_bands must be at least 1 (got {n_bands})")
        if border < 1:
            raise ValueError(f"border must be at least 1 pixel (got {border})")
        if not saturation > 0:
            raise ValueError(f"saturation must be positive (got {saturation})")
        self.n_bands = n_bands
        self.border = border
        self.sky_method = sky_method
        self.saturation = float(saturation)
        self._saturation32 = np.float32(saturation)
        self._saturation_key = int(self._saturation32.view(np.uint32) >> 16)
        self.n_cutouts = 0
        self._counts = {name: np.zeros(n_bands, np.int64) for name in _COUNTS}
        self._sum = np.zeros(n_bands)
        self._mean = np.zeros(n_bands)
        self._m2 = np.zeros(n_bands)
        self._min = np.full(n_bands, np.inf)
        self._max = np.full(n_bands, -np.inf)
        self._hist = np.zeros((n_bands, NBINS), np.int64)
        self._sky_median_hist = np.zeros((n_bands, NBINS), np.int64)
        self._sky_sigma_hist = np.zeros((n_bands, NBINS), np.int64)

    def _as_chunk(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != self.n_bands:
            raise ValueError(f"expected images of shape (N, H, W, {self.n_bands}) (got {images.shape})")
        if images.dtype.kind != "f" or images.dtype.itemsize != 4:
            raise ValueError(f"expected float32 images (got {images.dtype})")
        if 0 in images.shape[1:3]:
            raise ValueError(f"expected non-empty images (got shape {images.shape})")
        return np.ascontiguousarray(images, dtype=np.float32)

    def update(self, images: np.ndarray) -> None:
        """Add a chunk of cutouts, shape (N, H, W, B), float32 (any byte order); N may be 0."""
        images = self._as_chunk(images)
        if len(images) == 0:
            return
        # The sky's sorts release the GIL, so they overlap the histogram
        # and moments (~1.5x faster per chunk on 2 cores); the thread lives
        # only for this call.
        with ThreadPoolExecutor(max_workers=1) as pool:
            sky = pool.submit(chunk_sky, images, self.border, self.sky_method)
            hist = bit_histogram(images)
            nonfinite = np.array([c[NONFINITE_POSITIVE].sum() + c[NONFINITE_NEGATIVE].sum() for c in hist])
            n_finite = images[..., 0].size - nonfinite
            # Flat indices of NaN/inf pixels; None selects the all-finite fast path.
            bad = _nonfinite_indices(images) if nonfinite.any() else None
            # Moments first: they merge against the finite count before this chunk.
            self._update_moments(images, hist, n_finite, bad)
            self._update_counts(images, hist, n_finite, bad)
            self._add_sky(*sky.result())
        for band, counts in enumerate(hist):
            self._hist[band] += counts
        self.n_cutouts += len(images)

    def _update_moments(
        self, images: np.ndarray, hist: list[np.ndarray], n: np.ndarray, bad: np.ndarray | None
    ) -> None:
        # A float32 shift (the chunk's sketch median), so that invalid pixels set to it add exactly 0.
        shift, low, high = chunk_profile(hist)
        flat = images.reshape(len(images), -1)
        s1, s2 = _shifted_sums(flat, shift.astype(np.float64), bad)
        safe_n = np.maximum(n, 1)
        chunk_mean = shift + s1 / safe_n
        chunk_m2 = np.maximum(s2 - s1 * s1 / safe_n, 0.0)
        self._mean, self._m2 = _combine(self._counts["finite_pixels"], self._mean, self._m2, n, chunk_mean, chunk_m2)
        self._sum += shift * n + s1
        # Most chunks cannot move the extremes: their occupied bins lie strictly inside (min, max).
        if ((n > 0) & ((low <= self._min) | (high >= self._max))).any():
            self._update_extremes(images, n, shift, bad)

    def _update_extremes(self, images: np.ndarray, n: np.ndarray, shift: np.ndarray, bad: np.ndarray | None) -> None:
        n_bands = self.n_bands
        flat = images.reshape(len(images), -1)
        if bad is not None:
            flat = flat.copy()
            flat.reshape(-1)[bad] = shift[bad % n_bands]
        low, high = _extremes(flat, n_bands)
        if bad is not None and ((low == shift) | (high == shift)).any():
            # The fill value is a bin midpoint and may lie outside the finite range.
            low, high = _masked_extremes(images, bad)
        self._min = np.fmin(self._min, np.where(n > 0, low, np.nan))
        self._max = np.fmax(self._max, np.where(n > 0, high, np.nan))

    def _update_counts(
        self,
        images: np.ndarray,
        hist: list[np.ndarray],
        n_finite: np.ndarray,
        bad: np.ndarray | None,
    ) -> None:
        n, h, w, n_bands = images.shape
        counts = self._counts
        counts["finite_pixels"] += n_finite
        posinf = np.zeros(n_bands, np.int64)
        if bad is not None:
            band, value = bad % n_bands, images.reshape(-1)[bad]
            nan = np.bincount(band[np.isnan(value)], minlength=n_bands)
            posinf = np.bincount(band[value == np.inf], minlength=n_bands)
            counts["nan_pixels"] += nan
            counts["inf_pixels"] += n * h * w - n_finite - nan
            per_cutout = np.bincount(bad // (h * w * n_bands) * n_bands + band, minlength=n * n_bands).reshape(
                n, n_bands
            )
            counts["cutouts_with_invalid"] += (per_cutout > 0).sum(axis=0)
            counts["cutouts_no_finite"] += (per_cutout == h * w).sum(axis=0)
        # Bins 0x0000 and 0x8000 hold +-0 and the tiniest subnormals.
        if any(c[0] or c[0x8000] for c in hist):
            counts["zero_pixels"] += _band_total(images == 0, n_bands)
        # Bins above the one holding the threshold count in full; only a
        # non-empty threshold bin needs comparing pixel by pixel.
        key = self._saturation_key
        if any(c[key] for c in hist):
            saturated = _band_total(images >= self._saturation32, n_bands) - posinf
        else:
            saturated = np.array([c[key + 1 : POSITIVE_INF_KEY].sum() for c in hist])
        counts["saturated_pixels"] += saturated

    def _add_sky(self, median: np.ndarray, sigma: np.ndarray) -> None:
        skipped = np.isnan(median).sum(axis=0)
        self._counts["sky_cutouts"] += len(median) - skipped
        self._counts["sky_cutouts_skipped"] += skipped
        # Sketched in float32 like the pixels (NaN rows land in unwalked bins).
        with np.errstate(over="ignore"):
            count_into(self._sky_median_hist, median.astype(np.float32))
            count_into(self._sky_sigma_hist, sigma.astype(np.float32))

    def merge(self, other: BandStats) -> BandStats:
        """Add `other` into this accumulator in place and return self.

        Raises ValueError if n_bands, border, saturation or sky_method differ.
        """
        mine = (self.n_bands, self.border, self.saturation, self.sky_method)
        theirs = (other.n_bands, other.border, other.saturation, other.sky_method)
        if mine != theirs:
            raise ValueError(
                f"cannot merge BandStats with different (n_bands, border, saturation, sky_method) (got {theirs} and {mine})"
            )
        n_self = self._counts["finite_pixels"].copy()
        self._mean, self._m2 = _combine(
            n_self,
            self._mean,
            self._m2,
            other._counts["finite_pixels"],
            other._mean,
            other._m2,
        )
        for name in _COUNTS:
            self._counts[name] += other._counts[name]
        self._sum += other._sum
        self._min = np.fmin(self._min, other._min)
        self._max = np.fmax(self._max, other._max)
        self._hist += other._hist
        self._sky_median_hist += other._sky_median_hist
        self._sky_sigma_hist += other._sky_sigma_hist
        self.n_cutouts += other.n_cutouts
        return self

    def summary(self, bands: Sequence[str] | None = None, softening_k: float = 3.0) -> dict:
        """JSON-serialisable statistics per band, None where undefined.

        Band names default to b0..b{B-1}; `softening_k` sets the asinh scale
        k * sky_sigma.p50 of the transform y = asinh((x - offset) / scale).
        """
        names = [f"b{i}" for i in range(self.n_bands)] if bands is None else list(bands)
        if len(names) != self.n_bands:
            raise ValueError(f"expected {self.n_bands} band names (got {len(names)})")
        if not (math.isfinite(softening_k) and softening_k > 0):
            raise ValueError(f"softening_k must be positive (got {softening_k})")
        return {
            "n_cutouts": self.n_cutouts,
            "quantile_method": QUANTILE_METHOD,
            "sky_method": self.sky_method,
            "bands": {name: self._band_summary(i, softening_k) for i, name in enumerate(names)},
        }

    def _band_summary(self, band: int, softening_k: float) -> dict:
        counts = {name: int(self._counts[name][band]) for name in _COUNTS}
        out: dict = {"cutouts": self.n_cutouts}
        out.update({k: v for k, v in counts.items() if not k.startswith("sky_")})
        out.update(self._band_moments(band, counts["finite_pixels"]))
        quantiles = sketch_quantiles(self._hist[band], QUANTILES)
        out["quantiles"] = _quantile_dict(quantiles, QUANTILES)
        median = quantiles[QUANTILES.index(0.5)]
        out["mad_sigma"] = None if median is None else MAD_TO_SIGMA * sketch_mad(self._hist[band], median)
        out.update(self._band_sky(band, counts, softening_k))
        return out

    def _band_moments(self, band: int, n: int) -> dict:
        variance = self._m2[band] / max(n, 1)
        values = {
            "sum": self._sum[band],
            "mean": self._mean[band],
            "m2": self._m2[band],
            "variance": variance,
            "std": math.sqrt(variance),
            "min": self._min[band],
            "max": self._max[band],
        }
        return {key: _none_if_empty(n, value) for key, value in values.items()}

    def _band_sky(self, band: int, counts: dict, softening_k: float) -> dict:
        medians = sketch_quantiles(self._sky_median_hist[band], SKY_QUANTILES)
        sigmas = sketch_quantiles(self._sky_sigma_hist[band], SKY_QUANTILES)
        offset, sigma = medians[1], sigmas[1]
        # Constant frames (no coverage, all zeros) give a zero noise: no softening can be derived.
        # Sigmas in float32's subnormal range are the zero bin of the sketch, not a noise level.
        scale = softening_k * sigma if sigma and sigma >= np.finfo(np.float32).tiny else None
        return {
            "sky_cutouts": counts["sky_cutouts"],
            "sky_cutouts_skipped": counts["sky_cutouts_skipped"],
            "sky_median": _quantile_dict(medians, SKY_QUANTILES),
            "sky_sigma": _quantile_dict(sigmas, SKY_QUANTILES),
            "asinh_softening": scale,
            "transform": {
                "kind": "asinh",
                "offset": offset,
                "scale": scale,
                "k": float(softening_k),
            },
        }
