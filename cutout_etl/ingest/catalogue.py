"""The catalogue ingest starts from: ID, RA, Dec and class of every object, from a FITS, HDF5 or CSV table.

Only these four columns are kept (about 50 bytes a row); the pixels never
pass through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table

from ..errors import ColumnError, InputFileError, InvalidRowError
from ..schema import Columns

_FORMATS = {
    ".fits": "fits",
    ".fit": "fits",
    ".fts": "fits",
    ".gz": "fits",
    ".hdf5": "hdf5",
    ".h5": "hdf5",
    ".csv": "ascii.csv",
    ".ecsv": "ascii.ecsv",
}


@dataclass
class Catalogue:
    """The objects to ingest, in catalogue order."""

    path: Path
    ids: np.ndarray  # bytes, one width for all
    ra: np.ndarray  # degrees, as stored (the cutout file names print these values)
    dec: np.ndarray
    labels: np.ndarray  # bytes, as stored (SPECTYPE of the class files)

    def __len__(self) -> int:
        return len(self.ids)

    def class_names(self) -> np.ndarray:
        """Each row's class as a name (stripped, decoded): one class file per name."""
        return np.char.strip(np.char.decode(self.labels, "utf-8", "replace"))


def read_catalogue(path: Path, columns: Columns, table_path: str | None = None) -> Catalogue:
    """Read the four columns of `path`; InputFileError, ColumnError or InvalidRowError naming the file."""
    if not path.is_file():
        raise InputFileError(f"{path}: catalogue not found" if not path.exists() else f"{path}: not a file")
    table = _read_table(path, columns, table_path)
    names = (columns.id, columns.ra, columns.dec, columns.label)
    missing = [name for name in names if name not in table.colnames]
    if missing:
        raise ColumnError(f"{path}: catalogue has no column {', '.join(map(repr, missing))} (it has {table.colnames})")
    ra, dec = (_coordinate(path, table, name) for name in (columns.ra, columns.dec))
    bad = ~(np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise InvalidRowError(f"{path}: {int(bad.sum())} rows with an invalid RA/Dec (first: row {first})")
    if len(table) == 0:
        raise InvalidRowError(f"{path}: the catalogue has no rows")
    return Catalogue(path, _as_bytes(table[columns.id]), ra, dec, _as_bytes(table[columns.label]))


def _read_table(path: Path, columns: Columns, table_path: str | None) -> Table:
    fmt = _FORMATS.get(path.suffix.lower())
    wanted = [columns.id, columns.ra, columns.dec, columns.label]
    kwargs: dict = {}
    if fmt == "hdf5":
        kwargs["path"] = table_path
    elif fmt and fmt.startswith("ascii"):
        kwargs["include_names"] = wanted
    elif fmt == "fits":
        kwargs["memmap"] = True
    try:
        table = Table.read(path, format=fmt, **kwargs)
    except Exception as exc:  # astropy raises many kinds for an unreadable table
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputFileError(f"{path}: cannot read the catalogue ({reason})") from exc
    return table[[name for name in wanted if name in table.colnames]]


def _coordinate(path: Path, table: Table, name: str) -> np.ndarray:
    column = np.asarray(table[name])
    if column.dtype.kind not in "fiu":
        raise ColumnError(f"{path}: column '{name}' is {column.dtype}, not a number of degrees")
    return column


def _as_bytes(column: object) -> np.ndarray:
    values = np.asarray(column)
    if values.dtype.kind == "U":
        return np.char.encode(values, "utf-8")
    if values.dtype.kind == "S":
        return values
    return np.char.encode(values.astype(str), "utf-8")
