"""`CutoutPyDataset`: batches of one split streamed from the file into Keras, one block of rows per batch."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np

from ..dataset import Dataset, open_dataset
from ..errors import InputFileError
from ..inputs import row_reader

# Linux IOV_MAX is 1024 buffers per preadv call: two per row (header, image).
_ROWS_PER_PREADV = 512


class CutoutPyDataset(keras.utils.PyDataset):
    """(images float32 (N, H, W, B), labels int64 (N,)) batches of one split, streamed.

    ``dataset`` is a path or an open `Dataset`. Batch ``i`` of an epoch is one
    contiguous block of ``batch_size`` rows (the last may be shorter), so a
    batch is one read and the split is never in memory. With ``shuffle``
    (default: only for ``"train"``) the blocks start at an offset in
    [0, batch_size) and are visited in an order, both drawn from
    ``(seed, epoch)``; the epoch advances in `on_epoch_end` (or set it with
    `set_epoch`; Keras 3 ``fit`` also calls `on_epoch_end` once before its
    first epoch, so its epochs use orders 1, 2, ...). Batches depend only on
    (seed, epoch, index), so worker threads or processes and Keras's
    prefetching return the same batches as a plain loop. Pass
    ``shuffle=False`` to ``model.fit`` so that Keras keeps this seeded order
    instead of reshuffling batch indices with Python's global ``random``. ``**kwargs`` go to `keras.utils.PyDataset`
    (``workers``, ``use_multiprocessing``, ``max_queue_size``): reads are
    positioned and the file is reopened in each process, so both are safe.
    """

    def __init__(
        self,
        dataset: Dataset | str | os.PathLike[str],
        split: str = "train",
        batch_size: int = 256,
        shuffle: bool | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer (got {batch_size!r})")
        ds = dataset if isinstance(dataset, Dataset) else open_dataset(Path(dataset))
        try:
            self._describe(ds, split, batch_size, shuffle, seed)
        finally:
            if ds is not dataset:
                ds.close()
        # Reads use their own descriptor (or their own Dataset for the
        # fallback), opened on first use in each process.
        self._dataset: Dataset | None = None
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pid: int | None = None
        self._finalizer: weakref.finalize | None = None
        self._offset, self._order = self._draw_blocks()

    def _describe(self, ds: Dataset, split: str, batch_size: int, shuffle: bool | None, seed: int) -> None:
        table = ds[split]  # KeyError naming the splits if absent
        self.path = Path(ds.path)
        self.split = split
        self.batch_size = int(batch_size)
        self.shuffle = split == "train" if shuffle is None else bool(shuffle)
        self.seed = int(seed)
        self.epoch = 0
        self.classes = ds.classes
        self.image_shape = ds.image_shape
        self.rows = len(table)
        h5_table = table.hdf5_table()
        self._layout = _raw_layout(h5_table, self.image_shape) if h5_table is not None else None

    # -- the PyDataset interface

    def __len__(self) -> int:
        return (self.rows + self.batch_size - 1) // self.batch_size

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"batch {index} out of range ({len(self)} batches)")
        block = int(self._order[index])
        first = (block * self.batch_size + self._offset) % self.rows
        count = min(self.batch_size, self.rows - block * self.batch_size)
        head = min(count, self.rows - first)
        if head == count:
            return self._read(first, count)
        images_a, labels_a = self._read(first, head)
        images_b, labels_b = self._read(0, count - head)
        return np.concatenate([images_a, images_b]), np.concatenate([labels_a, labels_b])

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)

    # -- public helpers

    def set_epoch(self, epoch: int) -> None:
        """Use the block order of `epoch` (0-based) from now on."""
        self.epoch = int(epoch)
        self._offset, self._order = self._draw_blocks()

    def rows_of(self, index: int) -> np.ndarray:
        """Row numbers (in the stored split) of batch `index` of the current epoch."""
        block = int(self._order[index])
        count = min(self.batch_size, self.rows - block * self.batch_size)
        return (block * self.batch_size + self._offset + np.arange(count)) % self.rows

    def labels(self) -> np.ndarray:
        """Every label of the split in stored order (reads the label column only)."""
        with open_dataset(self.path) as ds:
            h5_table = ds[self.split].hdf5_table()
            if h5_table is not None:
                return np.asarray(h5_table.fields("label")[:], np.int64)
            chunks = [labels for _, labels in ds[self.split].batches(4096)]
        return np.concatenate(chunks).astype(np.int64) if chunks else np.empty(0, np.int64)

    def close(self) -> None:
        """Close the open file (it is reopened on the next read)."""
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()
            if self._dataset is not None:
                self._dataset.close()
            self._fd = self._pid = self._finalizer = self._dataset = None

    # -- internals

    def _draw_blocks(self) -> tuple[int, np.ndarray]:
        blocks = np.arange(len(self), dtype=np.int64)
        if not self.shuffle or self.rows == 0:
            return 0, blocks
        rng = np.random.default_rng([self.seed, self.epoch])
        return int(rng.integers(min(self.batch_size, self.rows))), rng.permutation(blocks)

    def _read(self, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        if self._layout is None:
            return self._read_through_dataset(first, count)
        offset, row_size, _, label_at = self._layout
        header = row_size - self._image_bytes
        images = np.empty((count, *self.image_shape), np.float32)
        head = np.empty((count, header), np.uint8)
        image_bytes, head_bytes = images.reshape(-1).view(np.uint8).data, head.reshape(-1).data
        size = self._image_bytes
        fd, position = self._file(), offset + first * row_size
        for start in range(0, count, _ROWS_PER_PREADV):
            stop = min(count, start + _ROWS_PER_PREADV)
            # Scatter each row: header -> head[i], image -> images[i] (one copy).
            buffers: list[memoryview] = [head_bytes] * (2 * (stop - start))
            buffers[0::2] = [head_bytes[i : i + header] for i in range(start * header, stop * header, header)]
            buffers[1::2] = [image_bytes[i : i + size] for i in range(start * size, stop * size, size)]
            want = (stop - start) * row_size
            if os.preadv(fd, buffers, position) != want:
                raise InputFileError(
                    f"{self.path}: truncated: split {self.split!r} rows {first}-{first + count - 1} lie past the end of the file"
                )
            position += want
        labels = head[:, label_at : label_at + 8].copy().view("<i8").reshape(count)
        return images, labels.astype(np.int64, copy=False)

    def _read_through_dataset(self, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        # Parquet, or HDF5 tables that are chunked or compressed: the
        # dataset's own reader, one thread at a time (its file caches are shared).
        with self._lock:
            if self._dataset is None:
                self._dataset = open_dataset(self.path)
            rows = self._dataset[self.split].read(first, first + count)
        return np.ascontiguousarray(rows["image"], np.float32), rows["label"].astype(np.int64)

    @property
    def _image_bytes(self) -> int:
        return int(np.prod(self.image_shape)) * 4

    def _file(self) -> int:
        with self._lock:
            if self._fd is None or self._pid != os.getpid():
                fd = os.open(self.path, os.O_RDONLY)
                self._fd, self._pid = fd, os.getpid()
                self._finalizer = weakref.finalize(self, os.close, fd)
            return self._fd

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_fd=None, _pid=None, _finalizer=None, _dataset=None, _lock=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        order = f"shuffled (seed {self.seed}, epoch {self.epoch})" if self.shuffle else "stored order"
        return f"<CutoutPyDataset {self.path.name}[{self.split}]: {self.rows} rows, {len(self)} batches of {self.batch_size}, {order}>"


def _raw_layout(table: h5py.Dataset, image_shape: Sequence[int]) -> tuple[int, int, int, int] | None:
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
