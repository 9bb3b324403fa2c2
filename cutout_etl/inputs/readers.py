"""Everything that opens input files: find the table, check its layout, yield row chunks."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from h5py import h5t, h5z

from ..errors import ColumnError, EmptyTableError, ImageShapeError, InputChangedError, InputFileError, NoTableError
from ..schema import Columns, RowCut

DEFAULT_CHUNK_ROWS = 512  # 10.6 MB of 36x36x4 cutouts; larger blocks cost memory, not speed
_META_SUFFIX = ".__table_column_meta__"
_HOST = socket.gethostname()
IOV_MAX = max(os.sysconf("SC_IOV_MAX"), 16) if hasattr(os, "sysconf") else 16  # buffers per readv/writev call


@dataclass(frozen=True)
class FileIdentity:
    """Which file a path named when it was opened: the one place that says whether it is still that file.

    Pass 1 records the identity of the file it actually read; every later open
    (pass 2, Dask tasks, the SHA-256 hasher, the duplicate-ID image re-read) and
    the last check before the output is sealed compare against it, so a file
    renamed over an input (another inode) or rewritten in place (another size
    or mtime) stops the run instead of mixing two files' rows. Device numbers
    are compared only on the same host: a shared file system may number its
    device differently on each node of a cluster.
    """

    dev: int
    ino: int
    size: int
    mtime_ns: int
    host: str = ""

    @classmethod
    def of_stat(cls, st: os.stat_result) -> FileIdentity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, _HOST)

    @classmethod
    def of_fd(cls, fd: int) -> FileIdentity:
        return cls.of_stat(os.fstat(fd))

    @classmethod
    def of_path(cls, path: Path) -> FileIdentity:
        return cls.of_stat(os.stat(path))

    @classmethod
    def of_h5(cls, f: h5py.File) -> FileIdentity:
        """The file h5py holds open (the default sec2 driver's descriptor)."""
        return cls.of_fd(f.id.get_vfd_handle())

    def same_file(self, other: FileIdentity | None) -> bool:
        if other is None:
            return False
        same_dev = self.dev == other.dev or self.host != other.host
        return same_dev and (self.ino, self.size, self.mtime_ns) == (other.ino, other.size, other.mtime_ns)

    def check(self, path: Path, now: FileIdentity | None) -> None:
        """Raise InputChangedError unless `now` is the file this identity was taken from."""
        if not self.same_file(now):
            raise InputChangedError(f"{path}: changed while it was being read (replaced or rewritten); nothing written")

    def check_fd(self, path: Path, fd: int) -> None:
        self.check(path, FileIdentity.of_fd(fd))

    def check_path(self, path: Path) -> None:
        """The file the path names now (a missing file counts as changed)."""
        try:
            now = FileIdentity.of_path(path)
        except OSError:
            now = None
        self.check(path, now)


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
            for n in self.dtype.names
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


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


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
        raise NoTableError(
            f"{path}: {len(tables)} tables ({', '.join(tables)}); choose one with --table-path"
        )
    return tables[0]


def inspect_table(path: Path, f: h5py.File, table_path: str | None, columns: Columns) -> TableInfo:
    """Check a table's structure: columns, label type, image layout, storage."""
    name = resolve_table_path(path, f, table_path)
    ds = _open_table(path, f, name)
    _check_filters(path, ds, name)
    dtype, skipped = _readable_dtype(path, ds, name, columns)
    missing = [c for c in columns.required() if c not in dtype.names]
    if missing:
        raise ColumnError(
            f"{path}: table '{name}' has no column {', '.join(repr(m) for m in missing)} "
            f"(columns: {', '.join(dtype.names)})"
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


def _readable_dtype(path: Path, ds: h5py.Dataset, name: str, columns: Columns) -> tuple[np.dtype, list[tuple[str, str]]]:
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
        raise ImageShapeError(
            f"{path}: image column '{column}' has shape {shape}; expected (height, width, bands)"
        )
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
            raise InputFileError(
                f"{path}: truncated: table '{name}' needs {end} bytes, the file has {size}"
            )


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


def read_rows(path: Path, ds: h5py.Dataset, start: int, stop: int) -> np.ndarray:
    """Read rows [start, stop) of a table, turning HDF5 errors into one line."""
    try:
        return ds[start:stop]
    except (OSError, RuntimeError, ValueError) as exc:
        raise InputFileError(f"{path}: cannot read rows {start}-{stop}: corrupt or truncated ({_short(exc)})") from exc


def iter_chunks(
    info: TableInfo, f: h5py.File, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first row, structured rows) chunk by chunk."""
    reader = RowReader(info, f)
    try:
        for start in range(0, info.rows, chunk_rows):
            yield start, reader.read(np.arange(start, min(start + chunk_rows, info.rows)))
    finally:
        reader.close()


def sha256_file(path: Path, block: int = 1 << 22, stop: threading.Event | None = None) -> tuple[str, FileIdentity]:
    """SHA-256 of a file and the identity of the file hashed; gives up (returns "") as soon as `stop` is set.

    The identity is taken from the descriptor hashed, so the caller can check
    that the digest is of the file the run read; a file rewritten while it is
    hashed raises InputChangedError. Reads into one reused buffer: a fresh
    4 MiB object per read costs page faults.
    """
    digest = hashlib.sha256()
    buffer = bytearray(block)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fh:
        identity = FileIdentity.of_fd(fh.fileno())
        while size := fh.readinto(buffer):
            if stop is not None and stop.is_set():
                return "", identity
            digest.update(view[:size])
        identity.check_fd(path, fh.fileno())
    return digest.hexdigest(), identity


def same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


class RowReader:
    """Rows of one table by index, in any order.

    A contiguous, unfiltered table (what astropy writes) is read with pread
    straight from its byte offset: no HDF5 selection machinery, no copy.
    Chunked or compressed tables, or ones holding variable-length fields, go
    through h5py.
    """

    def __init__(self, info: TableInfo, f: h5py.File) -> None:
        self.info = info
        self._ds = f[info.table_path]
        self.dtype = info.dtype
        self._offset = _raw_offset(self._ds, info.dtype)
        self._fd = os.open(info.path, os.O_RDONLY) if self._offset is not None else None
        try:
            self._check_identity(f)
        except InputChangedError:
            self.close()
            raise
        image = info.columns.image
        raw_float32 = self._fd is not None and self.dtype[image].base == np.float32
        self._cut = RowCut.of(self.dtype, image) if raw_float32 else None

    def _check_identity(self, f: h5py.File) -> None:
        """Both files this reader reads (h5py's and the raw descriptor) are the one pass 1 read."""
        identity = self.info.identity
        if identity is None:
            return
        identity.check(self.info.path, FileIdentity.of_h5(f))
        if self._fd is not None:
            identity.check_fd(self.info.path, self._fd)

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Rows at the given (ascending, unique) indices as a structured array."""
        if self._fd is None:
            try:
                return self._read_h5(rows)
            except (OSError, RuntimeError, ValueError) as exc:
                raise InputFileError(f"{self.info.path}: cannot read rows: corrupt or truncated ({_short(exc)})") from exc
        out = np.empty(len(rows), self.dtype)
        raw = memoryview(out.view(np.uint8))
        size = self.dtype.itemsize
        for a, b in row_runs(rows):
            self._preadv([raw[a * size : b * size]], rows, a, b)
        return out

    def _read_h5(self, rows: np.ndarray) -> np.ndarray:
        selection = rows
        if len(rows) and rows[-1] - rows[0] == len(rows) - 1:
            selection = slice(int(rows[0]), int(rows[-1]) + 1)
        if not self.info.skipped_columns:
            return self._ds[selection] if len(rows) else self._ds[0:0]
        out = np.empty(len(rows), self.dtype)  # read with this memory type: `self._ds.dtype` cannot be made
        if len(rows):
            self._ds.read_direct(out, selection)
        return out

    def read_into(self, rows: np.ndarray, images: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Rows at ascending, unique indices: row i's image into images[slots[i]]; the other fields returned.

        From a raw float32 table the images are read straight into `images`
        (no intermediate copy); otherwise they are read and cast.
        """
        cut = self._cut
        if cut is None or images.dtype != np.float32 or not images.flags.c_contiguous:
            data = self.read(rows)
            images[slots] = data[self.info.columns.image]
            return data
        rest = np.empty(len(rows), cut.rest)
        buffers, per_row = cut.buffers(rest, images, slots.tolist()), cut.buffers_per_row
        for a, b in row_runs(rows, IOV_MAX // per_row):
            self._preadv(buffers[a * per_row : b * per_row], rows, a, b)
        return rest

    def _preadv(self, buffers: list[memoryview], rows: np.ndarray, a: int, b: int) -> None:
        """Read rows[a:b], consecutive in the file, into `buffers`."""
        want = (b - a) * self.dtype.itemsize
        got = os.preadv(self._fd, buffers, self._offset + int(rows[a]) * self.dtype.itemsize)
        if got != want:
            raise InputFileError(f"{self.info.path}: truncated: rows {rows[a]}-{rows[b - 1]} lie past the end of the file")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def row_runs(rows: np.ndarray, longest: int | None = None) -> Iterator[tuple[int, int]]:
    """(a, b) index ranges of `rows` that are consecutive numbers, at most `longest` long."""
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    for a, b in zip(np.r_[0, breaks].tolist(), np.r_[breaks, len(rows)].tolist()):
        step = longest or b - a
        for start in range(a, b, max(step, 1)):
            yield start, min(start + step, b)


def _raw_offset(ds: h5py.Dataset, dtype: np.dtype | None = None) -> int | None:
    """The byte offset of a table whose rows can be read as raw bytes (as `dtype`), else None."""
    dtype = ds.dtype if dtype is None else dtype
    if ds.chunks is not None or ds.compression is not None or ds.external:
        return None
    if any(dtype[name].kind == "O" for name in dtype.names or ()):
        return None
    if ds.id.get_type().get_size() != dtype.itemsize:
        return None
    return ds.id.get_offset()
