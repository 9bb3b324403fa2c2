"""The demo's source models: what each synthetic object is, before any pixel is drawn.

Class codes and the SPECTYPE values, the galaxy profiles and the PSF, positions on the sky and the IDs
built from them, magnitudes and colours per class, and the fainter neighbours. See `cutout_etl.demo` for
what is modelled on KiDS and what is not. Every quantity has its own random stream (`stream`).
"""

from __future__ import annotations

import zlib

import numpy as np

BANDS = ("u", "g", "r", "i")
IMAGE_SIZE = 36
PIXEL_SCALE = 0.2  # arcsec per pixel
SKY_SIGMA = np.array([4.0e-12, 1.8e-12, 1.7e-12, 6.9e-12])  # maggies per pixel
DEFAULT_BLOCK = 2000
NEIGHBOUR_FRACTION = 0.10

# Each class owns one residue of the Dec cell index modulo 3, so IDs of
# different classes can never coincide.
CLASS_CODE = {"GALAXY": 0, "QSO": 1, "STAR": 2}
SPECTYPE_VALUE = {"GALAXY": b"GALAXY", "QSO": b"QSO ", "STAR": b"STAR"}
SPECTYPE_DTYPE = {"GALAXY": "S6", "QSO": "S4", "STAR": "S4"}
_ID_DTYPE = "S29"

# Sky surface brightness (AB mag / arcsec^2), only used to scale the source
# shot noise: variance = model * sigma_sky**2 / sky_per_pixel.
_SKY_MU = np.array([22.4, 22.0, 21.0, 19.9])
SHOT_FACTOR = SKY_SIGMA**2 / (10 ** (-0.4 * _SKY_MU) * PIXEL_SCALE**2)

# PSF: two concentric Gaussians, the second twice as wide, for Moffat-like
# wings. Per-band width relative to r, u broadest.
PSF_WEIGHTS = np.array([0.8, 0.2])
PSF_SIGMA_RATIO = np.array([1.0, 2.0])
PSF_BAND_FACTOR = np.array([1.12, 1.04, 1.0, 1.03])

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
    s = PSF_SIGMA_RATIO
    peak = np.sum(PSF_WEIGHTS / s**2)
    lo, hi = 0.0, 10.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if np.sum(PSF_WEIGHTS / s**2 * np.exp(-mid * mid / (2 * s**2))) > 0.5 * peak:
            lo = mid
        else:
            hi = mid
    return lo + hi


# Hogg & Lang (2013) mixtures of the SDSS-style truncated exponential ("lux")
# and de Vaucouleurs ("luv") profiles.
EXP = _mixture(
    [2.34853813e-03, 3.07995260e-02, 2.23364214e-01, 1.17949102e00, 4.33873750e00, 5.99820770e00],
    [1.20078965e-03, 8.84526493e-03, 3.91463084e-02, 1.39976817e-01, 4.60962500e-01, 1.50159566e00],
)
DEV = _mixture(
    [
        4.26347652e-02,
        2.40127183e-01,
        6.85907632e-01,
        1.51937350e00,
        2.83627243e00,
        4.46467501e00,
        5.72440830e00,
        5.60989349e00,
    ],
    [
        2.23759216e-04,
        1.00220099e-03,
        4.18731126e-03,
        1.69432589e-02,
        6.84850479e-02,
        2.87207080e-01,
        1.33320254e00,
        8.40215071e00,
    ],
)
POINT = (np.array([1.0]), np.array([0.0]))
FWHM_PER_SIGMA = _psf_fwhm_per_sigma()


def stream(seed: int, code: int, name: str) -> np.random.Generator:
    """An independent random stream per (seed, class, quantity)."""
    return np.random.default_rng([int(seed), code, zlib.crc32(name.encode())])


# --- positions and IDs -------------------------------------------------------


def sky_cells(seed: int, code: int, total: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions as ID-grid cells: RA in ms of time, Dec in 0.01 arcsec.

    Cells are drawn uniformly on the sphere inside the patches; the Dec cell
    is moved to the class's residue modulo 3 and any later duplicate of an
    earlier cell is moved 0.03 arcsec north until all are distinct. Row ``g``
    depends only on rows ``<= g``.
    """
    areas = [span * (np.sin(np.radians(d1)) - np.sin(np.radians(d0))) for _, span, d0, d1 in _PATCHES]
    north = stream(seed, code, "patch").random(total) < areas[0] / sum(areas)
    u_ra = stream(seed, code, "ra").random(total)
    u_dec = stream(seed, code, "dec").random(total)
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


def format_ids(ra_ms: np.ndarray, dec_cell: np.ndarray) -> np.ndarray:
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


def class_sources(key: str, n: int, seed: int, code: int) -> dict[str, np.ndarray]:
    """Flux (n, 4), half-light radius (arcsec), axis ratio, angle, de Vaucouleurs flag."""

    def draw(name: str) -> np.random.Generator:
        return stream(seed, code, name)

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


def neighbours(n: int, seed: int, code: int, flux: np.ndarray) -> dict[str, np.ndarray]:
    """Fainter second sources; drawn for every object, used where ``has``."""

    def draw(name: str) -> np.random.Generator:
        return stream(seed, code, "neighbour-" + name)

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
