"""Build output records from input rows: the one step both write paths share.

The local write pass (`pipeline._write_tables`) and each Dask task
(`distributed.py`) call `RecordFiller` on a block of rows described by small
per-row arrays (`RowFacts`), so a task needs no `Scan` and no images from the
client: it opens the inputs itself (`open_row_readers`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import readers
from .readers import TableInfo


@dataclass
class RowFacts:
    """Per-row facts of some scan rows: ~40 bytes a row, picklable."""

    ids: np.ndarray  # bytes
    codes: np.ndarray  # int16 class code
    file_index: np.ndarray  # int16, index into the inputs
    row: np.ndarray  # int64, row in that input

    def take(self, index: np.ndarray | slice) -> RowFacts:
        return RowFacts(self.ids[index], self.codes[index], self.file_index[index], self.row[index])

    def __len__(self) -> int:
        return len(self.ids)


def open_row_readers(infos: Sequence[TableInfo], stack: contextlib.ExitStack) -> list[readers.RowReader]:
    """A `RowReader` per input, closed with `stack`."""
    sources = []
    for info in infos:
        f = stack.enter_context(readers.open_h5(info.path))
        reader = readers.RowReader(info, f)
        stack.callback(reader.close)
        sources.append(reader)
    return sources


class RecordFiller:
    """Builds output records for a block of rows from their input rows."""

    def __init__(self, classes: Sequence[str], dtype: np.dtype, carry_provenance: bool) -> None:
        self.dtype = dtype
        self.carry_provenance = carry_provenance
        self.class_names = np.array([c.encode() for c in classes])

    def __call__(self, facts: RowFacts, sources: Sequence[readers.RowReader]) -> np.ndarray:
        records = np.empty(len(facts), self.dtype)
        records["ID"] = facts.ids
        records["label"] = facts.codes
        records["SPECTYPE"] = self.class_names[facts.codes]
        records["source_file"] = facts.file_index
        records["source_row"] = facts.row
        for file_index in np.unique(facts.file_index):
            mine = np.flatnonzero(facts.file_index == file_index)
            mine = mine[np.argsort(facts.row[mine])]
            source = sources[file_index]
            rows = source.read(facts.row[mine])
            columns = source.info.columns
            records["RAJ2000"][mine] = rows[columns.ra]
            records["DECJ2000"][mine] = rows[columns.dec]
            records["image"][mine] = rows[columns.image]
            if self.carry_provenance:
                records["source_file"][mine] = rows["source_file"]
                records["source_row"][mine] = rows["source_row"]
        return records
