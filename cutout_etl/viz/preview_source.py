"""What a preview draws from (one dataset split, or class files), which rows it draws, and reading them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .. import formats
from ..dataset import open_dataset
from ..errors import DatasetError, InputFileError, UsageError
from ..formats.hdf5 import has_metadata
from ..inputs import readers
from ..inputs.scan import ProgressFn, ReadOptions, open_inputs
from ..schema import Columns, as_bytes, band_names
from ..steps.merge import encode_labels, normalize_labels


@dataclass
class _Table:
    """One table rows are drawn from, open for reading by row index."""

    info: readers.TableInfo
    reader: readers.RowReader
    codes: np.ndarray  # class index per row; -1 for rows outside the classes
    label: str  # how a row is named in titles: file name, or split name

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, list[str]]:
        records = self.reader.read(rows)
        images = np.asarray(records[self.info.columns.image], dtype=np.float32)
        ids = [v.decode("utf-8", "replace") for v in as_bytes(records[self.info.columns.id])]
        return images, ids


@dataclass
class Source:
    """What the preview draws from: tables, classes, bands and any stored statistics."""

    kind: str  # "dataset" or "class files"
    name: str  # for titles
    tables: list[_Table]
    classes: list[str]
    bands: list[str]
    image_shape: tuple[int, int, int]
    split: str | None = None
    stats: dict | None = None  # stored per-band statistics (a dataset's `stats`)

    def rows_per_class(self) -> dict[str, int]:
        return {c: int(sum((t.codes == i).sum() for t in self.tables)) for i, c in enumerate(self.classes)}


def is_dataset(path: Path) -> bool:
    """A cutout-etl dataset carries its metadata in a root attribute."""
    return has_metadata(path)


def open_source(paths: Sequence[Path], split: str | None, read: ReadOptions, stack: contextlib.ExitStack) -> Source:
    """Open one dataset or a set of class files; the files stay open until `stack` closes."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise UsageError("no input: give a dataset or class files")
    for path in paths:
        fmt = formats.detect(path)
        if not fmt.rows_as_input:
            raise UsageError(
                f"{path}: preview reads HDF5; convert a {fmt.title} dataset first (cutout-etl convert {path} dataset.h5)"
            )
    datasets = [p for p in paths if is_dataset(p)]
    if datasets and len(paths) > 1:
        raise UsageError(f"{datasets[0]}: is a cutout-etl dataset; preview takes one dataset, or class files, not both")
    if datasets:
        return _open_dataset(paths[0], split, stack)
    if split is not None:
        raise UsageError(f"{paths[0]}: --split applies to a dataset; this is a class file")
    return _open_class_files(paths, read, stack)


def _open_dataset(path: Path, split: str | None, stack: contextlib.ExitStack) -> Source:
    with open_dataset(path) as ds:
        metadata = ds.metadata
    tables = list(metadata["tables"])
    if split is None:
        split = "train" if "train" in tables else tables[0] if len(tables) == 1 else "train"
    if split not in tables:
        raise DatasetError(f"{path}: no split '{split}' (splits: {', '.join(tables)})")
    f = stack.enter_context(readers.open_h5(path))
    info = readers.inspect_table(path, f, split, Columns())
    classes = list(metadata["classes"])
    codes = _read_field(info, f, "label").astype(np.int64)
    codes[(codes < 0) | (codes >= len(classes))] = -1
    table = _Table(info, _reader(info, f, stack), codes, split)
    stats = metadata.get("stats")
    return Source(
        kind="dataset",
        name=path.name,
        tables=[table],
        classes=classes,
        bands=list(metadata["bands"]),
        image_shape=info.image_shape,
        split=split,
        stats=stats if stats and stats.get("bands") else None,
    )


def _open_class_files(paths: list[Path], read: ReadOptions, stack: contextlib.ExitStack) -> Source:
    opened = sorted(open_inputs(paths, read, stack), key=lambda o: (o[0].name, str(o[0].path)))
    labels = [normalize_labels(_read_field(info, f, info.columns.label)) for info, f in opened]
    classes = sorted({v.decode("utf-8", "replace") for part in labels for v in np.unique(part)})
    tables = [
        _Table(info, _reader(info, f, stack), encode_labels(part, classes).astype(np.int64), info.name)
        for (info, f), part in zip(opened, labels)
    ]
    shape = opened[0][0].image_shape
    name = opened[0][0].name if len(opened) == 1 else f"{len(opened)} class files"
    return Source("class files", name, tables, classes, band_names(shape[-1]), shape)


def _reader(info: readers.TableInfo, f: h5py.File, stack: contextlib.ExitStack) -> readers.RowReader:
    reader = readers.RowReader(info, f)
    stack.callback(reader.close)
    return reader


def _read_field(info: readers.TableInfo, f: h5py.File, name: str) -> np.ndarray:
    """One column of every row (HDF5 reads the field alone, not the images)."""
    try:
        return f[info.table_path].fields(name)[:]
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        raise InputFileError(f"{info.path}: cannot read column '{name}': corrupt or truncated ({exc})") from exc


def draw(source: Source, per_class: int, seed: int, salt: int = 0) -> list[np.ndarray]:
    """Per class, up to `per_class` distinct rows as (table, row) pairs, sorted.

    Deterministic in (seed, salt): each class has its own random stream, so a
    class's draw does not depend on the others.
    """
    picks = []
    for code in range(len(source.classes)):
        pairs = np.concatenate(
            [
                np.stack([np.full(len(rows), t), rows], axis=1)
                for t, rows in ((t, np.flatnonzero(table.codes == code)) for t, table in enumerate(source.tables))
            ]
        )
        rng = np.random.default_rng([seed, salt, code])
        if len(pairs) > per_class:
            pairs = pairs[np.sort(rng.choice(len(pairs), size=per_class, replace=False))]
        picks.append(pairs.astype(np.int64).reshape(-1, 2))
    return picks


def read_pairs(
    source: Source, pairs: np.ndarray, chunk_rows: int, progress: ProgressFn | None = None, stage: str = "read"
) -> Iterator[tuple[np.ndarray, np.ndarray, list[str]]]:
    """Yield (indices into `pairs`, images, ids) chunk by chunk, table by table."""
    done = 0
    for t, table in enumerate(source.tables):
        index = np.flatnonzero(pairs[:, 0] == t)
        index = index[np.argsort(pairs[index, 1], kind="stable")]
        for first in range(0, len(index), chunk_rows):
            part = index[first : first + chunk_rows]
            images, ids = table.read(pairs[part, 1])
            done += len(part)
            if progress is not None:
                progress(stage, done, len(pairs))
            yield part, images, ids
