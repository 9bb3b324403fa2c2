"""What every output format provides: the interface the registry (`formats/__init__.py`) holds.

One module per format (hdf5.py, parquet.py) defines one `OutputFormat`
subclass. Detection and capabilities are cheap class attributes and methods;
a format imports its heavy libraries (pyarrow) only when it writes or reads.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..errors import DatasetError, UsageError
from ..schema import FORMAT_NAME, FORMAT_VERSION

if TYPE_CHECKING:
    from ..inputs.readers import FileIdentity
    from ..inputs.records import Block


class Sink(Protocol):
    """Where the write pass puts each block of records."""

    def write(self, name: str, positions: np.ndarray, block: Block) -> None: ...
    def finish(self, metadata: Mapping) -> None: ...
    def close(self) -> None: ...


class Table(Protocol):
    """One stored table, read by row ranges (what `open_dataset`'s splits use)."""

    def __len__(self) -> int: ...
    def read(self, start: int, stop: int) -> np.ndarray: ...
    def take(self, rows: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(images float32 (N, H, W, bands), labels int64 (N,)), new C-contiguous arrays.

        `rows` ascend (repeats allowed); row rows[i] lands at position slots[i] of both.
        """
        ...

    def take_range(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """`take` of rows [start, stop) in order (0 <= start <= stop <= len): one run, with no sort to undo."""
        ...

    def close(self) -> None: ...


class OutputFormat(ABC):
    """One output format: detection, capabilities, its sink and its table reader."""

    name: str = ""  # the --format value
    title: str = ""  # in messages
    directory: bool = False  # the output is a directory, not a file
    text_ids: bool = False  # IDs must be UTF-8 text
    distributed_writes: bool = False  # Dask tasks can write its tables (`--scheduler`)
    rows_as_input: bool = False  # its tables are HDF5 tables the input readers take (split's parent, preview)
    updates_metadata: bool = False  # `stats` can store new statistics into an existing dataset

    @abstractmethod
    def wants_target(self, target: str | Path) -> bool:
        """Whether an output path, as the user typed it, asks for this format."""
        raise NotImplementedError

    @abstractmethod
    def guess_can_open(self, path: Path) -> bool:
        """Whether an existing path looks like this format's dataset (cheap: no metadata parsing)."""
        raise NotImplementedError

    @abstractmethod
    def foreign_problem(self, path: Path) -> str | None:
        """None if `path` is this format's cutout-etl dataset and nothing else, else what --overwrite objects to."""
        raise NotImplementedError

    @abstractmethod
    def open_sink(
        self, tmp: Path, tables_rows: Mapping[str, int], dtype: np.dtype, classes: Sequence[str], rows_per_shard: int
    ) -> Sink:
        raise NotImplementedError

    @abstractmethod
    def open_tables(self, path: Path, closers: list) -> tuple[dict, dict[str, Table]]:
        """The metadata and one table per split; what must be closed goes on `closers` as it is opened."""
        raise NotImplementedError

    def replace_metadata(self, path: Path, metadata: Mapping, read: FileIdentity, fsync: bool = False) -> None:
        """Store new metadata into an existing dataset (`stats`); UsageError where the format cannot."""
        raise UsageError(f"{path}: {self.title} datasets' metadata cannot be updated")

    def check_can_update(self, path: Path) -> None:
        """UsageError before any work unless the format `updates_metadata` (a format that does checks more)."""
        if not self.updates_metadata:
            raise UsageError(
                f"{path}: a {self.title} dataset's statistics are written by build into every shard; "
                f"to recompute them, convert to HDF5 (cutout-etl convert {path} dataset.h5)"
            )

    def format_checks(self, path: Path, metadata: Mapping) -> tuple[list[str], list[str]]:
        """`verify`'s checks of this format's own storage: (names of the checks, failures)."""
        return [], []


def is_our_metadata(raw: object) -> bool:
    """Whether raw JSON text is cutout-etl metadata (any version): what --overwrite may replace."""
    try:
        metadata = json.loads(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return isinstance(metadata, dict) and metadata.get("format") == FORMAT_NAME


def check_metadata(path: Path, raw: object, missing: str) -> dict:
    """Parse a dataset's metadata; DatasetError unless it is cutout-etl metadata this version reads."""
    if raw is None:
        raise DatasetError(f"{path}: not a cutout-etl dataset ({missing}); build one first")
    try:
        metadata = json.loads(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable cutout-etl metadata ({exc})") from exc
    ours = isinstance(metadata, dict) and metadata.get("format") == FORMAT_NAME
    if not ours or metadata.get("format_version", 0) > FORMAT_VERSION:
        found = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
        raise DatasetError(
            f"{path}: format {found!r}; this cutout-etl reads {FORMAT_NAME!r} up to version {FORMAT_VERSION}"
        )
    return metadata
