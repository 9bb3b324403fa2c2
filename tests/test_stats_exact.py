"""The fast paths of the statistics give exactly what a plain numpy computation of each statistic gives.

Random chunks with NaN, +-inf, zeros, subnormals, values near float32's limits and many ties; several
chunks per accumulator, so that chunks skipping the extremes scan are covered.
"""

from __future__ import annotations

import numpy as np
import pytest

from cutout_etl.steps.sky_level import MAD_TO_SIGMA, chunk_sky
from cutout_etl.steps.stats import BandStats, _shifted_sums

SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-40, 3e38, -3e38, 2e-8, 1.5e-8], np.float32)


def messy_chunk(rng: np.random.Generator, shape: tuple[int, ...], kind: int) -> np.ndarray:
    if kind == 0:  # many ties and zeros
        images = rng.integers(-3, 4, shape).astype(np.float32)
    else:
        images = (rng.normal(rng.normal(0, 2), 1, shape) * 10.0 ** rng.integers(-14, 2)).astype(np.float32)
    if kind >= 2:
        planted = rng.random(shape) < 0.2
        images[planted] = rng.choice(SPECIAL, planted.sum())
    if kind == 3 and len(images):
        images[: len(images) // 2, :, :, 0] = np.nan  # cutouts with no valid pixel in a band
    return images


def chunks(seed: int, count: int = 40):
    rng = np.random.default_rng(seed)
    for trial in range(count):
        shape = (int(rng.integers(1, 25)), int(rng.integers(1, 13)), int(rng.integers(1, 13)), int(rng.integers(1, 5)))
        yield trial, messy_chunk(rng, shape, trial % 4), int(rng.integers(1, 6))


def plain_median(values: np.ndarray) -> float:
    """Mean of the two middle float32 values, in float64 (NaN if none)."""
    if len(values) == 0:
        return np.nan
    s = np.sort(values)
    return (np.float64(s[(len(s) - 1) // 2]) + s[len(s) // 2]) / 2


def plain_sky(image: np.ndarray, border: int, method: str) -> tuple[float, float]:
    """One cutout-band's sky median and sigma by hand, looping over the frame's sides."""
    h, w = image.shape
    end_row, end_col = max(border, h - border), max(border, w - border)
    middle = image[border:end_row]
    rows = [image[:border], image[end_row:]]
    columns = [middle[:, :border].T, middle[:, end_col:].T]
    frame = np.concatenate([side.ravel() for side in rows + columns])
    pairs = [(line[2:], line[:-2]) for side in rows + columns for line in side if len(line) > 2]
    if method == "mad" or not pairs:
        valid = frame[np.isfinite(frame)]
        median = plain_median(valid)
        return median, MAD_TO_SIGMA * plain_median(np.abs(valid - np.float32(median)))
    valid = frame[np.isfinite(frame) & (frame != 0)]
    with np.errstate(over="ignore", invalid="ignore"):
        diffs = np.concatenate([a - b for a, b in pairs])
        usable = np.concatenate([np.isfinite(a) & (a != 0) & np.isfinite(b) & (b != 0) for a, b in pairs])
        diffs = diffs[usable & np.isfinite(diffs)]
        center = np.float32(plain_median(diffs))
        sigma = MAD_TO_SIGMA * plain_median(np.abs(diffs - center)) / np.sqrt(2.0)
    median = plain_median(valid)
    return (np.nan, np.nan) if np.isnan(median) or np.isnan(sigma) else (median, sigma)


@pytest.mark.parametrize("method", ["lag2", "mad"])
def test_chunk_sky_equals_a_plain_computation_per_cutout(method):
    for trial, images, border in chunks(seed=1 if method == "lag2" else 2):
        median, sigma = chunk_sky(images, border, method)
        for i, b in np.ndindex(median.shape):
            expected = plain_sky(images[i, :, :, b], border, method)
            # == on purpose: the sign of a zero median (a tie of -0 and +0 in "mad") is the sort's choice
            assert np.array_equal([median[i, b], sigma[i, b]], expected, equal_nan=True), (trial, i, b, border)


def top16_counts(values: np.ndarray) -> np.ndarray:
    keys, counts = np.unique(values.view(np.uint32) >> 16, return_counts=True)
    out = np.zeros(1 << 16, np.int64)
    out[keys] = counts
    return out


def test_update_equals_plain_counts_histograms_and_extremes_over_many_chunks():
    rng = np.random.default_rng(3)
    parts = [messy_chunk(rng, (int(rng.integers(0, 30)), 9, 7, 3), kind) for kind in [1, 2, 1, 1, 3, 0, 1, 2] * 3]
    acc = BandStats(3, border=2)
    for part in parts:
        acc.update(part)
    images = np.concatenate(parts)
    summary = acc.summary()["bands"]
    for band, stats in enumerate(summary.values()):
        x = images[..., band]
        finite = x[np.isfinite(x)]
        per_cutout_invalid = (~np.isfinite(x)).reshape(len(x), -1).sum(axis=1)
        assert np.array_equal(acc._hist[band], top16_counts(x.ravel()))
        assert stats["finite_pixels"] == finite.size and stats["nan_pixels"] == np.isnan(x).sum()
        assert stats["inf_pixels"] == np.isinf(x).sum() and stats["zero_pixels"] == (x == 0).sum()
        assert stats["saturated_pixels"] == (finite >= np.float32(1.5e-8)).sum()
        assert stats["cutouts_with_invalid"] == (per_cutout_invalid > 0).sum()
        assert stats["cutouts_no_finite"] == (per_cutout_invalid == x[0].size).sum()
        assert stats["min"] == finite.min() and stats["max"] == finite.max()


def test_shifted_sums_skip_invalid_pixels_exactly_as_filling_them_with_the_shift():
    rng = np.random.default_rng(4)
    for kind in (1, 2, 3):
        images = messy_chunk(rng, (300, 9, 9, 4), kind)
        shift = np.array([0.5, -1e-12, 3.0, 0.0], np.float32)
        flat = images.reshape(len(images), -1)
        invalid = np.flatnonzero(~np.isfinite(flat))
        filled = flat.copy()
        filled.reshape(-1)[invalid] = shift[invalid % 4]
        centred = filled.astype(np.float64) - np.tile(shift.astype(np.float64), flat.shape[1] // 4)
        s1, s2 = _shifted_sums(flat, shift.astype(np.float64), invalid if len(invalid) else None)
        # Plain sums in the same order (blocks of rows, then positions): the same float64 values, bit for bit.
        rows = max(1, (1 << 21) // (8 * flat.shape[1]))
        blocks = [centred[i : i + rows] for i in range(0, len(centred), rows)]
        p1 = sum((b.sum(axis=0) for b in blocks), np.zeros(flat.shape[1])).reshape(-1, 4).sum(axis=0)
        p2 = sum((np.einsum("ij,ij->j", b, b) for b in blocks), np.zeros(flat.shape[1])).reshape(-1, 4).sum(axis=0)
        assert np.array_equal(s1, p1) and np.array_equal(s2, p2)
