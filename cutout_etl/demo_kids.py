"""The hard demo preset, ``demo-data --preset kids``: SYNTHETIC cutouts whose classes overlap as in KiDS.

No pixel comes from a telescope. The preset exists so that a preprocessing or a model can be judged on
data where the choice matters: on the default preset every reasonable preprocessing scores macro-F1
0.98-1.00. Files have the same layout as the default preset's (see `cutout_etl.demo`).

What is modelled on KiDS and spectroscopic samples (roughly; nothing is fitted to a real catalogue):

* magnitudes r ~ 17-23 in every class, faint-heavy (density rising as 10**(0.15-0.3 r)), so most objects
  sit where the sky noise matters: galaxies 17-22.5, quasars 17.5-23, stars 17-23;
* per-band PSF FWHM as in KiDS coadds, u ~1.0", g ~0.85", r ~0.7", i ~0.8", each object and band scaled by
  a log-normal factor (12%); a double Gaussian with Moffat-like wings; 0.2" pixels;
* per-band sky noise u 4e-12, g 1.8e-12, r 1.7e-12, i 6.9e-12 maggies per pixel, each object and band
  scaled by 0.85-1.2 (depth), correlated ~0.2 between neighbouring pixels as in resampled coadds; shot noise
  of the sources drawn from the noiseless model;
* quasars along a redshift colour track (z 0.3-3.8, a quarter above z 2.3) that crosses the F/G stellar
  locus near z 2.7, with intrinsic scatter;
* stars along the F-M locus with metallicity scatter, and 12% hot stars (white dwarfs, subdwarfs) with
  the quasars' UV excess (u-g -0.3..0.6, blue g-r);
* galaxies as a red de Vaucouleurs bulge plus a blue exponential disk (bulge-to-total 0-0.9, so colour
  gradients), colours reddening with a magnitude-driven redshift, half-light radius shrinking from ~1.5" at
  r = 18 to ~0.2" at r = 22.5 (barely resolved under a 0.7" PSF), random axis ratio and angle;
* a neighbour 1-7" away in 30% of cutouts, from one magnitude brighter to three fainter than the target;
* every row a distinct object: no tiling, no repeated image.

What is NOT realistic:

* colour and magnitude distributions are simple parametric shapes, not luminosity functions or real colour
  distributions; the quasar track is a coarse piecewise-linear reading of published tracks; class fractions
  are whatever ``--rows`` says (real samples are ~70% galaxies, ~9% quasars, ~21% stars);
* no quasar host galaxies, no AGN variability between bands' epochs, no spiral arms, dust lanes or
  irregular galaxies, no lensed or blended spectroscopic targets;
* no saturation, bleed trails, cosmic rays, NaN or no-coverage pixels, tile edges or background residuals;
  the PSF has the same shape in every band apart from its width, and does not vary across the cutout;
* the sky position is unrelated to PSF, depth and class.

Deterministic in the seed: object ``g`` of a class depends only on (seed, class, g) through streams per
block of ``BLOCK`` objects, so tables are rendered and written in row chunks with bounded memory, and
rows ``[id_offset, id_offset + rows)`` equal that slice of a table made from row 0.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from astropy.table import Table

from .demo_kids_sources import BLOCK, DEPTH_RANGE, PSF_FWHM, PSF_FWHM_SCATTER, SOURCES, block_stream, neighbours
from .demo_render import _render_sources, _sky_noise
from .demo_sources import (
    BANDS,
    CLASS_CODE,
    DEV,
    EXP,
    FWHM_PER_SIGMA,
    IMAGE_SIZE,
    PIXEL_SCALE,
    POINT,
    SHOT_FACTOR,
    SKY_SIGMA,
    SPECTYPE_DTYPE,
    SPECTYPE_VALUE,
    format_ids,
    sky_cells,
)
from .formats.class_file import write_class_table_in_chunks

WRITE_CHUNK = 4 * BLOCK  # rows rendered and written at a time (~21 MB of images)


def render_kids_block(key: str, seed: int, block: int) -> np.ndarray:
    """Objects ``[block * BLOCK, (block + 1) * BLOCK)`` of one class, (BLOCK, 36, 36, 4) float32."""
    code = CLASS_CODE[key]

    def draw(name: str) -> np.random.Generator:
        return block_stream(seed, code, name, block)

    n, n_bands = BLOCK, len(BANDS)
    src = SOURCES[key](n, draw)
    centre = 0.5 * (IMAGE_SIZE - 1) + draw("centre").uniform(-0.5, 0.5, (n, 2))
    fwhm = PSF_FWHM * np.exp(draw("seeing").normal(0.0, PSF_FWHM_SCATTER, (n, n_bands)))
    psf_sigma = fwhm / (FWHM_PER_SIGMA * PIXEL_SCALE)
    zeros, ones = np.zeros(n), np.ones(n)
    if key == "GALAXY":
        r_e_px, theta = src["r_e"] / PIXEL_SCALE, src["theta"]
        model = _render_sources(centre, src["flux"], EXP, r_e_px, src["q"], theta, psf_sigma)
        bulge_q = np.maximum(src["q"], 0.6)
        model += _render_sources(centre, src["bulge_flux"], DEV, 0.5 * r_e_px, bulge_q, theta, psf_sigma)
    else:
        model = _render_sources(centre, src["flux"], POINT, zeros, ones, zeros, psf_sigma)

    host_r = -2.5 * np.log10(src["flux"][:, 2] + src["bulge_flux"][:, 2])
    nb = neighbours(n, draw, host_r)
    nb_centre = centre + nb["dxy_arcsec"] / PIXEL_SCALE
    nb_re_px = nb["r_e"] / PIXEL_SCALE
    for idx, mix in (
        (np.flatnonzero(nb["has"] & (nb_re_px > 0)), EXP),
        (np.flatnonzero(nb["has"] & (nb_re_px == 0)), POINT),
    ):
        if idx.size:
            model[idx] += _render_sources(
                nb_centre[idx], nb["flux"][idx], mix, nb_re_px[idx], nb["q"][idx], nb["theta"][idx], psf_sigma[idx]
            )

    depth = draw("depth").uniform(*DEPTH_RANGE, (n, n_bands))
    shot_sigma = np.sqrt(model * (SHOT_FACTOR * depth**2).astype(np.float32)[:, None, None, :])
    noise = _sky_noise(draw("sky-noise"), n) * (SKY_SIGMA * depth).astype(np.float32)[:, None, None, :]
    noise += shot_sigma * draw("shot-noise").standard_normal(model.shape, dtype=np.float32)
    model += noise
    return model


def kids_images(key: str, seed: int, start: int, stop: int) -> np.ndarray:
    """Images of objects ``[start, stop)`` of one class, rendering only the blocks they fall in."""
    out = np.empty((stop - start, IMAGE_SIZE, IMAGE_SIZE, len(BANDS)), dtype=np.float32)
    if stop <= start:
        return out
    for block in range(start // BLOCK, (stop - 1) // BLOCK + 1):
        lo, hi = max(start, block * BLOCK), min(stop, (block + 1) * BLOCK)
        out[lo - start : hi - start] = render_kids_block(key, seed, block)[lo - block * BLOCK : hi - block * BLOCK]
    return out


def _columns(key: str, seed: int, ra_ms: np.ndarray, dec_cell: np.ndarray, start: int, stop: int) -> dict:
    """The columns of rows [start, stop), given every row's position cell."""
    ra, dec = ra_ms[start:stop], dec_cell[start:stop]
    return {
        "ID": format_ids(ra, dec),
        "RAJ2000": (ra + 0.5) / 240_000.0,
        "DECJ2000": (dec + 0.5) / 360_000.0,
        "SPECTYPE": np.full(stop - start, SPECTYPE_VALUE[key], dtype=SPECTYPE_DTYPE[key]),
        "image": kids_images(key, seed, start, stop),
    }


def make_kids_table(key: str, rows: int, seed: int, id_offset: int = 0) -> Table:
    """Rows ``[id_offset, id_offset + rows)`` of a class of the kids preset, as one astropy table."""
    ra_ms, dec_cell = sky_cells(seed, CLASS_CODE[key], id_offset + rows)
    return Table(_columns(key, seed, ra_ms, dec_cell, id_offset, id_offset + rows), copy=False)


def write_kids_table(path: str | os.PathLike[str], key: str, rows: int, seed: int) -> None:
    """Write one class file of the kids preset in row chunks (peak memory ~ one chunk, whatever ``rows``)."""
    ra_ms, dec_cell = sky_cells(seed, CLASS_CODE[key], rows)

    def make(start: int, stop: int) -> Table:
        return Table(_columns(key, seed, ra_ms, dec_cell, start, stop), copy=False)

    write_class_table_in_chunks(Path(path), rows, WRITE_CHUNK, make)
