"""Positions on the sky: duplicates, neighbour groups and sky cells. No I/O.

Angles are matched as chords between unit vectors in a KD-tree (scipy), which
is exact on the sphere: a chord of 2 sin(theta/2) is an angle theta.
"""

from __future__ import annotations

import numpy as np

from .repeats import of_rows, rows_at

ARCSEC_PER_DEG = 3600.0


def unit_vectors(ra_deg: np.ndarray, dec_deg: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """(N, 3) unit vectors (of positions `rows`): the KD-tree's input, planning's memory peak.

    Computed a slice of rows at a time, so the only per-row memory is the result: element-wise, the
    values are those of whole-array `np.radians`, `np.sin` and `np.cos` (slices start at multiples of the
    SIMD width). With `rows`, no copy of the positions outlives a slice.
    """
    n = len(ra_deg) if rows is None else len(rows)
    out = np.empty((n, 3))
    for first in range(0, n, UNIT_VECTOR_SLICE):
        at = slice(first, min(first + UNIT_VECTOR_SLICE, n))
        dec = np.radians(dec_deg[rows_at(rows, at)])
        np.sin(dec, out=out[at, 2])
        cos_dec = np.cos(dec, out=dec)
        ra = np.radians(ra_deg[rows_at(rows, at)])
        np.multiply(cos_dec, np.cos(ra), out=out[at, 0])
        np.multiply(cos_dec, np.sin(ra, out=ra), out=out[at, 1])
    return out


UNIT_VECTOR_SLICE = 1 << 14  # rows: 0.5 MB of temporaries


def pairs_within(
    ra_deg: np.ndarray, dec_deg: np.ndarray, radius_arcsec: float, rows: np.ndarray | None = None
) -> np.ndarray:
    """Index pairs (i < j) of positions (of `rows` of them: indices into `rows`) at most `radius_arcsec` apart, (M, 2).

    `rows` spares the caller copies of the positions held while the tree is built and searched.
    """
    known = np.isfinite(of_rows(ra_deg, rows)) & np.isfinite(of_rows(dec_deg, rows))
    everywhere = bool(known.all())  # the usual case: no index of the finite positions
    finite = np.zeros(0, dtype=np.int64) if everywhere else np.flatnonzero(known)
    del known
    count = (len(ra_deg) if rows is None else len(rows)) if everywhere else len(finite)
    if radius_arcsec <= 0 or count < 2:
        return np.zeros((0, 2), dtype=np.int64)
    from scipy.spatial import cKDTree  # scipy costs 0.25 s to import: only when matching

    chord = 2 * np.sin(np.radians(radius_arcsec / ARCSEC_PER_DEG) / 2)
    take = rows if everywhere else rows_at(rows, finite)
    tree = cKDTree(unit_vectors(ra_deg, dec_deg, take))
    pairs = tree.query_pairs(chord, output_type="ndarray").astype(np.int64)
    if len(pairs) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    return np.sort(pairs if everywhere else finite[pairs], axis=1)


def separation_arcsec(ra1, dec1, ra2, dec2) -> np.ndarray:
    chord = np.linalg.norm(unit_vectors(ra1, dec1) - unit_vectors(ra2, dec2), axis=1)
    return np.degrees(2 * np.arcsin(np.clip(chord / 2, 0, 1))) * ARCSEC_PER_DEG


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Friends-of-friends: the connected component of each of n points linked by `pairs`."""
    if len(pairs) == 0:
        return np.arange(n, dtype=np.int64)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def half_diagonal_arcsec(image_shape: tuple[int, ...], pixel_scale_arcsec: float) -> float:
    """Objects closer than this appear in each other's cutouts."""
    height, width = image_shape[:2]
    return 0.5 * float(np.hypot(height, width)) * pixel_scale_arcsec


def sky_cells(ra_deg: np.ndarray, dec_deg: np.ndarray, cell_deg: float) -> np.ndarray:
    """Roughly equal-area cells: declination bands of `cell_deg`, each cut in RA to about square cells."""
    ra_deg, dec_deg = np.asarray(ra_deg, dtype=np.float64), np.asarray(dec_deg, dtype=np.float64)
    known = np.isfinite(ra_deg) & np.isfinite(dec_deg)
    ra, dec = np.where(known, ra_deg, 0.0), np.where(known, dec_deg, 0.0)
    bands = int(np.ceil(180 / cell_deg))
    band = np.clip(np.floor((dec + 90) / cell_deg), 0, bands - 1).astype(np.int64)
    centre = np.radians(-90 + (band + 0.5) * cell_deg)
    per_band = np.maximum(1, np.floor(360 * np.cos(centre) / cell_deg)).astype(np.int64)
    column = np.floor(np.mod(ra, 360) / 360 * per_band).astype(np.int64) % per_band
    cells = band * (int(np.ceil(360 / cell_deg)) + 1) + column
    return np.where(known, cells, -1 - np.arange(len(cells)))  # no position: a cell of its own
