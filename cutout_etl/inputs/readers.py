"""Everything that opens input files: find the table, check its layout, yield row chunks.

Which file a path names lives in `file_identity`, reading rows by index in `row_reader`; their names are
re-exported here, where the rest of the package looks for them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from h5py import h5t, h5z

from ..errors import ColumnError, EmptyTableError, ImageShapeError, InputFileError, NoTableError
from ..schema import METADATA_ATTR, Columns
from .file_identity import FileIdentity, same_file, sha256_file
from .row_reader import IOV_MAX, RowReader, read_rows, row_runs
from .row_reader import short_message as _short

__all__ = [  # the row reading and file identity names are re-exported: the package looks for them here
    "DEFAULT_CHUNK_ROWS",
    "IOV_MAX",
    "PLUGIN_FILTERS",
    "FileIdentity",
    "RowReader",
    "TableInfo",
    "find_tables",
    "inspect_table",
    "iter_chunks",
    "open_h5",
    "read_rows",
    "resolve_table_path",
    "row_runs",
    "same_file",
    "sha256_file",
]

DEFAULT_CHUNK_ROWS = 512  # 10.6 MB of 36x36x4 cutouts; larger blocks cost memory, not speed
_META_SUFFIX = ".__table_column_meta__"


@dataclass
class TableInfo:
    """One input table as found on disk, checked but not yet read."""

    path: Path
    table_path: str
    rows: int
    dtype: np.dtype
    columns: Columns
    image_shape: tuple[int, int, int]
    image_dtype: np.dtype
    size: int
    notes: list[str] = field(default_factory=list)
    skipped_columns: list[str] = field(default_factory=list)  # columns h5py cannot map: left out of `dtype`
    identity: FileIdentity | None = None  # of the file pass 1 opened; later opens must find the same

    def check_unchanged(self) -> None:
        """Raise InputChangedError if the path no longer names the file first opened."""
        if self.identity is not None:
            self.identity.check_path(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def id_len(self) -> int:
        return _string_len(self.dtype[self.columns.id])

    @property
    def column_list(self) -> list[dict]:
        return [
            {"name": n, "dtype": str(self.dtype[n].base), "shape": list(self.dtype[n].shape)}
            for n in self.dtype.names or ()
        ]


def _string_len(dt: np.dtype) -> int:
    if dt.kind == "S":
        return dt.itemsize
    if dt.kind == "U":
        return dt.itemsize // 4
    return 32  # numbers or variable-length strings: converted per chunk


def open_h5(path: Path) -> h5py.File:
    """Open an HDF5 file for reading, or raise a one-line InputFileError."""
    if not path.exists():
        raise InputFileError(f"{path}: no such file")
    if path.is_dir():
        raise InputFileError(f"{path}: is a directory, expected an HDF5 file")
    if not h5py.is_hdf5(path):
        raise InputFileError(f"{path}: not an HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        expected = re.search(r"stored_eof = (\d+)", str(exc))
        if expected:
            raise InputFileError(
                f"{path}: truncated: {path.stat().st_size} bytes, the HDF5 header expects {expected.group(1)}"
            ) from exc
        raise InputFileError(f"{path}: cannot open HDF5 file, truncated or corrupt ({_short(exc)})") from exc


def find_tables(f: h5py.File) -> list[str]:
    """Paths of the compound (table) datasets in a file, astropy meta excluded."""
    found: list[str] = []
    undecodable: list[bytes] = []

    def visit(name: str | bytes, obj: object) -> None:
        if isinstance(name, bytes):  # h5py hands over a name it cannot decode as bytes
            undecodable.append(name)
        elif isinstance(obj, h5py.Dataset) and _is_table(obj) and not name.endswith(_META_SUFFIX):
            found.append(name)

    try:
        f.visititems(visit)
    except UnicodeError as exc:
        raise _bad_name(f.filename, _short(exc)) from exc
    except (OSError, RuntimeError, KeyError) as exc:
        raise InputFileError(f"{f.filename}: cannot list the file's contents, corrupt ({_short(exc)})") from exc
    if undecodable:
        raise _bad_name(f.filename, repr(undecodable[0]))
    return sorted(found)


def _is_table(ds: h5py.Dataset) -> bool:
    """A 1-d compound dataset; asks the file type, not `ds.dtype`, which fails on columns h5py cannot map."""
    return ds.ndim == 1 and ds.id.get_type().get_class() == h5t.COMPOUND


def _bad_name(filename: str | Path, detail: str) -> InputFileError:
    return InputFileError(f"{filename}: a name inside the file is not valid UTF-8: corrupt ({detail})")


def resolve_table_path(path: Path, f: h5py.File, table_path: str | None) -> str:
    tables = find_tables(f)
    if table_path is not None:
        if table_path.strip("/") not in tables:
            listed = ", ".join(tables) or "none"
            raise NoTableError(f"{path}: no table at '{table_path}' (tables found: {listed})")
        return table_path.strip("/")
    if not tables:
        raise NoTableError(f"{path}: no table (compound dataset) found in the file")
    if len(tables) > 1:
        if METADATA_ATTR in f.attrs:  # an output of build or split given where class files go
            raise NoTableError(
                f"{path}: a cutout-etl dataset (tables {', '.join(tables)}), not a class file: "
                f"describe it with `cutout-etl info {path}` (or choose a table with --table-path)"
            )
        raise NoTableError(f"{path}: {len(tables)} tables ({', '.join(tables)}); choose one with --table-path")
    return tables[0]


def inspect_table(path: Path, f: h5py.File, table_path: str | None, columns: Columns) -> TableInfo:
    """Check a table's structure: columns, label type, image layout, storage."""
    name = resolve_table_path(path, f, table_path)
    ds = _open_table(path, f, name)
    _check_filters(path, ds, name)
    dtype, skipped = _readable_dtype(path, ds, name, columns)
    names = dtype.names or ()
    missing = [c for c in columns.required() if c not in names]
    if missing:
        raise ColumnError(
            f"{path}: table '{name}' has no column {', '.join(repr(m) for m in missing)} (columns: {', '.join(names)})"
        )
    label_dt = dtype[columns.label]
    if label_dt.kind not in "SUO":
        raise ColumnError(
            f"{path}: label column '{columns.label}' is numeric ({label_dt}); expected class names as strings"
        )
    for column in (columns.ra, columns.dec):
        _check_position(path, dtype[column], column)
    image_shape, image_dtype = _check_image(path, dtype[columns.image], columns.image)
    rows = ds.shape[0]
    if rows == 0:
        raise EmptyTableError(f"{path}: table '{name}' has zero rows")
    _check_storage(path, ds, name)
    identity = FileIdentity.of_h5(f)
    return TableInfo(
        path=path,
        table_path=name,
        rows=rows,
        dtype=dtype,
        columns=columns,
        image_shape=image_shape,
        image_dtype=image_dtype,
        size=identity.size,
        identity=identity,
        notes=[f"column '{column}' ({kind}) cannot be read; skipped" for column, kind in skipped],
        skipped_columns=[column for column, _ in skipped],
    )


