"""Synthetic KiDS-like demo cutout tables, written like the users' files.

THE DATA MADE HERE ARE SYNTHETIC. No pixel comes from a telescope. They exist
so that the tool, its tests and its benchmark can run without the real
dataset, on files laid out exactly like the users' files: one astropy table per
class, written with ``Table.write(path, format="hdf5", path="data",
serialize_meta=True)``, columns ``ID`` (S29), ``RAJ2000``, ``DECJ2000``
(float64, degrees), ``SPECTYPE`` (``b"GALAXY"`` S6, ``b"QSO "`` S4 with the
trailing space some real files carry, ``b"STAR"`` S4) and ``image``
(float32, 36 x 36 x 4, channels last, bands u, g, r, i).

What is modelled on KiDS (roughly, not fitted to any real catalogue):

* pixels of 0.2 arcsec, flux in maggies (AB, zero point 0: a source of
  magnitude m sums to 10**(-0.4 m));
* a double-Gaussian PSF with Moffat-like wings, FWHM ~0.7-0.9 arcsec, varying
  per object and broader in u;
* background-subtracted sky noise per pixel of about u 4e-12, g 1.8e-12,
  r 1.7e-12, i 6.9e-12 (each object and band scaled by 0.8-1.2 to mimic depth
  variation), correlated ~0.2 between neighbouring pixels as in resampled
  coadds, plus approximate shot noise of the source itself;
* stars and quasars as point sources, galaxies as PSF-convolved exponential or
  de Vaucouleurs profiles (the Gaussian-mixture approximations of Hogg & Lang
  2013, PASP 125, 719) with half-light radius 0.6-2.5 arcsec and random
  ellipticity and angle;
* magnitudes and ugri colours in broad plausible ranges: stars along a crude
  stellar locus, quasars with a UV excess, galaxies redder;
* about 10% of cutouts hold a fainter neighbour 1-3 arcsec away;
* positions spread uniformly over two KiDS-like patches (RA 120-240,
  Dec -3..+3 and RA 330-52, Dec -35..-27); IDs in the IAU style
  ``KiDSDR5 Jhhmmss.sss+ddmmss.ss`` built from the position.

What is NOT realistic:

* colours, magnitudes, sizes and class fractions are drawn from simple
  uniform-ish distributions, not from luminosity functions or real colour
  distributions; the classes are easier to tell apart than in real data
  (quasars here never overlap the stellar locus);
* galaxies have one component and no colour gradients, no bulge/disk mix,
  no spiral arms, no dust lanes; quasars have no host galaxy;
* no saturation, bleed trails, cosmic rays, NaN or empty cutouts, tile
  edges, masks, or residual background; the PSF is the same shape in all
  bands apart from its width and does not vary across the sky;
* the sky position is unrelated to PSF, depth and class;
* only ``block`` distinct objects are rendered per class (default
  ``min(rows, 2000)``) and then tiled: row ``g`` (counting from the start of
  the class, ``g = id_offset + i``) shows the image of block object
  ``g % block``. Tiled copies have BYTE-IDENTICAL images but their own random
  positions and IDs, so an ML split of a table with ``rows > block`` puts the
  very same pixels in training and test. Do not read accuracy on such data as
  a result.

Everything is deterministic in ``seed`` (numpy ``default_rng``; one stream
per quantity, so the first ``k`` block objects are the same for any
``block >= k``, and rows ``[id_offset, id_offset + rows)`` equal that slice of
a table made from row 0).
"""

from __future__ import annotations

import json
import os
import pathlib
import zlib

import h5py
import numpy as np
from astropy.table import Table

from . import __version__
from .errors import ForeignOutputError
from .formats import atomic

__all__ = ["DEMO_FILES", "make_class_table", "write_demo_files"]

DEMO_FILES: dict[str, str] = {
    "GALAXY": "image_table_galaxies.hdf5",
    "QSO": "image_table_qso.hdf5",
    "STAR": "image_table_stars.hdf5",
}

BANDS = ("u", "g", "r", "i")
IMAGE_SIZE = 36
PIXEL_SCALE = 0.2  # arcsec per pixel
SKY_SIGMA = np.array([4.0e-12, 1.8e-12, 1.7e-12, 6.9e-12])  # maggies per pixel
DEFAULT_BLOCK = 2000
NEIGHBOUR_FRACTION = 0.10

# Each class owns one residue of the Dec cell index modulo 3, so IDs of
# different classes can never coincide.
_CLASS_CODE = {"GALAXY": 0, "QSO": 1, "STAR": 2}
_SPECTYPE_VALUE = {"GALAXY": b"GALAXY", "QSO": b"QSO ", "STAR": b"STAR"}
_SPECTYPE_DTYPE = {"GALAXY": "S6", "QSO": "S4", "STAR": "S4"}
_ID_DTYPE = "S29"

