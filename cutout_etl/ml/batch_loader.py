"""`CutoutPyDataset`: batches of one split streamed from the file into Keras, one block of rows per batch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ..block_reader import BlockReader
from ..dataset import Dataset, open_dataset
from ..streaming import augment_exact, block_order, block_spans


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
    prefetching return the same batches as a plain loop. With ``augment`` each image is flipped and turned by
    90 degrees as drawn from (seed, epoch, block) (`cutout_etl.streaming.augment_exact`: exact, no
    interpolation; the same draw as `StreamingBatches`). Pass
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
        augment: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.augment = bool(augment)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer (got {batch_size!r})")
        ds = dataset if isinstance(dataset, Dataset) else open_dataset(Path(dataset))
        try:
            self._describe(ds, split, batch_size, shuffle, seed)
        finally:
            if ds is not dataset:
                ds.close()
        self._offset, self._order = self._draw_blocks()

    def _describe(self, ds: Dataset, split: str, batch_size: int, shuffle: bool | None, seed: int) -> None:
        self.reader = BlockReader(ds, split)  # KeyError naming the splits if absent
        self.path = Path(ds.path)
        self.split = split
        self.batch_size = int(batch_size)
        self.shuffle = split == "train" if shuffle is None else bool(shuffle)
        self.seed = int(seed)
        self.epoch = 0
        self.classes = ds.classes
        self.image_shape = ds.image_shape
        self.rows = self.reader.rows

    # -- the PyDataset interface

    def __len__(self) -> int:
        return (self.rows + self.batch_size - 1) // self.batch_size

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"batch {index} out of range ({len(self)} batches)")
        block = int(self._order[index])
        spans = block_spans(block, self._offset, self.rows, self.batch_size)
        if len(spans) == 1:
            images, labels = self.reader.read(*spans[0])
        else:
            (images_a, labels_a), (images_b, labels_b) = (self.reader.read(*span) for span in spans)
            images, labels = np.concatenate([images_a, images_b]), np.concatenate([labels_a, labels_b])
        if self.augment:
            images = augment_exact(images, np.random.default_rng([self.seed, self.epoch, block, 1]))
        return images, labels

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)

    # -- public helpers

    def set_epoch(self, epoch: int) -> None:
        """Use the block order of `epoch` (0-based) from now on."""
        self.epoch = int(epoch)
        self._offset, self._order = self._draw_blocks()

    def rows_of(self, index: int) -> np.ndarray:
        """Row numbers (in the stored split) of batch `index` of the current epoch."""
        spans = block_spans(int(self._order[index]), self._offset, self.rows, self.batch_size)
        return np.concatenate([np.arange(first, first + count) for first, count in spans])

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
        self.reader.close()

    # -- internals

    def _draw_blocks(self) -> tuple[int, np.ndarray]:
        return block_order(self.rows, self.batch_size, self.shuffle, self.seed, self.epoch)

    def __repr__(self) -> str:
        order = f"shuffled (seed {self.seed}, epoch {self.epoch})" if self.shuffle else "stored order"
        return f"<CutoutPyDataset {self.path.name}[{self.split}]: {self.rows} rows, {len(self)} batches of {self.batch_size}, {order}>"
