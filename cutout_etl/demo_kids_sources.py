"""Source models of the hard demo preset (``demo-data --preset kids``): what each object is, before any pixel.

Compared with the default preset (`cutout_etl.demo_sources`) the classes overlap the way they do in a
spectroscopic sample observed by KiDS: faint-heavy magnitudes r ~ 17-23 in every class, quasar colours along a
redshift track that crosses the stellar locus near z ~ 2.7, hot stars (white dwarfs, subdwarfs) in the quasars'
UV-excess region, galaxies as bulge + disk whose size shrinks with magnitude until they are barely resolved, and
more, and brighter, neighbours. See `cutout_etl.demo_kids` for what is and is not realistic.

Every quantity of block ``b`` of ``BLOCK`` objects has its own random stream (`block_stream`), so an object
depends only on (seed, class, its index) and any row range can be rendered on its own.
"""

from __future__ import annotations

import zlib

import numpy as np

from .choices import Choice


class Preset(Choice):
    """Which synthetic data ``demo-data`` writes: the easy default, or the hard KiDS-like preset."""

    DEMO = "demo"
    KIDS = "kids"


BLOCK = 512  # objects whose parameters and noise come from one set of streams
# Per-band PSF FWHM (arcsec) of KiDS ugri coadds: u ~1.0, g ~0.85, r ~0.7 (best seeing), i ~0.8.
PSF_FWHM = np.array([1.0, 0.85, 0.7, 0.8])
PSF_FWHM_SCATTER = 0.12  # log-normal, per object and band (KiDS observes each band on its own nights)
DEPTH_RANGE = (0.85, 1.2)  # per object and band factor on the sky noise
NEIGHBOUR_FRACTION = 0.30

# Faint-heavy magnitudes: density proportional to 10**(slope * r) on [r_min, r_max].
R_RANGE = {"GALAXY": (17.0, 22.5, 0.20), "QSO": (17.5, 23.0, 0.30), "STAR": (17.0, 23.0, 0.15)}
HOT_STAR_FRACTION = 0.12
HIGH_Z_QSO_FRACTION = 0.25  # z 2.3-3.8, where the track crosses the stellar locus

# Quasar colour track (u-g, g-r, r-i) against redshift: a coarse reading of the SDSS tracks
# (Richards et al. 2001, AJ 121, 2308): flat UV-excess colours to z ~ 2.2, then the Lyman-alpha forest
# enters u and u-g climbs through the F/G-star locus (u-g ~ 1, g-r ~ 0.3) near z 2.7.
_QSO_Z = np.array([0.3, 0.8, 1.2, 1.6, 2.0, 2.4, 2.7, 3.0, 3.3, 3.6, 4.0])
_QSO_UG = np.array([0.20, 0.20, 0.15, 0.20, 0.25, 0.45, 0.95, 1.40, 2.00, 2.60, 3.00])
_QSO_GR = np.array([0.30, 0.15, 0.20, 0.15, 0.15, 0.20, 0.28, 0.32, 0.45, 0.70, 1.10])
_QSO_RI = np.array([0.20, 0.30, 0.10, 0.15, 0.20, 0.15, 0.12, 0.15, 0.15, 0.20, 0.35])


def block_stream(seed: int, code: int, name: str, block: int) -> np.random.Generator:
    """An independent random stream per (seed, class, quantity, block)."""
    return np.random.default_rng([int(seed), code, zlib.crc32(("kids-" + name).encode()), int(block)])


def faint_heavy(u: np.ndarray, low: float, high: float, slope: float) -> np.ndarray:
    """Inverse CDF of a density proportional to 10**(slope * m) on [low, high]."""
    return low + np.log10(1.0 + u * (10.0 ** (slope * (high - low)) - 1.0)) / slope


def fluxes(r: np.ndarray, u_g: np.ndarray, g_r: np.ndarray, r_i: np.ndarray) -> np.ndarray:
    """(n, 4) ugri fluxes in maggies (AB, zero point 0) from r and colours."""
    g = r + g_r
    return 10.0 ** (-0.4 * np.stack([g + u_g, g, r, r - r_i], axis=1))


