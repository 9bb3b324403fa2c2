"""Reading one table of an HDF5 dataset (the write side is in hdf5.py).

A contiguous, uncompressed table, as cutout-etl writes it, is read through
one read-only memory map of its bytes: each read is a copy from the page
cache at memory speed, with no HDF5 call and no system call per batch, safe
from threads. Safety of the mapping:

- it maps the file h5py opened (checked by identity), so a file replaced by
  rename (as cutout-etl replaces its outputs) leaves it intact: readers keep
  the old inode;
- the file's size is checked when mapped: a table cut short is an error, not
  a SIGBUS; a file truncated in place while mapped is not supported (nothing
  in cutout-etl does that);
- the mapping is made on the first read and closed with the dataset; a
  forked process inherits it (shared, read-only), and a pickled `Split`
  reopens the file, and so maps it again, in its new process;
- the mapped pages count in the process's RSS, but they are the shared,
  clean page cache, which the kernel reclaims under pressure.

Any other table (chunked, compressed, another image type or byte order)
is read through h5py.
"""

from __future__ import annotations

import mmap
import os
import threading
import weakref
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from ..errors import DatasetError
from ..inputs import readers
from ..inputs.readers import FileIdentity, row_runs
from ..inputs.row_reader import raw_offset


class H5Table:
    """One table of an HDF5 dataset, read through the input readers (checked, bit-exact).

    `take` copies images and labels out of the memory-mapped table when it
    is contiguous and unfiltered (`layout` is then the mapped rows' dtype);
    otherwise it reads through h5py.
    """

    def __init__(self, path: Path, table: h5py.Dataset) -> None:
        self.path = path
        self.hdf5_table = table  # raw reads (keras) and single-column reads go straight to it
        self.image_shape = table.dtype["image"].shape
        self.layout = mapped_layout(table)
        self._offset = raw_offset(table) if self.layout is not None else None
        self._lock = threading.Lock()
        self._map: mmap.mmap | None = None
        self._rows: np.ndarray | None = None  # the mapped table, as `layout` records
        self._fd: int | None = None
        self._close_fd: Callable[[], object] = lambda: None
        if self._offset is not None:
            fd = self._fd = os.open(path, os.O_RDONLY)
            self._close_fd = weakref.finalize(self, os.close, fd)  # closed once: by close() or when collected
            FileIdentity.of_h5(table.file).check_fd(path, fd)  # the file h5py opened, not one renamed over it

    def __len__(self) -> int:
        return int(self.hdf5_table.shape[0])

    def read(self, start: int, stop: int) -> np.ndarray:
        return readers.read_rows(self.path, self.hdf5_table, start, stop)

    def take(self, rows: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of `rows` (ascending, repeats allowed), row rows[i] at position slots[i]."""
        mapped = self._mapped()
        if mapped is not None and len(rows):
            first, count = int(rows[0]), len(rows)
            # one run, in order; the span alone is not enough: sorted [5, 6, 6, 8] spans 4 rows too
            if int(rows[-1]) - first == count - 1 and int(slots[0]) == 0 and _is_range(rows) and _is_range(slots):
                return self.take_range(first, first + count)
        images = np.empty((len(rows), *self.image_shape), np.float32)
        labels = np.empty(len(rows), np.int64)
        if mapped is not None:
            images[slots], labels[slots] = mapped["image"][rows], mapped["label"][rows]
            return images, labels
        for a, b in row_runs(rows):
            data = self.read(int(rows[a]), int(rows[b - 1]) + 1)
            images[slots[a:b]], labels[slots[a:b]] = data["image"], data["label"]
        return images, labels

    def take_range(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows [start, stop) in order: from the mapping, one copy per column (the loaders' path: keep it short)."""
        mapped = self._rows  # once mapped, no lock to take
        if mapped is None:
            mapped = self._mapped()
        if mapped is None or start >= stop:
            rows = np.arange(start, stop, dtype=np.int64)
            return self.take(rows, rows - start)
        images = np.empty((stop - start, *self.image_shape), np.float32)
        labels = np.empty(stop - start, np.int64)
        np.copyto(images, mapped["image"][start:stop])
        labels[:] = mapped["label"][start:stop]
        return images, labels

    def _mapped(self) -> np.ndarray | None:
        if self._offset is None or self.layout is None:
            return None
        with self._lock:
            if self._rows is None:
                self._rows = self._map_rows(self._offset, self.layout)
            return self._rows

    def _map_rows(self, offset: int, layout: np.dtype) -> np.ndarray:
        if self._fd is None:
            raise DatasetError(f"{self.path}: read after the dataset was closed")
        rows = len(self)
        base = offset - offset % mmap.ALLOCATIONGRANULARITY
        end = offset + rows * layout.itemsize
        if os.fstat(self._fd).st_size < end:
            raise DatasetError(f"{self.path}: truncated: table {self.hdf5_table.name} lies past the end of the file")
        self._map = mmap.mmap(self._fd, end - base, offset=base, access=mmap.ACCESS_READ)
        return np.frombuffer(self._map, layout, count=rows, offset=offset - base)

    def close(self) -> None:
        """Unmap the table and close the raw descriptor; the HDF5 file is closed by the dataset."""
        with self._lock:
            self._rows = None
            if self._map is not None:
                try:
                    self._map.close()
                except BufferError:  # a read in another thread still holds a view: unmapped when it lets go
                    pass
                self._map = None
            self._close_fd()
            self._fd = None


def _is_range(numbers: np.ndarray) -> bool:
    return bool(np.all(np.diff(numbers) == 1))


def mapped_layout(table: h5py.Dataset) -> np.dtype | None:
    """The dtype of the table's rows, with only their label and image, for reads from a mapping; else None.

    Mapped reads need a contiguous, uncompressed table whose image is
    little-endian float32 and whose label is an integer, on a little-endian
    machine; anything else goes through h5py.
    """
    dtype = table.dtype
    if raw_offset(table) is None or dtype.names is None or {"image", "label"} - set(dtype.names):
        return None
    image_dtype, image_at = dtype.fields["image"][:2]
    label_dtype, label_at = dtype.fields["label"][:2]
    if not np.little_endian or image_dtype.base != np.dtype("<f4") or label_dtype.kind not in "iu":
        return None
    formats = [label_dtype, image_dtype]
    return np.dtype(
        {"names": ["label", "image"], "formats": formats, "offsets": [label_at, image_at], "itemsize": dtype.itemsize}
    )