def _open_table(path: Path, f: h5py.File, name: str) -> h5py.Dataset:
    try:
        return f[name]
    except UnicodeError as exc:
        raise _bad_name(path, _short(exc)) from exc
    except (KeyError, OSError, RuntimeError) as exc:
        raise InputFileError(f"{path}: cannot open table '{name}', corrupt ({_short(exc)})") from exc


def _readable_dtype(
    path: Path, ds: h5py.Dataset, name: str, columns: Columns
) -> tuple[np.dtype, list[tuple[str, str]]]:
    """The table's row dtype, and the (column, kind) of members h5py cannot map (a 128-bit float).

    Such a member is left out of the dtype, the others keep their offsets in
    the file's row (itemsize = the file's row size), so rows still read
    straight from disk. A required column that cannot be mapped is an error.
    """
    try:
        return ds.dtype, []
    except (TypeError, ValueError):
        pass
    file_type = ds.id.get_type()
    names, formats, offsets, skipped = [], [], [], []
    for i in range(file_type.get_nmembers()):
        raw_name = file_type.get_member_name(i)
        try:
            member = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad_name(path, repr(raw_name)) from None
        member_type = file_type.get_member_type(i)
        try:
            formats.append(member_type.dtype)
        except (TypeError, ValueError) as exc:
            kind = _describe_type(member_type)
            if member in columns.required():
                raise ColumnError(
                    f"{path}: table '{name}' column '{member}' is a {kind}, which cannot be read ({_short(exc)})"
                ) from exc
            skipped.append((member, kind))
            continue
        names.append(member)
        offsets.append(file_type.get_member_offset(i))
    readable = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": file_type.get_size()})
    return readable, skipped


