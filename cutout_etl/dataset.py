"""Reading what cutout-etl wrote, HDF5 file or Parquet directory: `open_dataset(path)`."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, overload

import h5py
import numpy as np

from . import formats
from .errors import DatasetError
from .formats import Table
from .schema import row_dtype

if TYPE_CHECKING:
    from typing import Self

__all__ = ["Dataset", "Split", "aligned_dtype", "open_dataset", "row_dtype"]


class Split:
    """One table of a dataset, as a map-style dataset: `len`, `split[i]`, slices, index arrays, batches.

    `split[i]` is (image float32 (H, W, bands), label int64); `split[a:b]` and
    `split[[i, j, ...]]` are (images (N, H, W, bands), labels (N,)), in the
    order asked (sorted reads, coalesced into runs of consecutive rows). Every
    array returned is new, C-contiguous and aligned (`torch.from_numpy` takes it).

    A split pickles as its path and name; each process (a DataLoader worker,
    forked or spawned) opens the file again the first time it reads, and
    refuses a file whose content digest is no longer the one first opened.
    """

    def __init__(self, dataset: Dataset, name: str) -> None:
        self.name = name
        self._path = Path(os.path.abspath(dataset.path))  # a worker may run elsewhere
        self._digest = dataset.metadata.get("digest")
        self._opened: Dataset | None = dataset
        self._pid: int | None = os.getpid()

    @property
    def dataset(self) -> Dataset:
        """The dataset this split reads, open in this process (opened again after fork, unpickling or close)."""
        if self._opened is None or self._pid != os.getpid() or self._opened.closed:
            opened = Dataset(self._path)
            if opened.metadata.get("digest") != self._digest or self.name not in opened.splits:
                opened.close()
                raise DatasetError(f"{self._path}: changed since split {self.name!r} was opened; open it again")
            self._opened, self._pid = opened, os.getpid()
        return self._opened

    @property
    def _table(self) -> Table:
        return self.dataset._tables[self.name]

    def __getstate__(self) -> dict:
        return {"path": str(self._path), "name": self.name, "digest": self._digest}

    def __setstate__(self, state: dict) -> None:
        self._path, self.name, self._digest = Path(state["path"]), state["name"], state["digest"]
        self._opened, self._pid = None, None

    def __len__(self) -> int:
        return len(self._table)

    def __repr__(self) -> str:
        return f"<Split {self.name!r}: {len(self)} rows of {self._path.name}>"

    @overload
    def __getitem__(self, key: int | np.integer) -> tuple[np.ndarray, np.int64]: ...
    @overload
    def __getitem__(self, key: slice | Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
    def __getitem__(self, key: int | np.integer | slice | Sequence[int] | np.ndarray) -> tuple:
        """Row `i` as (image, label); a slice or an array of row numbers as (images, labels)."""
        if isinstance(key, (int, np.integer)):  # a bool too: np.array([True]) is refused as not an integer
            images, labels = self.take(_positions(np.array([key]), len(self), self.name))
            return images[0], labels[0]
        if isinstance(key, slice) and key.step in (None, 1):  # one run in order: no sort (the loaders' path)
            table = self._table
            start, stop, _ = key.indices(len(table))
            return table.take_range(start, max(start, stop))
        return self.take(_positions(key, len(self), self.name))

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[np.ndarray, np.int64]]:
        """The rows of one batch as a list of (image, label), read together (PyTorch's DataLoader calls this)."""
        images, labels = self[np.asarray(indices, dtype=np.int64)]
        return list(zip(images, labels, strict=True))

    def take(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels) of rows (numbers in range, any order, repeats allowed), in the order given."""
        order = np.argsort(rows, kind="stable")
        return self._table.take(rows[order], order)

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) as a structured array of all columns, fields aligned (`aligned_dtype`)."""
        stop = len(self) if stop is None else min(stop, len(self))
        return aligned(self._table.read(start, stop))

    def hdf5_table(self) -> h5py.Dataset | None:
        """The HDF5 table itself, for raw reads of one column or of whole rows; None for other formats."""
        return getattr(self._table, "hdf5_table", None)

    def batches(
        self, batch_size: int = 256, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (images float32 (N, H, W, bands), labels int64 (N,)) in stored order."""
        stop = len(self) if stop is None else min(stop, len(self))
        for first in range(start, stop, batch_size):
            yield self[first : min(first + batch_size, stop)]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.batches()

    def close(self) -> None:
        """Close the file if this split opened it itself (in a worker, or after unpickling)."""
        if self._opened is not None and self._pid == os.getpid():
            self._opened.close()


def _positions(key: slice | Sequence[int] | np.ndarray, rows: int, name: str) -> np.ndarray:
    """Row numbers (int64, negatives counted from the end) of a slice or an integer array; IndexError if out of range."""
    if isinstance(key, slice):
        return np.arange(*key.indices(rows), dtype=np.int64)
    index = np.asarray(key)
    if index.size == 0:
        return np.empty(0, np.int64)
    if index.dtype.kind not in "iu" or index.ndim != 1:
        raise IndexError(f"split {name}: index with an integer, a slice or a 1-d integer array, not {key!r:.60}")
    index = index.astype(np.int64)
    outside = (index < -rows) | (index >= rows)
    if outside.any():
        raise IndexError(f"split {name}: row {index[outside][0]} is out of range ({rows} rows)")
    return np.where(index < 0, index + rows, index)


def aligned_dtype(dtype: np.dtype) -> np.dtype:
    """`dtype` with every field at an offset its type aligns to (what numpy and torch views of a field need)."""
    return np.dtype([(name, dtype[name]) for name in dtype.names or ()], align=True)


def aligned(records: np.ndarray) -> np.ndarray:
    """Structured records copied into `aligned_dtype` (the stored row layout is packed)."""
    out = np.zeros(len(records), aligned_dtype(records.dtype))  # zeros: padding bytes deterministic
    for name in records.dtype.names or ():
        out[name] = records[name]
    return out


class Dataset:
    """A cutout-etl output: metadata plus one table per split."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.engine = formats.detect(path)  # its OutputFormat: capabilities and table reader
        self.format = self.engine.name
        self._closers: list = []
        self.closed = False
        try:
            self.metadata, self._tables = self.engine.open_tables(path, self._closers)
        except Exception:
            self.close()
            raise

    @property
    def classes(self) -> list[str]:
        return list(self.metadata["classes"])

    @property
    def bands(self) -> list[str]:
        return list(self.metadata["bands"])

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.metadata["image_shape"])

    @property
    def splits(self) -> list[str]:
        return list(self.metadata["tables"])

    @property
    def stats(self) -> dict | None:
        return self.metadata.get("stats")

    def __getitem__(self, name: str) -> Split:
        if name not in self.splits:
            raise KeyError(f"{self.path}: no split {name!r} (splits: {', '.join(self.splits)})")
        return Split(self, name)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(self[s])}" for s in self.splits)
        return f"<Dataset {self.path.name} ({self.format}): classes={self.classes} {sizes}>"

    def close(self) -> None:
        self.closed = True
        while self._closers:
            self._closers.pop()()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Open a dataset written by `cutout-etl build`, `split`, `merge` or `convert`: HDF5 or Parquet.

    >>> ds = open_dataset("dataset.h5")          # doctest: +SKIP
    >>> ds.classes, ds.splits, len(ds["train"])   # doctest: +SKIP
    >>> for images, labels in ds["train"].batches(256): ...  # doctest: +SKIP
    """
    return Dataset(Path(path))