# Sky surface brightness (AB mag / arcsec^2), only used to scale the source
# shot noise: variance = model * sigma_sky**2 / sky_per_pixel.
_SKY_MU = np.array([22.4, 22.0, 21.0, 19.9])
_SHOT_FACTOR = SKY_SIGMA**2 / (10 ** (-0.4 * _SKY_MU) * PIXEL_SCALE**2)

# PSF: two concentric Gaussians, the second twice as wide, for Moffat-like
# wings. Per-band width relative to r, u broadest.
_PSF_WEIGHTS = np.array([0.8, 0.2])
_PSF_SIGMA_RATIO = np.array([1.0, 2.0])
_PSF_BAND_FACTOR = np.array([1.12, 1.04, 1.0, 1.03])

# Neighbouring-pixel noise correlation ~0.2: separable kernel [a, 1, a]
# with 2a / (1 + 2a^2) = 0.2.
_NOISE_KERNEL_A = 0.1021

_CHUNK = 256  # objects rendered at a time

# Patches: (ra_min, ra_span, dec_min, dec_max), degrees.
_PATCHES = ((120.0, 120.0, -3.0, 3.0), (330.0, 82.0, -35.0, -27.0))


def _half_light_radius(amp: np.ndarray, var: np.ndarray) -> float:
    """Radius holding half the flux of a circular Gaussian mixture (bisection)."""
    lo, hi = 0.0, 100.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if float(np.sum(amp * -np.expm1(-mid * mid / (2.0 * var)))) < 0.5:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _mixture(amp: list[float], var: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Normalised (amplitudes, variances) scaled to a half-light radius of 1."""
    a = np.asarray(amp, dtype=np.float64)
    v = np.asarray(var, dtype=np.float64)
    a = a / a.sum()
    return a, v / _half_light_radius(a, v) ** 2


def _psf_fwhm_per_sigma() -> float:
    """FWHM of the double-Gaussian PSF in units of its core sigma."""
    s = _PSF_SIGMA_RATIO
    peak = np.sum(_PSF_WEIGHTS / s**2)
    lo, hi = 0.0, 10.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if np.sum(_PSF_WEIGHTS / s**2 * np.exp(-mid * mid / (2 * s**2))) > 0.5 * peak:
            lo = mid
        else:
            hi = mid
    return lo + hi


# Hogg & Lang (2013) mixtures of the SDSS-style truncated exponential ("lux")
# and de Vaucouleurs ("luv") profiles.
_EXP = _mixture(
    [2.34853813e-03, 3.07995260e-02, 2.23364214e-01, 1.17949102e00, 4.33873750e00, 5.99820770e00],
    [1.20078965e-03, 8.84526493e-03, 3.91463084e-02, 1.39976817e-01, 4.60962500e-01, 1.50159566e00],
)
_DEV = _mixture(
    [4.26347652e-02, 2.40127183e-01, 6.85907632e-01, 1.51937350e00,
     2.83627243e00, 4.46467501e00, 5.72440830e00, 5.60989349e00],
    [2.23759216e-04, 1.00220099e-03, 4.18731126e-03, 1.69432589e-02,
     6.84850479e-02, 2.87207080e-01, 1.33320254e00, 8.40215071e00],
)
_POINT = (np.array([1.0]), np.array([0.0]))
_FWHM_PER_SIGMA = _psf_fwhm_per_sigma()


def make_class_table(
    spectype: str,
    rows: int,
    seed: int = 0,
    *,
    block: int | None = None,
    id_offset: int = 0,
) -> Table:
    """Make one synthetic class table (see the module docstring for realism).

    ``spectype`` is ``"GALAXY"``, ``"QSO"`` or ``"STAR"``. Only ``block``
    distinct objects (default ``min(rows, 2000)``) are rendered; row ``i``
    shows block object ``(id_offset + i) % block``, so rows further apart
    than ``block`` have byte-identical images. Every row has its own random
    position and ID. ``id_offset`` is the index of the first row within the
    class: rows ``[id_offset, id_offset + rows)`` equal that slice of the
    table made with ``id_offset=0`` (same seed and block), so tables made
    with non-overlapping ranges never share an ID. IDs of different classes
    never coincide, for any arguments.
    """
    key = spectype.strip().upper() if isinstance(spectype, str) else spectype
    if key not in _CLASS_CODE:
        raise ValueError(f"spectype must be one of {sorted(_CLASS_CODE)} (got {spectype!r})")
    _check_int("rows", rows, 0)
    _check_int("seed", seed, 0)
    _check_int("id_offset", id_offset, 0)
    if block is None:
        block = max(1, min(rows, DEFAULT_BLOCK))
    _check_int("block", block, 1)
    code = _CLASS_CODE[key]

    ra_ms, dec_cell = _sky_cells(seed, code, id_offset + rows)
    ra_ms, dec_cell = ra_ms[id_offset:], dec_cell[id_offset:]

    if rows == 0:
        images = np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, len(BANDS)), dtype=np.float32)
    else:
        block_images = _render_block(key, block, seed)
        which = (np.arange(rows, dtype=np.int64) + id_offset) % block
        if rows == block and id_offset % block == 0:
            images = block_images
        else:
            images = np.take(block_images, which, axis=0)

    return Table(
        {
            "ID": _format_ids(ra_ms, dec_cell),
            "RAJ2000": (ra_ms + 0.5) / 240_000.0,
            "DECJ2000": (dec_cell + 0.5) / 360_000.0,
            "SPECTYPE": np.full(rows, _SPECTYPE_VALUE[key], dtype=_SPECTYPE_DTYPE[key]),
            "image": images,
        },
        copy=False,
    )


def write_demo_files(
    directory: str | os.PathLike[str],
    rows: int = 1000,
    seed: int = 0,
    *,
    block: int | None = None,
    overwrite: bool = False,
) -> list[pathlib.Path]:
    """Write the three class files (``DEMO_FILES``) into ``directory``.

    Each file holds ``rows`` rows of one class, written with astropy
    ``Table.write(format="hdf5", path="data", serialize_meta=True)`` to a
    temporary file beside its final name, marked as a demo file (root
    attribute ``DEMO_ATTR``) and renamed into place. Existing files are
    refused, unless ``overwrite`` and they are demo files written earlier: a
    real class file of the same name is never replaced. The directory is
    created if missing. Returns the paths in the order galaxies, qso, stars.
    Peak memory is about twice the image column of one class (astropy copies
    the table into a compound array).
    """
    out_dir = pathlib.Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / name for name in DEMO_FILES.values()]
    for path in paths:  # refuse before writing any of them
        atomic.check_target(path, overwrite, may_replace=_demo_file)
    mark = json.dumps({"generator": f"cutout-etl {__version__} demo-data", "rows": rows, "seed": seed, "block": block})
    for spectype, path in zip(DEMO_FILES, paths):
        table = make_class_table(spectype, rows, seed, block=block)
        with atomic.atomic_output(path, overwrite, may_replace=_demo_file) as tmp:  # no half-written file
            table.write(tmp, format="hdf5", path="data", serialize_meta=True, overwrite=True)
            del table
            with h5py.File(tmp, "r+") as f:
                f.attrs[DEMO_ATTR] = mark
    return paths


DEMO_ATTR = "cutout_etl_demo"  # root attribute marking a file demo-data wrote (JSON: generator, rows, seed)


def _demo_file(path: pathlib.Path) -> None:
    """Allow replacing only a file demo-data wrote."""
    try:
        with h5py.File(path, "r") as f:
            marked = DEMO_ATTR in f.attrs
    except OSError:
        marked = False
    if not marked:
        raise ForeignOutputError(f"{path}: not a demo file written by cutout-etl demo-data; refusing to replace it")


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer (got {value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum} (got {value})")


def _stream(seed: int, code: int, name: str) -> np.random.Generator:
    """An independent random stream per (seed, class, quantity)."""
    return np.random.default_rng([int(seed), code, zlib.crc32(name.encode())])


# --- positions and IDs -------------------------------------------------------


def _sky_cells(seed: int, code: int, total: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions as ID-grid cells: RA in ms of time, Dec in 0.01 arcsec.

    Cells are drawn uniformly on the sphere inside the patches; the Dec cell
    is moved to the class's residue modulo 3 and any later duplicate of an
    earlier cell is moved 0.03 arcsec north until all are distinct. Row ``g``
    depends only on rows ``<= g``.
    """
    areas = [span * (np.sin(np.radians(d1)) - np.sin(np.radians(d0))) for _, span, d0, d1 in _PATCHES]
    north = _stream(seed, code, "patch").random(total) < areas[0] / sum(areas)
    u_ra = _stream(seed, code, "ra").random(total)
    u_dec = _stream(seed, code, "dec").random(total)
    params = np.array(_PATCHES)[np.where(north, 0, 1)]
    ra = (params[:, 0] + params[:, 1] * u_ra) % 360.0
    s0, s1 = np.sin(np.radians(params[:, 2])), np.sin(np.radians(params[:, 3]))
    dec = np.degrees(np.arcsin(s0 + u_dec * (s1 - s0)))

    ra_ms = np.minimum(np.floor(ra * 240_000.0).astype(np.int64), 86_400_000 - 1)
    dec_cell = np.floor(dec * 360_000.0).astype(np.int64)
    dec_cell += (code - dec_cell) % 3
    while total:
        key = ra_ms * (1 << 28) + (dec_cell + (1 << 27))
        _, first = np.unique(key, return_index=True)
        later = np.ones(total, dtype=bool)
        later[first] = False
        if not later.any():
            break
        dec_cell[later] += 3
    return ra_ms, dec_cell


def _put_digits(out: np.ndarray, start: int, values: np.ndarray, width: int) -> None:
    for pos in range(width - 1, -1, -1):
        out[:, start + pos] = ord("0") + values % 10
        values = values // 10


def _format_ids(ra_ms: np.ndarray, dec_cell: np.ndarray) -> np.ndarray:
    """``KiDSDR5 Jhhmmss.sss+ddmmss.ss`` (truncated, IAU style), as S29."""
    n = len(ra_ms)
    out = np.empty((n, 29), dtype=np.uint8)
    out[:, :9] = np.frombuffer(b"KiDSDR5 J", dtype=np.uint8)
    hours, rest = np.divmod(ra_ms, 3_600_000)
    minutes, rest = np.divmod(rest, 60_000)
    seconds, millis = np.divmod(rest, 1000)
    _put_digits(out, 9, hours, 2)
    _put_digits(out, 11, minutes, 2)
    _put_digits(out, 13, seconds, 2)
    out[:, 15] = ord(".")
    _put_digits(out, 16, millis, 3)
    # Cell k covers [k, k+1) x 0.01"; truncation towards zero gives |k| or -k-1.
    out[:, 19] = np.where(dec_cell < 0, ord("-"), ord("+"))
    centi = np.where(dec_cell < 0, -dec_cell - 1, dec_cell)
    degrees, rest = np.divmod(centi, 360_000)
    arcmin, rest = np.divmod(rest, 6000)
    arcsec, hundredths = np.divmod(rest, 100)
    _put_digits(out, 20, degrees, 2)
    _put_digits(out, 22, arcmin, 2)
    _put_digits(out, 24, arcsec, 2)
    out[:, 26] = ord(".")
    _put_digits(out, 27, hundredths, 2)
    return out.view(_ID_DTYPE).reshape(n)


# --- object parameters -------------------------------------------------------


def _fluxes(r: np.ndarray, u_g: np.ndarray, g_r: np.ndarray, r_i: np.ndarray) -> np.ndarray:
    """(n, 4) ugri fluxes in maggies from r and colours."""
    g = r + g_r
    mags = np.stack([g + u_g, g, r, r - r_i], axis=1)
    return 10.0 ** (-0.4 * mags)


def _class_sources(key: str, n: int, seed: int, code: int) -> dict[str, np.ndarray]:
    """Flux (n, 4), half-light radius (arcsec), axis ratio, angle, de Vaucouleurs flag."""

    def draw(name: str) -> np.random.Generator:
        return _stream(seed, code, name)

    zeros = np.zeros(n)
    if key == "STAR":
        t = draw("locus").random(n)  # 0: F star ... 1: early M
        flux = _fluxes(
            draw("r").uniform(17.0, 22.0, n),
            np.clip(1.0 + 1.5 * t + draw("u-g").normal(0.0, 0.1, n), 0.9, 2.6),
            0.3 + 1.0 * t,
            np.clip(0.1 + 0.5 * t**2 + draw("r-i").normal(0.0, 0.04, n), 0.05, 0.65),
        )
        return {"flux": flux, "r_e": zeros, "q": zeros + 1.0, "theta": zeros, "dev": zeros > 0}
    if key == "QSO":
        flux = _fluxes(
            draw("r").uniform(18.0, 22.0, n),
            np.clip(draw("u-g").normal(0.2, 0.15, n), -0.1, 0.55),
            draw("g-r").uniform(-0.1, 0.4, n),
            draw("r-i").uniform(-0.1, 0.3, n),
        )
        return {"flux": flux, "r_e": zeros, "q": zeros + 1.0, "theta": zeros, "dev": zeros > 0}

    dev = draw("profile").random(n) < 0.35
    t = np.where(dev, 0.4 + 0.6 * draw("red").random(n), 0.8 * draw("blue").random(n))
    r = draw("r").uniform(17.0, 21.5, n)
    flux = _fluxes(
        r,
        np.clip(1.0 + 1.0 * t + draw("u-g").normal(0.0, 0.1, n), 0.9, 2.1),
        np.clip(0.5 + 0.5 * t + draw("g-r").normal(0.0, 0.05, n), 0.45, 1.05),
        np.clip(0.3 + 0.2 * t + draw("r-i").normal(0.0, 0.04, n), 0.25, 0.55),
    )
    log_re = np.log10(1.2) - 0.12 * (r - 19.0) + draw("size").normal(0.0, 0.15, n)
    r_e = 10.0 ** np.clip(log_re, np.log10(0.6), np.log10(2.5))
    q = np.where(dev, draw("q-dev").uniform(0.5, 1.0, n), draw("q-exp").uniform(0.25, 1.0, n))
    theta = draw("theta").uniform(0.0, np.pi, n)
    return {"flux": flux, "r_e": r_e, "q": q, "theta": theta, "dev": dev}


def _neighbours(n: int, seed: int, code: int, flux: np.ndarray) -> dict[str, np.ndarray]:
    """Fainter second sources; drawn for every object, used where ``has``."""

    def draw(name: str) -> np.random.Generator:
        return _stream(seed, code, "neighbour-" + name)

    has = draw("has").random(n) < NEIGHBOUR_FRACTION
    radius = draw("radius").uniform(1.0, 3.0, n) / PIXEL_SCALE
    angle = draw("angle").uniform(0.0, 2 * np.pi, n)
    r_host = -2.5 * np.log10(flux[:, 2])
    nb_flux = _fluxes(
        r_host + draw("dmag").uniform(0.5, 3.0, n),
        draw("u-g").uniform(0.3, 2.2, n),
        draw("g-r").uniform(0.2, 1.2, n),
        draw("r-i").uniform(0.0, 0.6, n),
    )
    extended = draw("extended").random(n) < 0.5
    return {
        "has": has,
        "dxy": np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1),
        "flux": nb_flux,
        "r_e": np.where(extended, draw("r_e").uniform(0.3, 1.0, n), 0.0),
        "q": draw("q").uniform(0.4, 1.0, n),
        "theta": draw("theta").uniform(0.0, np.pi, n),
    }