def qso_colours(z: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """u-g, g-r, r-i on the redshift track plus intrinsic scatter."""
    n = len(z)
    return (
        np.interp(z, _QSO_Z, _QSO_UG) + rng.normal(0.0, 0.15, n),
        np.interp(z, _QSO_Z, _QSO_GR) + rng.normal(0.0, 0.08, n),
        np.interp(z, _QSO_Z, _QSO_RI) + rng.normal(0.0, 0.08, n),
    )


def _point(flux: np.ndarray, **extra: np.ndarray) -> dict[str, np.ndarray]:
    n = len(flux)
    return {"flux": flux, "bulge_flux": np.zeros_like(flux), "r_e": np.zeros(n), "q": np.ones(n), **extra}


def star_sources(n: int, draw) -> dict[str, np.ndarray]:
    """Main-sequence locus (F to M) plus hot stars with QSO-like UV excess."""
    r = faint_heavy(draw("r").random(n), *R_RANGE["STAR"])
    t = draw("locus").random(n) ** 0.8  # 0: F ... 1: M
    u_g = 0.85 + 1.75 * t + draw("u-g").normal(0.0, 0.12, n)  # metallicity spread
    g_r = 0.25 + 1.15 * t + draw("g-r").normal(0.0, 0.04, n)
    r_i = 0.05 + 0.15 * t + 0.9 * t**3 + draw("r-i").normal(0.0, 0.04, n)
    hot = draw("hot").random(n) < HOT_STAR_FRACTION
    hot_ug = draw("hot-u-g").uniform(-0.3, 0.6, n)
    hot_gr = -0.35 + 0.45 * (hot_ug + 0.3) / 0.9 + draw("hot-g-r").normal(0.0, 0.08, n)
    hot_ri = -0.20 + 0.20 * (hot_ug + 0.3) / 0.9 + draw("hot-r-i").normal(0.0, 0.06, n)
    flux = fluxes(r, np.where(hot, hot_ug, u_g), np.where(hot, hot_gr, g_r), np.where(hot, hot_ri, r_i))
    return _point(flux, hot=hot)


def qso_sources(n: int, draw) -> dict[str, np.ndarray]:
    """Point sources along the redshift colour track (no host galaxy)."""
    r = faint_heavy(draw("r").random(n), *R_RANGE["QSO"])
    high = draw("high-z").random(n) < HIGH_Z_QSO_FRACTION
    z = np.where(high, draw("z-high").uniform(2.3, 3.8, n), draw("z-low").uniform(0.3, 2.3, n))
    return _point(fluxes(r, *qso_colours(z, draw("colour"))), z=z)


def galaxy_sources(n: int, draw) -> dict[str, np.ndarray]:
    """Bulge (de Vaucouleurs, red) + disk (exponential, blue), size shrinking with magnitude."""
    r = faint_heavy(draw("r").random(n), *R_RANGE["GALAXY"])
    z = np.clip(0.05 + 0.12 * (r - 17.0) + draw("z").normal(0.0, 0.08, n), 0.02, 0.9)
    red = draw("red").random(n) < 0.4
    bt = np.where(red, draw("bt-red").uniform(0.4, 0.9, n), draw("bt-blue").uniform(0.0, 0.35, n))
    bulge = fluxes(
        r,
        1.7 + 0.8 * z + draw("b-u-g").normal(0.0, 0.12, n),
        0.75 + 1.0 * z + draw("b-g-r").normal(0.0, 0.06, n),
        0.40 + 0.6 * z + draw("b-r-i").normal(0.0, 0.05, n),
    )
    disk = fluxes(
        r,
        0.9 + 0.6 * z + draw("d-u-g").normal(0.0, 0.15, n),
        0.35 + 0.6 * z + draw("d-g-r").normal(0.0, 0.08, n),
        0.20 + 0.4 * z + draw("d-r-i").normal(0.0, 0.06, n),
    )
    bulge *= bt[:, None]  # each component's r flux is its share of the galaxy's
    disk *= (1.0 - bt)[:, None]
    log_re = np.log10(1.5) - 0.18 * (r - 18.0) + draw("size").normal(0.0, 0.2, n)
    return {
        "flux": disk,
        "bulge_flux": bulge,
        "r_e": 10.0 ** np.clip(log_re, np.log10(0.08), np.log10(4.0)),
        "q": draw("q").uniform(0.3, 1.0, n),
        "theta": draw("theta").uniform(0.0, np.pi, n),
        "z": z,
    }


SOURCES = {"GALAXY": galaxy_sources, "QSO": qso_sources, "STAR": star_sources}


def neighbours(n: int, draw, host_r: np.ndarray) -> dict[str, np.ndarray]:
    """Second sources 1-7 arcsec away, up to one magnitude brighter than the target; drawn for every object."""
    has = draw("nb-has").random(n) < NEIGHBOUR_FRACTION
    radius = draw("nb-radius").uniform(1.0, 7.0, n)
    angle = draw("nb-angle").uniform(0.0, 2 * np.pi, n)
    extended = draw("nb-extended").random(n) < 0.5
    return {
        "has": has,
        "dxy_arcsec": np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1),
        "flux": fluxes(
            host_r + draw("nb-dmag").uniform(-1.0, 3.0, n),
            draw("nb-u-g").uniform(0.2, 2.4, n),
            draw("nb-g-r").uniform(0.0, 1.4, n),
            draw("nb-r-i").uniform(0.0, 0.8, n),
        ),
        "r_e": np.where(extended, draw("nb-r_e").uniform(0.2, 1.5, n), 0.0),
        "q": draw("nb-q").uniform(0.3, 1.0, n),
        "theta": draw("nb-theta").uniform(0.0, np.pi, n),
    }
