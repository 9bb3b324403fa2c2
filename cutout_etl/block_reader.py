"""`BlockReader`: contiguous blocks of one split's rows as C-contiguous (images, labels), for every loader.

The streaming iterator (`streaming.py`) and the Keras loader (`ml/batch_loader.py`) read through it. It
reads `split[first:first + count]`, so every format's fast path is the dataset's own: a memory map of a
contiguous HDF5 table (`formats/hdf5_read.py`), the Parquet page reader, or h5py for anything else.
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path

import numpy as np

from .dataset import Dataset, Split


class BlockReader:
    """Reads rows [first, first + count) of one split; pickles (the file is reopened in each process)."""

    def __init__(self, dataset: Dataset, split: str) -> None:
        table = dataset[split]  # KeyError naming the splits if absent
        self.path = Path(dataset.path)
        self.split = split
        self.image_shape = dataset.image_shape
        self.rows = len(table)
        # A split of its own, which opens the file itself when first read: closing
        # the reader then never closes the caller's dataset.
        self._split: Split = copy.copy(table)
        self._lock = threading.Lock()

    def read(self, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(images float32 (count, H, W, B), labels int64 (count,)), both C-contiguous and freshly allocated."""
        with self._lock:  # the file is opened once, by one thread
            threads_share_it = self._split.dataset.format == "hdf5"  # its mapped reads are thread-safe
            if not threads_share_it:  # other formats' readers keep caches: one thread at a time
                return self._split[first : first + count]
        return self._split[first : first + count]

    def close(self) -> None:
        """Close the file (it is reopened on the next read)."""
        with self._lock:
            self._split.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