# --- rendering ---------------------------------------------------------------


def _render_block(key: str, n: int, seed: int) -> np.ndarray:
    """Render ``n`` distinct objects of one class, (n, 36, 36, 4) float32."""
    code = _CLASS_CODE[key]
    src = _class_sources(key, n, seed, code)
    centre = 0.5 * (IMAGE_SIZE - 1) + _stream(seed, code, "centre").uniform(-0.5, 0.5, (n, 2))
    fwhm_r = _stream(seed, code, "seeing").uniform(0.68, 0.85, n)
    jitter = _stream(seed, code, "seeing-band").uniform(0.97, 1.03, (n, len(BANDS)))
    psf_sigma = fwhm_r[:, None] * _PSF_BAND_FACTOR * jitter / (_FWHM_PER_SIGMA * PIXEL_SCALE)

    model = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE, len(BANDS)), dtype=np.float32)
    r_e_px = src["r_e"] / PIXEL_SCALE
    if key == "GALAXY":
        groups = [(np.flatnonzero(~src["dev"]), _EXP), (np.flatnonzero(src["dev"]), _DEV)]
    else:
        groups = [(np.arange(n), _POINT)]
    for idx, mix in groups:
        if idx.size:
            model[idx] = _render_sources(
                centre[idx], src["flux"][idx], mix, r_e_px[idx], src["q"][idx], src["theta"][idx], psf_sigma[idx]
            )

    nb = _neighbours(n, seed, code, src["flux"])
    nb_re_px = nb["r_e"] / PIXEL_SCALE
    extended = nb_re_px > 0
    for idx, mix in ((np.flatnonzero(nb["has"] & extended), _EXP), (np.flatnonzero(nb["has"] & ~extended), _POINT)):
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

    depth = _stream(seed, code, "depth").uniform(0.8, 1.2, (n, len(BANDS)))
    sigma = (SKY_SIGMA * depth).astype(np.float32)
    model += _sky_noise(_stream(seed, code, "sky-noise"), n) * sigma[:, None, None, :]
    shot = np.sqrt(np.maximum(model, 0) * (_SHOT_FACTOR * depth**2).astype(np.float32)[:, None, None, :])
    model += shot * _stream(seed, code, "shot-noise").standard_normal(model.shape, dtype=np.float32)
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
            for w_p, ratio in zip(_PSF_WEIGHTS, _PSF_SIGMA_RATIO):
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
