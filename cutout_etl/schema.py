"""What a cutout table is: column names, dtypes, image layout, bands, units."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import yaml

FORMAT_NAME = "cutout-etl"
FORMAT_VERSION = 2  # 2: the digest covers the match and group radii, grouping and cell size
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
FILE_SPLIT = {
    "train": "train",
    "val": "validation",
    "test": "test",
    "test_faint": "test_faint",
    MERGED_TABLE: MERGED_TABLE,
}
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


@dataclass(frozen=True)
class OutputColumn:
    """One column of every table cutout-etl writes, in every format.

    `numpy` is the HDF5/numpy type; "S{id_bytes}" and "S{class_bytes}" are
    filled from the data, and a `shaped` column holds one image per row.
    `arrow` is the Arrow/Parquet type (a pyarrow alias; a shaped column is a
    fixed-size list of it) and `hf` the Hugging Face feature kind ("Value",
    "ClassLabel", "Sequence"). `role` says which checksum stream it feeds:
    content (in the dataset digest) or provenance (outside it).
    """

    name: str
    arrow_name: str
    numpy: str
    arrow: str
    role: str
    description: str
    unit: str | None = None
    hf: str = "Value"
    shaped: bool = False


# The one list of output columns, in stored order; every layout, schema and checksum is derived from it.
OUTPUT_COLUMNS = (
    OutputColumn("ID", "id", "S{id_bytes}", "string", "content", "survey object name"),
    OutputColumn("RAJ2000", "ra", "<f8", "float64", "content", "right ascension (J2000)", "deg"),
    OutputColumn("DECJ2000", "dec", "<f8", "float64", "content", "declination (J2000)", "deg"),
    OutputColumn(
        "SPECTYPE",
        "spectype",
        "S{class_bytes}",
        "string",
        "content",
        "spectroscopic class, normalised (stripped, upper case)",
    ),
    OutputColumn(
        "label",
        "label",
        "<i8",
        "int64",
        "content",
        "integer class code: index into the metadata's classes",
        hf="ClassLabel",
    ),
    OutputColumn("source_file", "source_file", "<i2", "int16", "provenance", "index into the metadata's inputs list"),
    OutputColumn("source_row", "source_row", "<i8", "int64", "provenance", "row of this object in its source file"),
    OutputColumn(
        "image",
        "image",
        "<f4",
        "float32",
        "content",
        "cutout, channels last (H, W, bands), raw flux copied bit-exact",
        PIXEL_UNIT_ASTROPY,
        hf="Sequence",
        shaped=True,
    ),
)


def output_dtype(id_len: int, class_len: int, image_shape: tuple[int, ...]) -> np.dtype:
    """The row layout of every table cutout-etl writes (`OUTPUT_COLUMNS`).

    Column names follow the input (ID, RAJ2000, DECJ2000, SPECTYPE, image) so a
    user's astropy code reads the output unchanged; `label` is the integer
    code, `source_file` indexes the metadata's `inputs` list and `source_row`
    is the row in that file.
    """
    sizes = {"id_bytes": max(id_len, 1), "class_bytes": max(class_len, 1)}
    fields = []
    for column in OUTPUT_COLUMNS:
        numpy = column.numpy.format(**sizes)
        fields.append((column.name, numpy, tuple(image_shape)) if column.shaped else (column.name, numpy))
    return np.dtype(fields)


def row_dtype(metadata: Mapping) -> np.dtype:
    """The structured row layout of a dataset's tables, from its metadata."""
    sizes = metadata["row_dtype"]
    return output_dtype(sizes["id_bytes"], sizes["class_bytes"], tuple(metadata["image_shape"]))


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
        fields, field_names = dtype.fields, dtype.names
        if fields is None or field_names is None:
            raise TypeError(f"not a structured dtype: {dtype}")
        cut_at, cut_size = fields[name][1], dtype[name].itemsize
        names, formats, offsets = [], [], []
        for other in field_names:
            if other == name:
                continue
            field_dtype, offset = fields[other][:2]
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
        rest_bytes = rest.view(np.uint8).data if len(rest) else memoryview(b"")
        field_bytes = field.reshape(-1).view(np.uint8).data if field.size else memoryview(b"")
        width, cut, size = self.rest.itemsize, self.offset, self.field_size
        out: list[memoryview] = []
        for i, slot in enumerate(slots):
            start = i * width
            if cut:
                out.append(rest_bytes[start : start + cut])
            out.append(field_bytes[slot * size : (slot + 1) * size])
            if cut < width:
                out.append(rest_bytes[start + cut : start + width])
        return out


COLUMN_DESCRIPTIONS = {c.name: c.description for c in OUTPUT_COLUMNS}
COLUMN_UNITS = {c.name: c.unit for c in OUTPUT_COLUMNS if c.unit}
CONTENT_COLUMNS = tuple(c.name for c in OUTPUT_COLUMNS if c.role == "content")
PROVENANCE_COLUMNS = tuple(c.name for c in OUTPUT_COLUMNS if c.role == "provenance")


def column_meta_yaml(dtype: np.dtype, table_meta: Mapping) -> np.ndarray:
    """astropy's serialized column metadata, so Table.read gets units, descriptions and meta.

    The lines `astropy.table.meta.get_yaml_from_table` writes for our row
    layout (a test holds them equal), made here because importing
    astropy.table costs half a second.
    """
    lines = ["datatype:"]
    for name in dtype.names or ():
        column = dtype[name]
        entry = {"name": name}
        if name in COLUMN_UNITS:
            entry["unit"] = COLUMN_UNITS[name]
        # astropy stores multidimensional columns' type as a subtype of "string" (ECSV).
        entry["datatype"] = "string" if column.kind in "SU" or column.shape else column.name
        if name in COLUMN_DESCRIPTIONS:
            entry["description"] = COLUMN_DESCRIPTIONS[name]
        if column.shape:
            entry["subtype"] = f"{column.base.name}[{','.join(map(str, column.shape))}]"
        lines.append(f"- {_flow_yaml(entry)}")
    lines.append("meta: !!omap")
    lines.extend(f"- {_flow_yaml({key: value})}" for key, value in table_meta.items())
    return np.array([line.encode("utf-8") for line in lines])


def _flow_yaml(mapping: Mapping) -> str:
    return yaml.safe_dump(dict(mapping), default_flow_style=True, sort_keys=False, width=math.inf).strip()


def as_bytes(values: np.ndarray) -> np.ndarray:
    """Strings of any storage (bytes, unicode, variable-length) as stripped bytes."""
    if values.dtype.kind == "S":
        out = values
    elif values.dtype.kind == "U":
        out = np.char.encode(values, "utf-8")
    else:
        out = np.array([v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values], dtype="S")
    return np.char.strip(out)
