"""The users' class files: one astropy table per class, the one place that writes them.

Layout (what the dataset's author writes, see the project's INPUT_FORMAT):
``Table.write(path, format="hdf5", path="data", serialize_meta=True)``, so one
compound dataset ``data`` plus astropy's YAML column metadata in
``data.__table_column_meta__``; columns ``ID``, ``RAJ2000``, ``DECJ2000``,
``SPECTYPE`` and ``image`` (float32, H x W x bands, channels last).

`write_class_table` writes a whole table (the demo's files), `write_class_table_in_chunks`
the same contiguous layout a block of rows at a time (the kids preset, the benchmarks' inputs); `ClassFileWriter`
streams rows into the same layout: astropy writes the table's first rows, with
an unlimited first dimension, and later rows are appended in place, so the file
is astropy's own (its metadata too) and memory stays at one block of rows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from astropy.table import Table

from ..errors import ForeignOutputError

TABLE_PATH = "data"
STREAM_CHUNK_ROWS = 64  # HDF5 chunk of a streamed file: 64 rows of 36x36x4 float32 = 1.3 MB


def write_class_table(path: Path, table: Table, **create_dataset: Any) -> None:
    """Write `table` as the users write their class files (astropy HDF5, path "data", serialized metadata).

    `create_dataset` goes to h5py for the table's dataset; astropy 8 drops it when given a path, so the file is
    opened here then.
    """
    if not create_dataset:
        table.write(path, format="hdf5", path=TABLE_PATH, serialize_meta=True, overwrite=True)
        return
    with h5py.File(path, "w") as f:
        table.write(f, format="hdf5", path=TABLE_PATH, serialize_meta=True, **create_dataset)


def write_class_table_in_chunks(path: Path, rows: int, chunk_rows: int, make: Callable[[int, int], Table]) -> None:
    """Write a class file of `rows` rows laid out as astropy lays out a whole table, `make(start, stop)` at a time.

    Astropy writes the first row, with its serialized column metadata; the table is then grown to
    `rows` rows of the same compound type with h5py (contiguous, as astropy writes it) and filled
    chunk by chunk, so peak memory is one chunk whatever `rows`.
    """
    write_class_table(path, make(0, min(rows, 1)))
    if rows <= 1:
        return
    with h5py.File(path, "r+") as f:
        dtype, attrs = f[TABLE_PATH].dtype, dict(f[TABLE_PATH].attrs)
        del f[TABLE_PATH]
        data = f.create_dataset(TABLE_PATH, shape=(rows,), dtype=dtype)
        for name, value in attrs.items():
            data.attrs[name] = value
        for start in range(0, rows, chunk_rows):
            stop = min(rows, start + chunk_rows)
            table = make(start, stop)
            chunk = np.empty(stop - start, dtype=dtype)
            for name in dtype.names:
                chunk[name] = table[name]
            data[start:stop] = chunk


def replace_only_marked(attr: str, kind: str, writer: str) -> Callable[[Path], None]:
    """A `may_replace` guard: only a file whose root carries `attr` (the mark `writer` leaves) may be replaced."""

    def guard(path: Path) -> None:
        try:
            with h5py.File(path, "r") as f:
                marked = attr in f.attrs
        except OSError:
            marked = False
        if not marked:
            raise ForeignOutputError(f"{path}: not a {kind} written by cutout-etl {writer}; refusing to replace it")

    return guard


class ClassFileWriter:
    """Append blocks of rows (astropy Tables of the same columns) to one class file at `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0
        self._file: h5py.File | None = None

    def append(self, block: Table) -> None:
        if len(block) == 0:
            return
        if self._file is None:
            chunk = (min(STREAM_CHUNK_ROWS, len(block)),)
            write_class_table(self.path, block, maxshape=(None,), chunks=chunk)
            self._file = h5py.File(self.path, "r+")
            self.rows = len(block)
            return
        data = self._file[TABLE_PATH]
        rows = block.as_array()
        if rows.dtype != data.dtype:  # string widths are fixed for the whole file before the first block
            raise ValueError(f"{self.path}: block of {rows.dtype} appended to a table of {data.dtype}")
        data.resize((self.rows + len(rows),))
        data[self.rows :] = rows
        self.rows += len(rows)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
