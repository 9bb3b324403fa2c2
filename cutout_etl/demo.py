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
  (quasars here never overlap the stellar locus; `demo-data --preset kids`,
  `cutout_etl.demo_kids`, makes a hard preset where they do);
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

import h5py
import numpy as np
from astropy.table import Table

from . import __version__
from .demo_kids import make_kids_table, write_kids_table
from .demo_kids_sources import Preset
from .demo_render import render_block
from .demo_sources import (
    BANDS,
    CLASS_CODE,
    DEFAULT_BLOCK,
    IMAGE_SIZE,
    NEIGHBOUR_FRACTION,
    PIXEL_SCALE,
    SKY_SIGMA,
    SPECTYPE_DTYPE,
    SPECTYPE_VALUE,
    format_ids,
    sky_cells,
)
from .formats import atomic
from .formats.class_file import replace_only_marked, write_class_table

__all__ = [  # the source models live in demo_sources, the rendering in demo_render; this module writes the files
    "BANDS",
    "DEFAULT_BLOCK",
    "DEMO_ATTR",
    "DEMO_FILES",
    "IMAGE_SIZE",
    "NEIGHBOUR_FRACTION",
    "PIXEL_SCALE",
    "PRESETS",
    "SKY_SIGMA",
    "make_class_table",
    "write_demo_files",
]

PRESETS = tuple(p.value for p in Preset)  # kids: the hard preset of cutout_etl.demo_kids (classes overlap as in KiDS)

DEMO_FILES: dict[str, str] = {
    "GALAXY": "image_table_galaxies.hdf5",
    "QSO": "image_table_qso.hdf5",
    "STAR": "image_table_stars.hdf5",
}


def make_class_table(
    spectype: str,
    rows: int,
    seed: int = 0,
    *,
    block: int | None = None,
    id_offset: int = 0,
    preset: str = "demo",
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
    never coincide, for any arguments. ``preset="kids"`` makes the hard preset
    (`cutout_etl.demo_kids`): every row a distinct object, so ``block`` must be None.
    """
    key = spectype.strip().upper() if isinstance(spectype, str) else spectype
    if key not in CLASS_CODE:
        raise ValueError(f"spectype must be one of {sorted(CLASS_CODE)} (got {spectype!r})")
    _check_int("rows", rows, 0)
    _check_int("seed", seed, 0)
    _check_int("id_offset", id_offset, 0)
    if _check_preset(preset, block) == "kids":
        return make_kids_table(key, rows, seed, id_offset)
    if block is None:
        block = max(1, min(rows, DEFAULT_BLOCK))
    _check_int("block", block, 1)
    code = CLASS_CODE[key]

    ra_ms, dec_cell = sky_cells(seed, code, id_offset + rows)
    ra_ms, dec_cell = ra_ms[id_offset:], dec_cell[id_offset:]

    return Table(
        {
            "ID": format_ids(ra_ms, dec_cell),
            "RAJ2000": (ra_ms + 0.5) / 240_000.0,
            "DECJ2000": (dec_cell + 0.5) / 360_000.0,
            "SPECTYPE": np.full(rows, SPECTYPE_VALUE[key], dtype=SPECTYPE_DTYPE[key]),
            "image": _tiled_images(key, rows, seed, block, id_offset),
        },
        copy=False,
    )


def _tiled_images(key: str, rows: int, seed: int, block: int, id_offset: int) -> np.ndarray:
    """Row i shows block object (id_offset + i) % block; only the block is rendered."""
    if rows == 0:
        return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, len(BANDS)), dtype=np.float32)
    block_images = render_block(key, block, seed)
    if rows == block and id_offset % block == 0:
        return block_images
    which = (np.arange(rows, dtype=np.int64) + id_offset) % block
    return np.take(block_images, which, axis=0)


def write_demo_files(
    directory: str | os.PathLike[str],
    rows: int = 1000,
    seed: int = 0,
    *,
    block: int | None = None,
    overwrite: bool = False,
    preset: str = "demo",
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
    the table into a compound array); with ``preset="kids"`` files are
    rendered and written in row chunks, and peak memory does not grow with
    ``rows``.
    """
    _check_preset(preset, block)
    out_dir = pathlib.Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / name for name in DEMO_FILES.values()]
    for path in paths:  # refuse before writing any of them
        atomic.check_target(path, overwrite, may_replace=_demo_file)
    fields: dict[str, object] = {"generator": f"cutout-etl {__version__} demo-data", "rows": rows, "seed": seed}
    fields["block"] = block
    if str(preset) != "demo":  # the default preset's files stay byte-identical to earlier versions'
        fields["preset"] = str(preset)
    mark = json.dumps(fields)
    for spectype, path in zip(DEMO_FILES, paths):
        with atomic.atomic_output(path, overwrite, may_replace=_demo_file) as tmp:  # no half-written file
            _write_class_file(tmp, spectype, rows, seed, block, preset)
            with h5py.File(tmp, "r+") as f:
                f.attrs[DEMO_ATTR] = mark
    return paths


def _write_class_file(path: pathlib.Path, spectype: str, rows: int, seed: int, block: int | None, preset: str) -> None:
    if str(preset) == "kids":
        _check_int("rows", rows, 0)
        _check_int("seed", seed, 0)
        write_kids_table(path, spectype, rows, seed)
        return
    table = make_class_table(spectype, rows, seed, block=block)
    write_class_table(path, table)


DEMO_ATTR = "cutout_etl_demo"  # root attribute marking a file demo-data wrote (JSON: generator, rows, seed)


_demo_file = replace_only_marked(DEMO_ATTR, "demo file", "demo-data")  # --overwrite replaces only our files


def _check_preset(preset: str, block: int | None) -> str:
    preset = str(preset)
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)} (got {preset!r})")
    if preset == "kids" and block is not None:
        raise ValueError("the kids preset renders every row as its own object: block must be None")
    return preset


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer (got {value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum} (got {value})")
