"""Build output blocks from input rows: the one step both write paths share.

The local write pass (`execution/local.py`) and each Dask task (`execution/dask_cluster.py`)
call `RecordFiller` on a block of rows described by small per-row arrays
(`RowFacts`), so a task needs no `Scan` and no images from the client: it
opens the inputs itself (`open_row_readers`). `image_hashes` is the one read
the merge step needs (which copy of a repeated ID to keep), through the same
readers.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np
import xxhash
from numpy.lib.recfunctions import repack_fields

from ..schema import RowCut, as_bytes
from . import readers
from .readers import TableInfo
from .scan import Scan


@dataclass
class RowFacts:
    """Per-row facts of some scan rows: 12 bytes a row, picklable.

    No IDs: `RecordFiller` reads each row's ID again with the rest of its input row,
    so pass 2 does not hold the IDs (~29 bytes a row) through the write pass.
    """

    codes: np.ndarray  # int16 class code
    file_index: np.ndarray  # int16, index into the inputs
    row: np.ndarray  # int64, row in that input

    def take(self, index: np.ndarray | slice) -> RowFacts:
        return RowFacts(self.codes[index], self.file_index[index], self.row[index])

    def __len__(self) -> int:
        return len(self.codes)


def open_row_readers(infos: Sequence[TableInfo], stack: contextlib.ExitStack) -> list[readers.RowReader]:
    """A `RowReader` per input, closed with `stack`.

    Each input must still be the file pass 1 read (`TableInfo.identity`):
    a path that now names another file, or a file rewritten since, raises
    InputChangedError, checked on the path first (before h5py can fail on a
    foreign file), then on the descriptors opened.
    """
    sources = []
    for info in infos:
        info.check_unchanged()
        f = stack.enter_context(readers.open_h5(info.path))
        reader = readers.RowReader(info, f)
        stack.callback(reader.close)
        sources.append(reader)
    return sources


@dataclass
class Block:
    """Rows of an output table, the images held apart from the other columns.

    `images` is one C-contiguous (N, H, W, B) array, so checksums, statistics
    and Parquet use it without a copy, and reads and writes move each image
    straight between it and the files (`RowCut.buffers`). `block[name]` is a
    column, `block[index]` a block of some rows, as with structured records.
    """

    columns: np.ndarray  # structured: every field but the image (`RowCut.rest`)
    images: np.ndarray

    @classmethod
    def empty(cls, n: int, dtype: np.dtype) -> Block:
        image = dtype["image"]
        return cls(np.empty(n, image_cut(dtype).rest), np.empty((n, *image.shape), image.base))

    @classmethod
    def from_records(cls, records: np.ndarray) -> Block:
        """A block holding a copy of structured `records` of the output dtype (packed, or with fields aligned)."""
        block = cls.empty(len(records), repack_fields(records.dtype))
        for name in block.columns.dtype.names or ():
            block.columns[name] = records[name]
        block.images[...] = records["image"]
        return block

    def __len__(self) -> int:
        return len(self.columns)

    def head(self, n: int) -> Block:
        """The first `n` rows, as views: writing them writes this block."""
        return Block(self.columns[:n], self.images[:n])

    @overload
    def __getitem__(self, key: str) -> np.ndarray: ...
    @overload
    def __getitem__(self, key: slice | np.ndarray) -> Block: ...
    def __getitem__(self, key: str | slice | np.ndarray) -> np.ndarray | Block:
        if isinstance(key, str):
            return self.images if key == "image" else self.columns[key]
        return Block(self.columns[key], np.ascontiguousarray(self.images[key]))


@functools.cache  # every block of a run has the same dtype
def image_cut(dtype: np.dtype) -> RowCut:
    cut = RowCut.of(dtype, "image")
    assert cut is not None, "output dtypes never overlap fields"
    return cut


class RecordFiller:
    """Builds the output block of some rows from their input rows."""

    def __init__(self, classes: Sequence[str], dtype: np.dtype, carry_provenance: bool) -> None:
        self.dtype = dtype
        self.carry_provenance = carry_provenance
        self.class_names = np.array([c.encode() for c in classes])

    def __call__(self, facts: RowFacts, sources: Sequence[readers.RowReader], into: Block | None = None) -> Block:
        """The block of `facts`' rows; in the first rows of `into` (a block to reuse) if given."""
        block = Block.empty(len(facts), self.dtype) if into is None else into.head(len(facts))
        columns = block.columns
        columns["label"] = facts.codes
        columns["SPECTYPE"] = self.class_names[facts.codes]
        columns["source_file"] = facts.file_index
        columns["source_row"] = facts.row
        for file_index, mine in rows_by_file(facts.file_index, facts.row):
            source = sources[file_index]
            rest = source.read_into(facts.row[mine], block.images, mine)
            names = source.info.columns
            columns["ID"][mine] = as_bytes(rest[names.id])  # as pass 1 read it (`scan.scan_chunk`)
            columns["RAJ2000"][mine] = rest[names.ra]
            columns["DECJ2000"][mine] = rest[names.dec]
            if self.carry_provenance:
                columns["source_file"][mine] = rest["source_file"]
                columns["source_row"][mine] = rest["source_row"]
        return block


def rows_by_file(file_index: np.ndarray, row: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """For each input among `file_index`: its index, and the positions of its rows in ascending row order."""
    for index in np.unique(file_index):
        mine = np.flatnonzero(file_index == index)
        yield int(index), mine[np.argsort(row[mine])]


def advise_reads(facts: RowFacts, sources: Sequence[readers.RowReader]) -> None:
    """Start reading the rows of a coming block (`RowReader.advise`), one input at a time."""
    for file_index, mine in rows_by_file(facts.file_index, facts.row):
        sources[file_index].advise(facts.row[mine])


def image_hashes(scan: Scan, rows: np.ndarray) -> np.ndarray:
    """A 64-bit xxh3 of the image of each scan row in `rows`, read again from its input (`merge.ImageHashes`)."""
    hashes = np.empty(len(rows), dtype=np.uint64)
    with contextlib.ExitStack() as stack:
        sources = open_row_readers([f.info for f in scan.files], stack)
        for file_index, mine in rows_by_file(scan.file_index[rows], scan.row[rows]):
            images = sources[file_index].read(scan.row[rows[mine]])[sources[file_index].info.columns.image]
            hashes[mine] = [xxhash.xxh3_64_intdigest(np.ascontiguousarray(image, dtype="<f4").data) for image in images]
    return hashes
