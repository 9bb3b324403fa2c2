"""Which cutout file belongs to which catalogue row, band by band.

The cutout generator names a file `{band}/cutout_{band}_RA{ra}_DEC{dec}.fits`
with RA and Dec printed as Python prints the catalogue's values. A row takes
the file whose name prints its values exactly; failing that, the nearest file
within the match tolerance. Files that no row takes are reported, and
`{band}/no_overlap_objects.fits` (objects the generator found on no tile)
names why a row has no file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.table import Table
from scipy.spatial import cKDTree

from ..errors import InputFileError
from .catalogue import Catalogue

NO_OVERLAP_FILE = "no_overlap_objects.fits"
UNMATCHED_EXAMPLES = 5  # file names shown per band in the report
ARCSEC_RAD = np.pi / (180 * 3600)


@dataclass
class BandFiles:
    """One band's cutout files: names and the positions they print, and the row each is matched to."""

    band: str
    directory: Path
    names: list[str]
    ra: np.ndarray
    dec: np.ndarray
    unrecognised: list[str] = field(default_factory=list)


@dataclass
class BandMatch:
    """Per catalogue row: the index of its file in `files.names` (-1: none), and whether it is listed as no-overlap."""

    files: BandFiles
    file_of_row: np.ndarray
    no_overlap: np.ndarray
    within_tolerance: int  # rows matched by position, not by the exact printed values

    def unmatched_files(self) -> list[str]:
        used = np.zeros(len(self.files.names), dtype=bool)
        used[self.file_of_row[self.file_of_row >= 0]] = True
        return [self.files.names[i] for i in np.flatnonzero(~used)]

    def report(self) -> dict:
        unmatched = self.unmatched_files()
        return {
            "files": len(self.files.names),
            "rows_matched": int((self.file_of_row >= 0).sum()),
            "matched_within_tolerance": self.within_tolerance,
            "unmatched_files": len(unmatched),
            "unmatched_examples": unmatched[:UNMATCHED_EXAMPLES],
            "unrecognised_files": len(self.files.unrecognised),
            "unrecognised_examples": self.files.unrecognised[:UNMATCHED_EXAMPLES],
            "listed_no_overlap": int(self.no_overlap.sum()),
        }


def list_band(cutouts: Path, band: str) -> BandFiles:
    """The band's directory listing, parsed; names that are not cutouts of this band are kept as unrecognised."""
    directory = cutouts / band
    if not directory.is_dir():
        raise InputFileError(f"{directory}: no directory for band '{band}' in the cutouts directory")
    pattern = re.compile(rf"cutout_{re.escape(band)}_RA(.+)_DEC(.+)\.fits")
    names, ra, dec, unrecognised = [], [], [], []
    for name in sorted(entry.name for entry in directory.iterdir()):
        found = pattern.fullmatch(name)
        position = _floats(found.groups()) if found else None
        if position is None:
            if name != NO_OVERLAP_FILE:
                unrecognised.append(name)
            continue
        names.append(name)
        ra.append(position[0])
        dec.append(position[1])
    return BandFiles(band, directory, names, np.array(ra, dtype="f8"), np.array(dec, dtype="f8"), unrecognised)


def _floats(texts: tuple[str, ...]) -> tuple[float, ...] | None:
    try:
        return tuple(float(text) for text in texts)
    except ValueError:
        return None


def match_band(catalogue: Catalogue, files: BandFiles, tolerance_arcsec: float, ra_col: str, dec_col: str) -> BandMatch:
    """Each row's file: the exact printed name first, then the nearest within the tolerance."""
    index = {name: i for i, name in enumerate(files.names)}
    prefix = f"cutout_{files.band}_RA"
    file_of_row = np.array(
        [index.get(f"{prefix}{ra}_DEC{dec}.fits", -1) for ra, dec in zip(catalogue.ra, catalogue.dec)], dtype=np.int64
    )
    within = 0
    if tolerance_arcsec > 0 and len(files.names) and (file_of_row < 0).any():
        within = _match_nearby(catalogue, files, file_of_row, tolerance_arcsec)
    no_overlap = _no_overlap_rows(catalogue, files.directory / NO_OVERLAP_FILE, tolerance_arcsec, ra_col, dec_col)
    return BandMatch(files, file_of_row, no_overlap, within)


def _match_nearby(catalogue: Catalogue, files: BandFiles, file_of_row: np.ndarray, tolerance_arcsec: float) -> int:
    """Give rows without an exact name their nearest file not taken exactly, if within the tolerance."""
    free = np.ones(len(files.names), dtype=bool)
    free[file_of_row[file_of_row >= 0]] = False
    rows = np.flatnonzero(file_of_row < 0)
    candidates = np.flatnonzero(free)
    if len(candidates) == 0:
        return 0
    tree = cKDTree(_unit_vectors(files.ra[candidates], files.dec[candidates]))
    distance, nearest = tree.query(_unit_vectors(catalogue.ra[rows], catalogue.dec[rows]))
    close = distance <= 2 * np.sin(tolerance_arcsec * ARCSEC_RAD / 2)
    file_of_row[rows[close]] = candidates[nearest[close]]
    return int(close.sum())


def _unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    ra_rad, dec_rad = np.radians(np.asarray(ra, "f8")), np.radians(np.asarray(dec, "f8"))
    return np.column_stack([np.cos(dec_rad) * np.cos(ra_rad), np.cos(dec_rad) * np.sin(ra_rad), np.sin(dec_rad)])


def _no_overlap_rows(
    catalogue: Catalogue, path: Path, tolerance_arcsec: float, ra_col: str, dec_col: str
) -> np.ndarray:
    """Rows listed in the band's no-overlap table (the generator's copy of their catalogue row)."""
    listed = np.zeros(len(catalogue), dtype=bool)
    if not path.exists():
        return listed
    try:
        table = Table.read(path, format="fits")
        ra, dec = np.asarray(table[ra_col], "f8"), np.asarray(table[dec_col], "f8")
    except KeyError as exc:
        raise InputFileError(f"{path}: has no column {exc} (the catalogue's RA/Dec columns)") from exc
    except Exception as exc:
        raise InputFileError(f"{path}: cannot read the no-overlap table ({str(exc).splitlines()[0]})") from exc
    if len(ra) == 0:
        return listed
    tree = cKDTree(_unit_vectors(ra, dec))
    distance, _ = tree.query(_unit_vectors(catalogue.ra, catalogue.dec))
    return distance <= 2 * np.sin(max(tolerance_arcsec, 1e-6) * ARCSEC_RAD / 2)
