"""Reading a checked table's rows by index: pread straight from the file where the layout allows, else h5py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from ..errors import InputChangedError, InputFileError
from ..schema import RowCut
from .file_identity import FileIdentity
from .page_cache import all_cached

if TYPE_CHECKING:
    from .readers import TableInfo

IOV_MAX = max(os.sysconf("SC_IOV_MAX"), 16) if hasattr(os, "sysconf") else 16  # buffers per readv/writev call
RESIDENCY_EVERY = 64  # advise calls between two looks at whether the table is all in the page cache


def short_message(exc: BaseException) -> str:
    """The first line of an exception's message, for a one-line error."""
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def read_rows(path: Path, ds: h5py.Dataset, start: int, stop: int) -> np.ndarray:
    """Read rows [start, stop) of a table, turning HDF5 errors into one line."""
    try:
        return ds[start:stop]
    except (OSError, RuntimeError, ValueError) as exc:
        raise InputFileError(
            f"{path}: cannot read rows {start}-{stop}: corrupt or truncated ({short_message(exc)})"
        ) from exc


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
        self._offset = raw_offset(self._ds, info.dtype)
        self._fd = os.open(info.path, os.O_RDONLY) if self._offset is not None else None
        self._advised, self._resident = 0, False
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
                raise InputFileError(
                    f"{self.info.path}: cannot read rows: corrupt or truncated ({short_message(exc)})"
                ) from exc
        out = np.empty(len(rows), self.dtype)
        raw = out.view(np.uint8).data
        size = self.dtype.itemsize
        for a, b in row_runs(rows):
            self._preadv([raw[a * size : b * size]], rows, a, b)
        return out

    def _read_h5(self, rows: np.ndarray) -> np.ndarray:
        selection: np.ndarray | slice = rows
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

    def advise(self, rows: np.ndarray) -> None:
        """Ask the kernel to start reading rows at ascending, unique indices (raw tables only).

        posix_fadvise(WILLNEED) queues the reads and returns: the write pass
        advises the next block's rows before gathering this one's, so reads from
        inputs not in the page cache overlap instead of waiting one row at a time.
        """
        if self._fd is None or self._offset is None or not hasattr(os, "posix_fadvise") or self._in_memory():
            return  # macOS has no posix_fadvise: reads go unadvised
        size = self.dtype.itemsize
        for a, b in row_runs(rows):
            os.posix_fadvise(self._fd, self._offset + int(rows[a]) * size, (b - a) * size, os.POSIX_FADV_WILLNEED)

    def _in_memory(self) -> bool:
        """Whether the whole table is in the page cache (`page_cache`), looked at every RESIDENCY_EVERY calls."""
        assert self._fd is not None and self._offset is not None
        if self._advised % RESIDENCY_EVERY == 0:
            self._resident = all_cached(self._fd, self._offset, self.info.rows * self.dtype.itemsize)
        self._advised += 1
        return self._resident

    def _preadv(self, buffers: list[memoryview], rows: np.ndarray, a: int, b: int) -> None:
        """Read rows[a:b], consecutive in the file, into `buffers`."""
        assert self._fd is not None and self._offset is not None  # only called on the raw path
        want = (b - a) * self.dtype.itemsize
        got = os.preadv(self._fd, buffers, self._offset + int(rows[a]) * self.dtype.itemsize)
        if got != want:
            raise InputFileError(
                f"{self.info.path}: truncated: rows {rows[a]}-{rows[b - 1]} lie past the end of the file"
            )

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


def raw_offset(ds: h5py.Dataset, dtype: np.dtype | None = None) -> int | None:
    """The byte offset of a table whose rows can be read as raw bytes (as `dtype`), else None."""
    dtype = ds.dtype if dtype is None else dtype
    if ds.chunks is not None or ds.compression is not None or ds.external:
        return None
    if any(dtype[name].kind == "O" for name in dtype.names or ()):
        return None
    if ds.id.get_type().get_size() != dtype.itemsize:
        return None
    return ds.id.get_offset()
