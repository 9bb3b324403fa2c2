"""Reading what cutout-etl wrote, HDF5 file or Parquet directory: `open_dataset(path)`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from . import readers
from .errors import DatasetError
from .schema import FORMAT_NAME, FORMAT_VERSION, METADATA_ATTR, SIDECAR, output_dtype


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

    def batches(self, batch_size: int = 256, start: int = 0, stop: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (images float32 (N, H, W, bands), labels int64 (N,)) in stored order."""
        stop = len(self) if stop is None else min(stop, len(self))
        for first in range(start, stop, batch_size):
            rows = self.read(first, min(first + batch_size, stop))
            yield rows["image"], rows["label"]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.batches()


class _H5Table:
    def __init__(self, path: Path, table: h5py.Dataset) -> None:
        self.path = path
        self._table = table

    def __len__(self) -> int:
        return int(self._table.shape[0])

    def read(self, start: int, stop: int) -> np.ndarray:
        return readers.read_rows(self.path, self._table, start, stop)


class Dataset:
    """A cutout-etl output: metadata plus one table per split."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.format = "parquet" if path.is_dir() else "hdf5"
        self._closers: list = []
        try:
            self._tables = self._open_parquet() if self.format == "parquet" else self._open_hdf5()
        except Exception:
            self.close()
            raise

    def _open_hdf5(self) -> dict:
        f = readers.open_h5(self.path)
        self._closers.append(f.close)
        self.metadata = _check_metadata(self.path, f.attrs.get(METADATA_ATTR), f"no '{METADATA_ATTR}' metadata")
        missing = [t for t in self.metadata["tables"] if t not in f]
        if missing:
            raise DatasetError(f"{self.path}: metadata lists tables missing from the file: {', '.join(missing)}")
        return {name: _H5Table(self.path, f[name]) for name in self.metadata["tables"]}

    def _open_parquet(self) -> dict:
        from .parquet import ParquetTable

        sidecar = self.path / SIDECAR
        text = sidecar.read_bytes() if sidecar.is_file() else None  # json.loads decodes: bad bytes are a DatasetError
        self.metadata = _check_metadata(self.path, text, f"no {SIDECAR}")
        dtype = row_dtype(self.metadata)
        tables = {name: ParquetTable(self.path, name, dtype) for name in self.metadata["tables"]}
        self._closers += [t.close for t in tables.values()]
        for name, table in tables.items():
            expected = self.metadata["tables_rows"][name]["rows"]
            if len(table) != expected:
                raise DatasetError(f"{self.path}: split {name} has {len(table)} rows in its shards, the metadata says {expected}")
        return tables

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

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def row_dtype(metadata: dict) -> np.dtype:
    """The structured row layout of a dataset's tables, from its metadata."""
    sizes = metadata["row_dtype"]
    return output_dtype(sizes["id_bytes"], sizes["class_bytes"], tuple(metadata["image_shape"]))


def _check_metadata(path: Path, raw: object, missing: str) -> dict:
    if raw is None:
        raise DatasetError(f"{path}: not a cutout-etl dataset ({missing}); build one first")
    try:
        metadata = json.loads(raw)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable cutout-etl metadata ({exc})") from exc
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME or metadata.get("format_version", 0) > FORMAT_VERSION:
        found = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
        raise DatasetError(f"{path}: format {found!r}; this cutout-etl reads {FORMAT_NAME!r} up to version {FORMAT_VERSION}")
    return metadata


def open_dataset(path: str | Path) -> Dataset:
    """Open a dataset written by `cutout-etl build`, `split`, `merge` or `convert`: HDF5 or Parquet.

    >>> ds = open_dataset("dataset.h5")          # doctest: +SKIP
    >>> ds.classes, ds.splits, len(ds["train"])   # doctest: +SKIP
    >>> for images, labels in ds["train"].batches(256): ...  # doctest: +SKIP
    """
    return Dataset(Path(path))
