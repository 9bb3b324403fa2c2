"""What a cutout table is: column names, dtypes, image layout, bands, units."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT_NAME = "cutout-etl"
FORMAT_VERSION = 1
METADATA_ATTR = "cutout_etl"  # root attribute holding the dataset metadata as JSON
PIXEL_UNIT = "maggies (AB, zero point 0)"
PIXEL_UNIT_ASTROPY = "mgy"
DEFAULT_CLASSES = ("GALAXY", "QSO", "STAR")
KIDS_BANDS = ("u", "g", "r", "i")
SPLIT_NAMES = ("train", "val", "test")
MERGED_TABLE = "data"

# Parquet datasets: a directory, shards under data/, named the Hugging Face way
DATA_DIR = "data"
SIDECAR = "cutout_etl.json"
FILE_SPLIT = {"train": "train", "val": "validation", "test": "test", MERGED_TABLE: MERGED_TABLE}
DEFAULT_ROWS_PER_SHARD = 16384  # ~340 MB of 36x36x4 cutouts


@dataclass(frozen=True)
class Columns:
    """Names of the input columns the tool reads."""

    id: str = "ID"
    label: str = "SPECTYPE"
    image: str = "image"
    ra: str = "RAJ2000"
    dec: str = "DECJ2000"

    def required(self) -> tuple[str, ...]:
        return (self.id, self.ra, self.dec, self.label, self.image)


def band_names(n_bands: int) -> list[str]:
    """KiDS ugri for four bands, else b0, b1, ..."""
    return list(KIDS_BANDS) if n_bands == len(KIDS_BANDS) else [f"b{i}" for i in range(n_bands)]


def output_dtype(id_len: int, class_len: int, image_shape: tuple[int, ...]) -> np.dtype:
    """The row layout of every table cutout-etl writes.

    Column names follow the input (ID, RAJ2000, DECJ2000, SPECTYPE, image) so a
    user's astropy code reads the output unchanged; `label` is the integer
    code, `source_file` indexes the metadata's `inputs` list and `source_row`
    is the row in that file.
    """
    return np.dtype(
        [
            ("ID", f"S{max(id_len, 1)}"),
            ("RAJ2000", "<f8"),
            ("DECJ2000", "<f8"),
            ("SPECTYPE", f"S{max(class_len, 1)}"),
            ("label", "<i8"),
            ("source_file", "<i2"),
            ("source_row", "<i8"),
            ("image", "<f4", tuple(image_shape)),
        ]
    )


COLUMN_DESCRIPTIONS = {
    "ID": "survey object name",
    "RAJ2000": "right ascension (J2000)",
    "DECJ2000": "declination (J2000)",
    "SPECTYPE": "spectroscopic class, normalised (stripped, upper case)",
    "label": "integer class code: index into the metadata's classes",
    "source_file": "index into the metadata's inputs list",
    "source_row": "row of this object in its source file",
    "image": "cutout, channels last (H, W, bands), raw flux copied bit-exact",
}
COLUMN_UNITS = {"RAJ2000": "deg", "DECJ2000": "deg", "image": PIXEL_UNIT_ASTROPY}


def as_bytes(values: np.ndarray) -> np.ndarray:
    """Strings of any storage (bytes, unicode, variable-length) as stripped bytes."""
    if values.dtype.kind == "S":
        out = values
    elif values.dtype.kind == "U":
        out = np.char.encode(values, "utf-8")
    else:
        out = np.array([v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values], dtype="S")
    return np.char.strip(out)


def is_parquet_path(path: str | Path, fmt: str | None = None) -> bool:
    """Parquet when asked, or for a path ending in / or .parquet, or an existing directory.

    Pass the path as the user typed it: pathlib drops a trailing slash.
    """
    if fmt is not None:
        return fmt == "parquet"
    return str(path).endswith(("/", ".parquet")) or Path(path).is_dir()
