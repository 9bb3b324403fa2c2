"""The demo's pixels: sources drawn as Gaussian mixtures convolved with the PSF, plus correlated sky and shot noise."""

from __future__ import annotations

import numpy as np

from .demo_sources import (
    BANDS,
    CLASS_CODE,
    DEV,
    EXP,
    FWHM_PER_SIGMA,
    IMAGE_SIZE,
    PIXEL_SCALE,
    POINT,
    PSF_BAND_FACTOR,
    PSF_SIGMA_RATIO,
    PSF_WEIGHTS,
    SHOT_FACTOR,
    SKY_SIGMA,
    class_sources,
    neighbours,
    stream,
)

# Neighbouring-pixel noise correlation ~0.2: separable kernel [a, 1, a]
# with 2a / (1 + 2a^2) = 0.2.
_NOISE_KERNEL_A = 0.1021

_CHUNK = 256  # objects rendered at a time


def render_block(key: str, n: int, seed: int) -> np.ndarray:
    """Render ``n`` distinct objects of one class, (n, 36, 36, 4) float32."""
    code = CLASS_CODE[key]
    src = class_sources(key, n, seed, code)
    centre = 0.5 * (IMAGE_SIZE - 1) + stream(seed, code, "centre").uniform(-0.5, 0.5, (n, 2))
    fwhm_r = stream(seed, code, "seeing").uniform(0.68, 0.85, n)
    jitter = stream(seed, code, "seeing-band").uniform(0.97, 1.03, (n, len(BANDS)))
    psf_sigma = fwhm_r[:, None] * PSF_BAND_FACTOR * jitter / (FWHM_PER_SIGMA * PIXEL_SCALE)

    model = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE, len(BANDS)), dtype=np.float32)
    r_e_px = src["r_e"] / PIXEL_SCALE
    if key == "GALAXY":
        groups = [(np.flatnonzero(~src["dev"]), EXP), (np.flatnonzero(src["dev"]), DEV)]
    else:
        groups = [(np.arange(n), POINT)]
    for idx, mix in groups:
        if idx.size:
            model[idx] = _render_sources(
                centre[idx], src["flux"][idx], mix, r_e_px[idx], src["q"][idx], src["theta"][idx], psf_sigma[idx]
            )

    nb = neighbours(n, seed, code, src["flux"])
    nb_re_px = nb["r_e"] / PIXEL_SCALE
    extended = nb_re_px > 0
    for idx, mix in ((np.flatnonzero(nb["has"] & extended), EXP), (np.flatnonzero(nb["has"] & ~extended), POINT)):
        if idx.size:
            model[idx] += _render_sources(
                centre[idx] + nb["dxy"][idx],
                nb["flux"][idx],
                mix,
                nb_re_px[idx],
                nb["q"][idx],
                nb["theta"][idx],
                psf_sigma[idx],
            )

    depth = stream(seed, code, "depth").uniform(0.8, 1.2, (n, len(BANDS)))
    sigma = (SKY_SIGMA * depth).astype(np.float32)
    model += _sky_noise(stream(seed, code, "sky-noise"), n) * sigma[:, None, None, :]
    shot = np.sqrt(np.maximum(model, 0) * (SHOT_FACTOR * depth**2).astype(np.float32)[:, None, None, :])
    model += shot * stream(seed, code, "shot-noise").standard_normal(model.shape, dtype=np.float32)
    return model


def _sky_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-variance Gaussian noise, correlated ~0.2 between adjacent pixels."""
    a = np.float32(_NOISE_KERNEL_A)
    white = rng.standard_normal((n, IMAGE_SIZE + 2, IMAGE_SIZE + 2, len(BANDS)), dtype=np.float32)
    rows = white[:, 1:-1] + a * (white[:, :-2] + white[:, 2:])
    both = rows[:, :, 1:-1] + a * (rows[:, :, :-2] + rows[:, :, 2:])
    both *= np.float32(1.0 / (1.0 + 2.0 * a * a))
    return both


def _render_sources(
    centre: np.ndarray,
    flux: np.ndarray,
    mixture: tuple[np.ndarray, np.ndarray],
    r_e_px: np.ndarray,
    q: np.ndarray,
    theta: np.ndarray,
    psf_sigma: np.ndarray,
) -> np.ndarray:
    """Sources made of Gaussians, convolved analytically with the PSF.

    ``centre`` (m, 2) is x (column), y (row) in pixels; ``flux`` (m, 4) in
    maggies; ``r_e_px`` the semi-major half-light radius in pixels (0 for a
    point source); ``psf_sigma`` (m, 4) the PSF core sigma in pixels. Each
    Gaussian gets an extra variance of 1/12 px^2 to approximate integration
    over the pixel; values are flux per pixel, sampled at pixel centres.
    """
    m = len(flux)
    out = np.zeros((m, IMAGE_SIZE, IMAGE_SIZE, len(BANDS)), dtype=np.float32)
    grid = np.arange(IMAGE_SIZE, dtype=np.float64)
    cos, sin = np.cos(theta), np.sin(theta)
    unit_xx = cos**2 + (q * sin) ** 2
    unit_yy = sin**2 + (q * cos) ** 2
    unit_xy = (1.0 - q**2) * sin * cos
    for start in range(0, m, _CHUNK):
        sl = slice(start, min(start + _CHUNK, m))
        dx = (grid[None, :] - centre[sl, 0:1]).astype(np.float32)[:, None, :, None]
        dy = (grid[None, :] - centre[sl, 1:2]).astype(np.float32)[:, :, None, None]
        dx2, dy2, dxy = dx * dx, dy * dy, dx * dy
        acc = out[sl]
        r2 = r_e_px[sl] ** 2
        for w_k, v_k in zip(*mixture):
            for w_p, ratio in zip(PSF_WEIGHTS, PSF_SIGMA_RATIO):
                blur = (ratio * psf_sigma[sl]) ** 2 + 1.0 / 12.0  # (c, 4)
                cxx = (v_k * r2 * unit_xx[sl])[:, None] + blur
                cyy = (v_k * r2 * unit_yy[sl])[:, None] + blur
                cxy = (v_k * r2 * unit_xy[sl])[:, None] + 0.0 * blur
                det = cxx * cyy - cxy**2
                norm = (w_k * w_p * flux[sl] / (2.0 * np.pi * np.sqrt(det))).astype(np.float32)
                a = (-0.5 * cyy / det).astype(np.float32)[:, None, None, :]
                b = (cxy / det).astype(np.float32)[:, None, None, :]
                c = (-0.5 * cxx / det).astype(np.float32)[:, None, None, :]
                arg = b * dxy
                arg += a * dx2
                arg += c * dy2
                np.exp(arg, out=arg)
                arg *= norm[:, None, None, :]
                acc += arg
    return out
