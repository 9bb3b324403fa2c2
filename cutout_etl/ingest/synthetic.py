"""Per-band FITS cutouts written the way the MPI cutout generator writes them, from a class table's images.

THE PIXELS ARE WHATEVER THE TABLE HOLDS (the demo's synthetic images in the
tests and the benchmark). For tests and benchmarks: each object and band
becomes `{out}/{band}/cutout_{band}_RA{ra}_DEC{dec}.fits`, a primary HDU of
float64 pixels with a TAN WCS of `pixel_scale` arcsec that puts the object
where astropy `Cutout2D` puts it (pixel ceil(n/2 - 1) + 1/2 of an even side).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS


def cutout_path(out: Path, band: str, ra: float, dec: float) -> Path:
    """The generator's name for one object's cutout in one band (the values printed as Python prints them)."""
    return out / band / f"cutout_{band}_RA{ra}_DEC{dec}.fits"


def cutout_wcs(ra: float, dec: float, shape: tuple[int, int], pixel_scale: float) -> WCS:
    """A TAN WCS with the object at the cutout's centre (0-based pixel ((W-1)/2, (H-1)/2))."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [(shape[1] - 1) / 2 + 1, (shape[0] - 1) / 2 + 1]
    wcs.wcs.cdelt = [-pixel_scale / 3600, pixel_scale / 3600]
    return wcs


def write_cutouts(
    table: Table, out: Path, bands: Sequence[str] = ("u", "g", "r", "i"), pixel_scale: float = 0.2
) -> list[Path]:
    """One FITS file per row and band of `table` (columns RAJ2000, DECJ2000, image (H, W, bands)); their paths."""
    paths = []
    for band in bands:
        (out / band).mkdir(parents=True, exist_ok=True)
    for row in table:
        ra, dec, image = row["RAJ2000"], row["DECJ2000"], np.asarray(row["image"])
        header = cutout_wcs(float(ra), float(dec), image.shape[:2], pixel_scale).to_header()
        for b, band in enumerate(bands):
            path = cutout_path(out, band, ra, dec)
            fits.PrimaryHDU(image[:, :, b].astype(np.float64), header=header).writeto(path)
            paths.append(path)
    return paths


def trim_cutout(path: Path, columns: int, side: str) -> None:
    """Cut `columns` columns off the left or right side, as Cutout2D's trim mode does at a tile edge."""
    with fits.open(path, mode="update") as hdus:
        hdu = hdus[0]
        if side == "left":
            hdu.data = hdu.data[:, columns:].copy()
            hdu.header["CRPIX1"] -= columns
        else:
            hdu.data = hdu.data[:, : hdu.data.shape[1] - columns].copy()
