"""Reading what cutout-etl wrote, HDF5 file or Parquet directory: `open_dataset(path)`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from . import formats
from .schema import row_dtype

if TYPE_CHECKING:
    from typing import Self

__all__ = ["Dataset", "Split", "open_dataset", "row_dtype"]


class Split:
    """One table of a dataset: its length, row slices and (images, labels) batches."""

    def __init__(self, dataset: Dataset, name: str) -> None:
        self.dataset = dataset
        self.name = name
        self._table = dataset._tables[name]

    def __len__(self) -> int:
        return len(self._table)

    def __repr__(self) -> str:
        return f"<Split {self.name!r}: {len(self)} rows of {self.dataset.path.name}>"

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) as a structured array (all columns, the HDF5 row layout)."""
        stop = len(self) if stop is None else min(stop, len(self))
        return self._table.read(start, stop)

    def hdf5_table(self) -> h5py.Dataset | None:
        """The HDF5 table itself, for raw reads of one column or of whole rows; None for other formats."""
        return getattr(self._table, "hdf5_table", None)

    def batches(
        self, batch_size: int = 256, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (images float32 (N, H, W, bands), labels int64 (N,)) in stored order."""
        stop = len(self) if stop is None else min(stop, len(self))
        for first in range(start, stop, batch_size):
            rows = self.read(first, min(first + batch_size, stop))
            yield rows["image"], rows["label"]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.batches()


class Dataset:
    """A cutout-etl output: metadata plus one table per split."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.engine = formats.detect(path)  # its OutputFormat: capabilities and table reader
        self.format = self.engine.name
        self._closers: list = []
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