def _describe_type(member_type: h5t.TypeID) -> str:
    bits = member_type.get_size() * 8
    kinds = {h5t.FLOAT: "float", h5t.INTEGER: "integer"}
    return f"{bits}-bit {kinds.get(member_type.get_class(), 'HDF5 type')}"


def _check_position(path: Path, dt: np.dtype, column: str) -> None:
    """RA and Dec: one number (degrees) per row."""
    if dt.shape == () and dt.kind in "iuf":
        return
    if dt.shape:
        found = f"{dt.base} arrays of shape {dt.shape}"
    elif dt.kind in "SUO":
        found = f"text ({dt})"
    else:
        found = str(dt)
    raise ColumnError(
        f"{path}: position column '{column}' holds {found}; expected one number (degrees) per row, integer or float"
    )


def _check_image(path: Path, dt: np.dtype, column: str) -> tuple[tuple[int, int, int], np.dtype]:
    shape = dt.shape
    if dt.base.kind != "f" or dt.base.itemsize not in (4, 8):
        raise ImageShapeError(f"{path}: image column '{column}' has dtype {dt.base}; expected float32 or float64")
    if len(shape) != 3:
        raise ImageShapeError(f"{path}: image column '{column}' has shape {shape}; expected (height, width, bands)")
    h, w, b = shape
    if shape[0] < shape[1] and shape[1] == shape[2]:
        raise ImageShapeError(
            f"{path}: image column '{column}' looks channels-first {shape}; expected channels last (H, W, bands)"
        )
    if h != w or b > h:
        raise ImageShapeError(
            f"{path}: image column '{column}' has shape {shape}; expected square cutouts, channels last (H, W, bands)"
        )
    return (h, w, b), dt.base


def _check_storage(path: Path, ds: h5py.Dataset, name: str) -> None:
    """A contiguous table that runs past the end of the file is a truncated file."""
    offset = ds.id.get_offset()
    if ds.chunks is None and offset is not None:
        end = offset + ds.shape[0] * ds.id.get_type().get_size()
        size = path.stat().st_size
        if end > size:
            raise InputFileError(f"{path}: truncated: table '{name}' needs {end} bytes, the file has {size}")


# Filters that plugins provide (registered ids: https://github.com/HDFGroup/hdf5_plugins/blob/master/docs/RegisteredFilterPlugins.md)
PLUGIN_FILTERS = {
    307: "bzip2",
    32000: "LZF",
    32001: "Blosc",
    32004: "LZ4",
    32008: "bitshuffle",
    32013: "ZFP",
    32015: "Zstandard",
    32017: "SZ",
    32018: "FCIDECOMP",
    32026: "Blosc2",
}


def _check_filters(path: Path, ds: h5py.Dataset, name: str) -> None:
    """Every filter of the table's pipeline must be installed; name the missing one and where to get it."""
    missing = [spec for spec in _filters(ds) if not h5z.filter_avail(spec[0])]
    if missing and _load_hdf5plugin():
        missing = [spec for spec in missing if not h5z.filter_avail(spec[0])]
    if missing:
        filter_id, stored_name = missing[0]
        known = PLUGIN_FILTERS.get(filter_id) or stored_name
        which = f"the {known} filter" if known else "a filter"
        raise InputFileError(
            f"{path}: table '{name}' is compressed with {which} (HDF5 filter id {filter_id}), "
            "which is not installed; install it with `pip install hdf5plugin`"
        )


def _filters(ds: h5py.Dataset) -> list[tuple[int, str]]:
    """(id, name stored in the file) of each filter in the table's pipeline."""
    dcpl = ds.id.get_create_plist()
    specs = [dcpl.get_filter(i) for i in range(dcpl.get_nfilters())]
    return [(int(spec[0]), spec[3].decode("utf-8", "replace")) for spec in specs]


def _load_hdf5plugin() -> bool:
    """Import hdf5plugin if installed: it registers its filters on import. Only when a table needs one."""
    try:
        import hdf5plugin  # noqa: F401
    except ImportError:
        return False
    return True


def iter_chunks(
    info: TableInfo, f: h5py.File, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first row, structured rows) chunk by chunk.

    The next chunk's rows are requested (`RowReader.advise`) before this one is read, so that a cold
    input is read from disk while the caller works on the chunk before.
    """
    reader = RowReader(info, f)
    try:
        for start in range(0, info.rows, chunk_rows):
            stop = min(start + chunk_rows, info.rows)
            reader.advise(np.arange(stop, min(stop + chunk_rows, info.rows)))
            yield start, reader.read(np.arange(start, stop))
    finally:
        reader.close()
