"""Reading what cutout-etl wrote: `open_dataset(path)`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from . import readers
from .errors import DatasetError
from .schema import FORMAT_NAME, FORMAT_VERSION, METADATA_ATTR


class Split:
    """One table of a dataset: its length, row slices and (images, labels) batches."""

    def __init__(self, dataset: Dataset, name: str) -> None:
        self.dataset = dataset
        self.name = name
        self._table = dataset._file[name]

    def __len__(self) -> int:
        return int(self._table.shape[0])

    def __repr__(self) -> str:
        return f"<Split {self.name!r}: {len(self)} rows of {self.dataset.path.name}>"

    @property
    def dtype(self) -> np.dtype:
        return self._table.dtype

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) as a structured array (all columns)."""
        stop = len(self) if stop is None else min(stop, len(self))
        return readers.read_rows(self.dataset.path, self._table, start, stop)

    def batches(self, batch_size: int = 256, start: int = 0, stop: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (images float32 (N, H, W, bands), labels int64 (N,)) in stored order."""
        stop = len(self) if stop is None else min(stop, len(self))
        for first in range(start, stop, batch_size):
            rows = self.read(first, min(first + batch_size, stop))
            yield rows["image"], rows["label"]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.batches()


class Dataset:
    """A cutout-etl output file: metadata plus one table per split."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = readers.open_h5(path)
        try:
            self.metadata = _load_metadata(path, self._file)
        except Exception:
            self._file.close()
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
        return f"<Dataset {self.path.name}: classes={self.classes} {sizes}>"

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _load_metadata(path: Path, f: h5py.File) -> dict:
    raw = f.attrs.get(METADATA_ATTR)
    if raw is None:
        raise DatasetError(f"{path}: not a cutout-etl dataset (no '{METADATA_ATTR}' metadata); build one first")
    try:
        metadata = json.loads(raw)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable cutout-etl metadata ({exc})") from exc
    if metadata.get("format") != FORMAT_NAME or metadata.get("format_version", 0) > FORMAT_VERSION:
        raise DatasetError(
            f"{path}: format {metadata.get('format')!r} version {metadata.get('format_version')}; "
            f"this cutout-etl reads {FORMAT_NAME!r} up to version {FORMAT_VERSION}"
        )
    missing = [t for t in metadata.get("tables", []) if t not in f]
    if missing:
        raise DatasetError(f"{path}: metadata lists tables missing from the file: {', '.join(missing)}")
    return metadata


def open_dataset(path: str | Path) -> Dataset:
    """Open a dataset written by `cutout-etl build`, `split` or `merge`.

    >>> ds = open_dataset("dataset.h5")          # doctest: +SKIP
    >>> ds.classes, ds.splits, len(ds["train"])   # doctest: +SKIP
    >>> for images, labels in ds["train"].batches(256): ...  # doctest: +SKIP
    """
    return Dataset(Path(path))
