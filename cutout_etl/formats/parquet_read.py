"""Reading a Parquet dataset's tables (the write side and the layout are in parquet.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DatasetError
from ..schema import DATA_DIR, FILE_SPLIT
from .parquet import _SHAPED, COLUMNS

if TYPE_CHECKING:  # pyarrow is imported only when Parquet is read
    import pyarrow as pa
    import pyarrow.parquet as pq


class ParquetTable:
    """Random row access to one table's shards."""

    def __init__(self, directory: Path, name: str, dtype: np.dtype) -> None:
        self.dtype = dtype
        self.files = sorted((directory / DATA_DIR).glob(f"{FILE_SPLIT[name]}-*.parquet"))
        self._groups: list[tuple[Path, int, int, int]] = []  # file, row group, first row, rows
        first = 0
        for path in self.files:
            meta = _shard(path).metadata
            for g in range(meta.num_row_groups):
                rows = meta.row_group(g).num_rows
                self._groups.append((path, g, first, rows))
                first += rows
        self.rows = first
        self._starts = np.array([g[2] for g in self._groups], dtype=np.int64)
        self._open: dict[Path, pq.ParquetFile] = {}

    def __len__(self) -> int:
        return self.rows

    def read(self, start: int, stop: int) -> np.ndarray:
        import pyarrow as pa

        stop = min(stop, self.rows)
        if start >= stop:
            return np.empty(0, self.dtype)
        parts = []
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        for path, group, group_start, rows in self._groups[first:]:
            if group_start >= stop:
                break
            table = _read_group(self._file(path), path, group)
            lo, hi = max(start - group_start, 0), min(stop - group_start, rows)
            parts.append(table.slice(lo, hi - lo))
        try:
            return table_to_records(pa.concat_tables(parts), self.dtype)
        except (pa.ArrowException, KeyError, ValueError) as exc:
            raise DatasetError(
                f"{self.files[0].parent}: rows {start}-{stop - 1} do not match the dataset's schema ({_short(exc)})"
            ) from exc

    def _file(self, path: Path) -> pq.ParquetFile:
        if path not in self._open:
            if len(self._open) >= 4:
                self._open.pop(next(iter(self._open))).close()
            self._open[path] = _shard(path)
        return self._open[path]

    def close(self) -> None:
        for f in self._open.values():
            f.close()
        self._open.clear()


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _shard(path: Path) -> pq.ParquetFile:
    """Open a shard, or name it: a truncated or empty file is a DatasetError, not a bare ArrowInvalid."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"{path}: not a readable Parquet file (truncated or corrupt: {_short(exc)})") from exc


def _read_group(shard: pq.ParquetFile, path: Path, group: int) -> pa.Table:
    import pyarrow as pa

    try:
        return shard.read_row_group(group)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(
            f"{path}: not a readable Parquet file (truncated or corrupt: row group {group}: {_short(exc)})"
        ) from exc


def table_to_records(table: pa.Table, dtype: np.dtype) -> np.ndarray:
    """An Arrow table back to structured records of `dtype`, bit-exact."""
    import pyarrow as pa

    records = np.empty(table.num_rows, dtype)
    for column, field in COLUMNS.items():
        values = table.column(column).combine_chunks()
        if column in _SHAPED:
            flat = values.flatten().to_numpy(zero_copy_only=False)
            records[field] = flat.reshape((table.num_rows, *dtype[field].shape))
        elif pa.types.is_string(values.type):
            records[field] = np.char.encode(np.asarray(values.to_pylist(), dtype=str), "utf-8")
        else:
            records[field] = values.to_numpy(zero_copy_only=False)
    return records
