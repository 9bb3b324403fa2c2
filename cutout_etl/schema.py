"""What a cutout table is: column names, dtypes, image layout, bands, units."""

from __future__ import annotations

from collections.abc import Sequence
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


@dataclass(frozen=True)
class RowCut:
    """A row layout with one field (the image) held apart from the others.

    `rest` is the row's other fields, packed in their order: a row is
    rest[:offset] + field + rest[offset:]. Blocks keep the images in one
    contiguous array and the rest in another, and move whole rows between
    them and a file with vectored I/O (`buffers`), never copying an image.
    """

    rest: np.dtype
    offset: int
    field_size: int

    @classmethod
    def of(cls, dtype: np.dtype, name: str) -> RowCut | None:
        """The cut of field `name` out of `dtype`; None if other fields overlap it."""
        cut_at, cut_size = dtype.fields[name][1], dtype[name].itemsize
        names, formats, offsets = [], [], []
        for other in dtype.names:
            if other == name:
                continue
            field_dtype, offset = dtype.fields[other][:2]
            if offset < cut_at + cut_size and offset + field_dtype.itemsize > cut_at:
                return None
            names.append(other)
            formats.append(field_dtype)
            offsets.append(offset if offset < cut_at else offset - cut_size)
        rest = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": dtype.itemsize - cut_size})
        return cls(rest, cut_at, cut_size)

    @property
    def row_size(self) -> int:
        return self.rest.itemsize + self.field_size

    @property
    def buffers_per_row(self) -> int:
        return 1 + (self.offset > 0) + (self.offset < self.rest.itemsize)

    def buffers(self, rest: np.ndarray, field: np.ndarray, slots: Sequence[int]) -> list[memoryview]:
        """The memory of rows 0..n-1 in file order: rest[i] around field[slots[i]].

        `rest` has dtype `self.rest` and `field` is C-contiguous with rows of
        `field_size` bytes; both are written through these views (readv) or
        read (writev).
        """
        rest_bytes = memoryview(rest.view(np.uint8)) if len(rest) else memoryview(b"")
        field_bytes = memoryview(field.reshape(-1).view(np.uint8)) if field.size else memoryview(b"")
        width, cut, size = self.rest.itemsize, self.offset, self.field_size
        out: list[memoryview] = []
        for i, slot in enumerate(slots):
            start = i * width
            if cut:
                out.append(rest_bytes[start:start + cut])
            out.append(field_bytes[slot * size:(slot + 1) * size])
            if cut < width:
                out.append(rest_bytes[start + cut:start + width])
        return out


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
