"""`BlockReader`: contiguous blocks of one split's rows as C-contiguous (images, labels), for every loader.

The streaming iterator (`streaming.py`) and the Keras loader (`ml/batch_loader.py`) read through it. On a
contiguous, uncompressed HDF5 table it maps the table's bytes read-only (`mmap`) and copies each block's
images and labels out of the mapping: one copy from the page cache at memory speed, no HDF5 library and no
system call per batch, safe from threads and forked processes. The mapped pages count in the process's RSS
but are the shared, clean page cache, which the kernel reclaims under pressure; the file must not be
truncated while mapped (cutout-etl replaces outputs by rename, which leaves a mapping intact). Anything else
(Parquet, chunked HDF5) goes through `open_dataset`.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from .dataset import Dataset, Split, open_dataset
from .errors import InputFileError
from .inputs import row_reader


def split_rows(split: Split, first: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows [first, stop) of a split as new C-contiguous (images float32, labels int64) arrays."""
    images, labels = split[first:stop]
    return images, labels


class BlockReader:
    """Reads rows [first, first + count) of one split; pickles (the file is reopened in each process)."""

    def __init__(self, dataset: Dataset, split: str) -> None:
        table = dataset[split]  # KeyError naming the splits if absent
        self.path = Path(dataset.path)
        self.split = split
        self.image_shape = dataset.image_shape
        self.rows = len(table)
        h5_table = table.hdf5_table()
        self.layout = raw_layout(h5_table, self.image_shape) if h5_table is not None else None
        self._init_handles()

    def _init_handles(self) -> None:
        self._lock = threading.Lock()
        self._dataset: Dataset | None = None
        self._pid: int | None = None
        self._map: mmap.mmap | None = None
        self._table: np.ndarray | None = None  # the mapped table: (label, image) fields of the stored rows

    def read(self, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(images float32 (count, H, W, B), labels int64 (count,)), both C-contiguous and freshly allocated."""
        if self.layout is None:
            return self._read_through_dataset(first, count)
        rows = self._mapped()[first : first + count]
        images = np.empty((len(rows), *self.image_shape), np.float32)
        np.copyto(images, rows["image"])
        return images, rows["label"].astype(np.int64)

    def _mapped(self) -> np.ndarray:
        with self._lock:
            if self._table is None:
                self._table = self._map_table()
            return self._table

    def _map_table(self) -> np.ndarray:
        """The table's bytes mapped read-only (shared page cache; inherited across fork, remapped after spawn)."""
        assert self.layout is not None
        offset, row_size, image_at, label_at = self.layout
        base = offset - offset % mmap.ALLOCATIONGRANULARITY
        end = offset + self.rows * row_size
        with open(self.path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size < end:
                raise InputFileError(f"{self.path}: truncated: split {self.split!r} lies past the end of the file")
            if end == base:
                return np.empty(0, _fields(row_size, image_at, label_at, self.image_shape))
            self._map = mmap.mmap(fh.fileno(), end - base, offset=base, access=mmap.ACCESS_READ)
        dtype = _fields(row_size, image_at, label_at, self.image_shape)
        return np.frombuffer(self._map, dtype, count=self.rows, offset=offset - base)

    def _read_through_dataset(self, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        # Parquet, or HDF5 tables that are chunked or compressed: the dataset's own
        # reader, one thread at a time (its file caches are shared).
        with self._lock:
            if self._dataset is None or self._pid != os.getpid():
                self._dataset, self._pid = open_dataset(self.path), os.getpid()
            return split_rows(self._dataset[self.split], first, first + count)

    def close(self) -> None:
        """Unmap and close the file (it is reopened on the next read)."""
        with self._lock:
            self._table = None
            if self._map is not None:
                try:
                    self._map.close()
                except BufferError:  # a read in another thread still holds a view: unmapped when it lets go
                    pass
            if self._dataset is not None and self._pid == os.getpid():
                self._dataset.close()
            self._pid = self._map = self._dataset = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for name in ("_lock", "_dataset", "_pid", "_map", "_table"):
            del state[name]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._init_handles()


def _fields(row_size: int, image_at: int, label_at: int, image_shape: Sequence[int]) -> np.dtype:
    return np.dtype(
        {
            "names": ["label", "image"],
            "formats": ["<i8", ("<f4", tuple(image_shape))],
            "offsets": [label_at, image_at],
            "itemsize": row_size,
        }
    )


def raw_layout(table: h5py.Dataset, image_shape: Sequence[int]) -> tuple[int, int, int, int] | None:
    """(file offset, row size, image offset, label offset) for raw reads, else None.

    Raw reads need an HDF5 table that is contiguous and uncompressed, whose
    last field is the little-endian float32 image and whose label is
    little-endian int64, on a little-endian machine; anything else (Parquet
    too) goes through the dataset's own reader.
    """
    offset = row_reader.raw_offset(table)
    dtype = table.dtype
    if offset is None or dtype.names is None or {"image", "label"} - set(dtype.names):
        return None
    image_dtype, image_at = dtype.fields["image"][:2]
    label_dtype, label_at = dtype.fields["label"][:2]
    if np.little_endian is False or image_dtype.base != np.dtype("<f4") or label_dtype != np.dtype("<i8"):
        return None
    if tuple(image_dtype.shape) != tuple(image_shape) or image_at + image_dtype.itemsize != dtype.itemsize:
        return None
    if not label_at + 8 <= image_at:
        return None
    return int(offset), int(dtype.itemsize), int(image_at), int(label_at)
