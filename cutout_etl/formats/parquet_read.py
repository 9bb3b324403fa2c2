"""Reading a Parquet dataset's tables (the write side and the layout are in parquet.py)."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DatasetError
from ..schema import DATA_DIR, FILE_SPLIT
from .parquet import _SHAPED, COLUMNS
from .parquet_pages import FloatPages, Unsupported, float_column_pages

_ARROW_NAME = {field: column for column, field in COLUMNS.items()}
_IMAGE, _LABEL = _ARROW_NAME["image"], _ARROW_NAME["label"]

if TYPE_CHECKING:  # pyarrow is imported only when Parquet is read
    import pyarrow as pa
    import pyarrow.parquet as pq


class ParquetTable:
    """Random row access to one table's shards.

    `take` (images and labels) decodes only those two columns of a row group,
    once: the decoded groups stay in a cache of at most `cache_bytes`, so a
    batch iterator walking the table decodes each group once, and random
    access over a table that fits the cache decodes each group once too. The
    image column is taken as one flat float32 buffer, with no per-row work.
    """

    cache_bytes = 256 * 2**20

    def __init__(self, directory: Path, name: str, dtype: np.dtype) -> None:
        self.dtype = dtype
        self.image_shape: tuple[int, ...] = dtype["image"].shape
        self._decoded: OrderedDict[int, tuple[np.ndarray | FloatPages, np.ndarray]] = (
            OrderedDict()
        )  # group -> images, labels
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
        self._maps: dict[Path, tuple[pa.MemoryMappedFile, pa.Buffer]] = {}  # the map, and all its bytes
        self.groups_decoded_by_arrow = 0  # image columns the page reader left to pyarrow

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

    def take(self, rows: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of `rows` (ascending, repeats allowed), row rows[i] at position slots[i]."""
        images = np.empty((len(rows), *self.image_shape), np.float32)
        labels = np.empty(len(rows), np.int64)
        groups = np.searchsorted(self._starts, rows, side="right") - 1
        edges = np.r_[0, np.flatnonzero(np.diff(groups)) + 1, len(rows)].tolist() if len(rows) else []
        for a, b in itertools.pairwise(edges):
            group_images, group_labels = self._decode(int(groups[a]))
            local, to = rows[a:b] - self._starts[groups[a]], slots[a:b]
            labels[to] = group_labels[local]
            if local[-1] - local[0] == b - a - 1 and to[-1] - to[0] == b - a - 1 and _ascending(to):
                _copy_rows(group_images, int(local[0]), images[int(to[0]) : int(to[0]) + b - a])  # a run
            else:
                for row, slot in zip(local.tolist(), to.tolist(), strict=True):
                    _copy_rows(group_images, row, images[slot : slot + 1])
        return images, labels

    def take_range(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.arange(start, stop, dtype=np.int64)
        return self.take(rows, rows - start)

    def _decode(self, index: int) -> tuple[np.ndarray | FloatPages, np.ndarray]:
        """A row group's images (where its pages lie, or decoded (N, H, W, bands)) and labels, once (cached)."""
        if index in self._decoded:
            self._decoded.move_to_end(index)
            return self._decoded[index]
        path, group, _, rows = self._groups[index]
        images: np.ndarray | FloatPages | None = self._image_pages(path, group)
        table = _read_group(self._file(path), path, group, [_LABEL] if images is not None else [_IMAGE, _LABEL])
        try:
            if images is None:
                self.groups_decoded_by_arrow += 1
                images = _flat(table.column(_IMAGE), np.float32).reshape(rows, *self.image_shape)
            labels = _flat(table.column(_LABEL), np.int64)
        except ValueError as exc:
            raise DatasetError(
                f"{path}: row group {group} does not match the dataset's schema ({_short(exc)})"
            ) from exc
        size = _nbytes(images) + labels.nbytes
        while self._decoded and sum(_nbytes(i) + k.nbytes for i, k in self._decoded.values()) + size > self.cache_bytes:
            self._decoded.popitem(last=False)
        self._decoded[index] = images, labels
        return images, labels

    def _image_pages(self, path: Path, group: int) -> FloatPages | None:
        """Where the image column's values lie in its data pages (`parquet_pages`); None where pyarrow must decode it."""
        import pyarrow as pa

        shard = self._file(path)
        image_type = shard.schema_arrow.field(_IMAGE).type
        values_per_row = int(np.prod(self.image_shape))
        if not (pa.types.is_fixed_size_list(image_type) and image_type.list_size == values_per_row):
            return None
        if image_type.value_type != pa.float32():
            return None
        try:
            return float_column_pages(memoryview(self._maps[path][1]), shard.metadata, group, _IMAGE, values_per_row)
        except Unsupported:
            return None

    def _file(self, path: Path) -> pq.ParquetFile:
        """The shard open over a read-only memory map of it (which the page reader reads too)."""
        if path not in self._open:
            if len(self._open) >= 4:
                self._close_shard(next(iter(self._open)))
            self._open[path], self._maps[path] = _mapped_shard(path)
        return self._open[path]

    def _close_shard(self, path: Path) -> None:
        for index in [i for i in self._decoded if self._groups[i][0] == path]:  # their pages view its map
            del self._decoded[index]
        self._open.pop(path).close()
        self._maps.pop(path)[0].close()

    def close(self) -> None:
        while self._open:
            self._close_shard(next(iter(self._open)))
        self._decoded.clear()


def _copy_rows(group_images: np.ndarray | FloatPages, first: int, out: np.ndarray) -> None:
    """Rows [first, first + len(out)) of a row group's images into `out`, from its pages or its decoded array."""
    if isinstance(group_images, FloatPages):
        group_images.copy(first * out[0].size, out.reshape(-1))
    else:
        out[...] = group_images[first : first + len(out)]


def _nbytes(images: np.ndarray | FloatPages) -> int:
    return images.nbytes if isinstance(images, np.ndarray) else 0  # pages are the memory map's: nothing held


def _ascending(values: np.ndarray) -> bool:
    return bool(np.all(values[1:] > values[:-1]))


def _flat(column: pa.ChunkedArray, dtype: type[np.generic]) -> np.ndarray:
    """A column's values as one flat numpy array of `dtype`, without copying (ValueError for nulls or a wrong type)."""
    import pyarrow as pa

    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_fixed_size_list(array.type):
        if array.null_count:
            raise ValueError(f"{array.null_count} missing images")
        array = array.flatten()
    if array.null_count or array.type != pa.from_numpy_dtype(dtype):
        raise ValueError(f"{array.type} with {array.null_count} missing values, expected {np.dtype(dtype)}")
    return array.to_numpy(zero_copy_only=True)


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


def _mapped_shard(path: Path) -> tuple[pq.ParquetFile, tuple[pa.MemoryMappedFile, pa.Buffer]]:
    """A shard opened over one read-only memory map, the map and its bytes (errors named as `_shard` does)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        source = pa.memory_map(str(path), "r")
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"{path}: not a readable Parquet file ({_short(exc)})") from exc
    try:
        data = source.read_buffer()  # a view of the whole map, no copy
        source.seek(0)
        return pq.ParquetFile(source), (source, data)
    except (pa.ArrowException, OSError) as exc:
        source.close()
        raise DatasetError(f"{path}: not a readable Parquet file (truncated or corrupt: {_short(exc)})") from exc


def _read_group(shard: pq.ParquetFile, path: Path, group: int, columns: list[str] | None = None) -> pa.Table:
    import pyarrow as pa

    try:
        return shard.read_row_group(group, columns=columns)
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
