"""Parquet output and input: sharded the way Hugging Face `datasets` expects.

Layout of a dataset directory:

    DATASET/data/train-00000-of-00003.parquet ...   one set of shards per split
    DATASET/data/validation-00000-of-00001.parquet   (our split "val")
    DATASET/data/test-00000-of-00001.parquet
    DATASET/cutout_etl.json                          the metadata, as in HDF5
    DATASET/README.md                                a dataset card (YAML front matter)

The image is a flat FixedSizeList<float32>[H*W*bands] (row-major, channels
last): every Parquet reader gets it at full speed and bit-exact, and a
reshape gives (H, W, bands). Every shard carries the full metadata in its
key-value metadata (key `cutout_etl`) and Hugging Face features (key
`huggingface`, the label a ClassLabel with the class names).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DatasetError, InvalidRowError
from ..inputs.records import Block
from ..schema import (
    DATA_DIR,
    DEFAULT_ROWS_PER_SHARD,
    FILE_SPLIT,
    METADATA_ATTR,
    OUTPUT_COLUMNS,
    SIDECAR,
    OutputColumn,
    row_dtype,
)
from .base import OutputFormat, Sink, Table, check_metadata, is_our_metadata
from .hf_card import dataset_card, hf_features
from .parquet_shards import ShardWriter, seal_shards

if TYPE_CHECKING:  # pyarrow is imported only when Parquet is written or read
    import pyarrow as pa

CARD = "README.md"
ENTRIES = (DATA_DIR, SIDECAR, CARD)  # all a dataset directory holds
# Arrow column <- structured-record field
COLUMNS = {c.arrow_name: c.name for c in OUTPUT_COLUMNS}
_SHAPED = {c.arrow_name for c in OUTPUT_COLUMNS if c.shaped}


class ParquetFormat(OutputFormat):
    name = "parquet"
    title = "Parquet"
    directory = True
    text_ids = True
    distributed_writes = True  # whole shards by Dask tasks (execution/dask_parquet.py), sealed by `finish`
    rows_as_input = False
    updates_metadata = False

    def wants_target(self, target: str | Path) -> bool:
        """A path ending in / or .parquet, or an existing directory (pass it as typed: pathlib drops a trailing /)."""
        return str(target).endswith(("/", ".parquet")) or Path(target).is_dir()

    def guess_can_open(self, path: Path) -> bool:
        return path.is_dir()

    def foreign_problem(self, directory: Path) -> str | None:
        """None for a cutout-etl Parquet dataset directory holding nothing else, else what is wrong."""
        with os.scandir(directory) as listing:
            entries = {entry.name: entry for entry in listing}
        foreign = sorted(set(entries) - set(ENTRIES))
        if foreign:
            return f"holds {foreign[0]}, which cutout-etl did not write"
        sidecar = entries.get(SIDECAR)
        if (
            sidecar is None
            or not sidecar.is_file(follow_symlinks=False)
            or not is_our_metadata(Path(sidecar.path).read_bytes())
        ):
            return f"not a cutout-etl Parquet dataset (no cutout-etl {SIDECAR})"
        data = entries.get(DATA_DIR)
        if data is not None:
            if not data.is_dir(follow_symlinks=False):
                return f"{DATA_DIR} is not a directory of shards"
            with os.scandir(data.path) as shards:
                foreign = [s.name for s in shards if not _is_shard(s)]
            if foreign:
                return f"holds {DATA_DIR}/{min(foreign)}, which cutout-etl did not write"
        return None

    def open_sink(
        self, tmp: Path, tables_rows: Mapping[str, int], dtype: np.dtype, classes: Sequence[str], rows_per_shard: int
    ) -> Sink:
        return ParquetSink(tmp, tables_rows, int(np.prod(dtype["image"].shape)), classes, rows_per_shard)

    def open_tables(self, path: Path, closers: list) -> tuple[dict, dict[str, Table]]:
        sidecar = path / SIDECAR
        text = sidecar.read_bytes() if sidecar.is_file() else None  # json.loads decodes: bad bytes are a DatasetError
        metadata = check_metadata(path, text, f"no {SIDECAR}")
        from .parquet_read import ParquetTable

        dtype = row_dtype(metadata)
        tables: dict[str, Table] = {}
        for name in metadata["tables"]:
            opened = tables[name] = ParquetTable(path, name, dtype)
            closers.append(opened.close)
        for name, table in tables.items():
            expected = metadata["tables_rows"][name]["rows"]
            if len(table) != expected:
                raise DatasetError(
                    f"{path}: split {name} has {len(table)} rows in its shards, the metadata says {expected}"
                )
        return metadata, tables

    def format_checks(self, path: Path, metadata: Mapping) -> tuple[list[str], list[str]]:
        return ["Parquet shard footers"], shard_footer_failures(path, metadata)


_SHARD_NAME = re.compile(rf"({'|'.join(map(re.escape, FILE_SPLIT.values()))})-\d{{5,}}-of-\d{{5,}}\.parquet")


def _is_shard(entry: os.DirEntry) -> bool:
    """A shard as `shard_names` names them: any other file in data/ is not ours to replace."""
    return entry.is_file(follow_symlinks=False) and _SHARD_NAME.fullmatch(entry.name) is not None


def shard_footer_failures(path: Path, metadata: Mapping) -> list[str]:
    """Every shard's footer: `cutout_etl` is the sidecar metadata, `huggingface` the features of these classes.

    Hugging Face `datasets` reads the class names from the footer, not from the sidecar.
    """
    import pyarrow.parquet as pq

    features = hf_features(math.prod(metadata["image_shape"]), list(metadata["classes"]))
    expected = {
        METADATA_ATTR.encode(): _canonical(metadata),
        b"huggingface": _canonical({"info": {"features": features}}),
    }
    failures = []
    for shard in sorted((path / DATA_DIR).glob("*.parquet")):
        footer = pq.ParquetFile(shard).metadata.metadata or {}
        for key, text in expected.items():
            if _canonical_text(footer.get(key)) != text:
                failures.append(
                    f"{shard.name}: footer metadata '{key.decode()}' differs from the dataset's ({SIDECAR})"
                )
    return failures


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def _canonical_text(raw: bytes | None) -> str | None:
    try:
        return _canonical(json.loads(raw)) if raw is not None else None
    except ValueError:
        return None


def _arrow_type(column: OutputColumn, image_size: int) -> pa.DataType:
    import pyarrow as pa

    value = pa.type_for_alias(column.arrow)
    return pa.list_(value, image_size) if column.shaped else value


def arrow_schema(image_size: int, classes: Sequence[str]) -> pa.Schema:
    import pyarrow as pa

    schema = pa.schema([(c.arrow_name, _arrow_type(c, image_size)) for c in OUTPUT_COLUMNS])
    return schema.with_metadata({"huggingface": json.dumps({"info": {"features": hf_features(image_size, classes)}})})


def records_to_table(records: np.ndarray | Block, schema: pa.Schema) -> pa.Table:
    """Rows (structured records or a `Block`) as an Arrow table, images not copied twice."""
    import pyarrow as pa

    arrays = []
    for column in OUTPUT_COLUMNS:
        values = records[column.name]
        if column.shaped:
            size = schema.field(column.arrow_name).type.list_size
            flat = pa.array(np.ascontiguousarray(values).reshape(-1), pa.type_for_alias(column.arrow))
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, size))
        elif column.arrow == "string":
            arrays.append(pa.array(np.char.decode(values, "utf-8"), pa.string()))
        else:
            arrays.append(pa.array(values))
    return pa.Table.from_arrays(arrays, schema=schema)


def _release_arrow_memory() -> None:
    """Hand freed memory back: Arrow's allocator keeps the freed row groups, ~50 MB of the build's peak RSS."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def first_non_utf8(ids: np.ndarray) -> int | None:
    """Index of the first ID (bytes) that is not UTF-8 text, or None. Pure-ASCII IDs are cleared at once."""
    codes = np.ascontiguousarray(ids).view(np.uint8)
    if not (codes >= 0x80).any():
        return None
    for i in np.flatnonzero((codes.reshape(len(ids), -1) >= 0x80).any(axis=1)).tolist():
        try:
            bytes(ids[i]).decode("utf-8")
        except UnicodeDecodeError:
            return i
    return None


def not_utf8_message(raw: bytes) -> str:
    return f"ID {bytes(raw)!r} is not UTF-8 text, which Parquet's string columns need; write HDF5 instead"


def shard_names(split: str, rows: int, rows_per_shard: int) -> list[str]:
    count = max(1, math.ceil(rows / rows_per_shard))
    return [f"{FILE_SPLIT[split]}-{i:05d}-of-{count:05d}.parquet" for i in range(count)]


class ParquetSink:
    """Writes each table's blocks, in stored order, into its shards.

    Every shard stays open until `finish`, which writes the final metadata
    (statistics, checksums, digest) into each shard's footer, and seals the shards Dask tasks wrote.
    """

    def __init__(
        self,
        directory: Path,
        tables_rows: Mapping[str, int],
        image_size: int,
        classes: Sequence[str],
        rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
    ) -> None:
        self.directory = directory
        self.schema = arrow_schema(image_size, classes)
        self.rows_per_shard = rows_per_shard
        (directory / DATA_DIR).mkdir(parents=True)
        self._writers: list[ShardWriter] = []
        self.shards = {
            name: [directory / DATA_DIR / n for n in shard_names(name, rows, rows_per_shard)]
            for name, rows in tables_rows.items()
        }
        self._open: dict[str, ShardWriter] = {}
        self._written = dict.fromkeys(tables_rows, 0)
        self.from_workers: list[tuple[Path, Path]] = []  # (temporary, final) shards Dask tasks wrote
        self._closed: list[Path] = []  # full shards closed before `finish`, without the final metadata yet
        for name in tables_rows:
            if tables_rows[name] == 0:  # an empty split still gets one (empty) shard
                self._writer(name, 0)

    def _writer(self, name: str, shard: int) -> ShardWriter:
        key = f"{name}/{shard}"
        if key not in self._open:
            writer = ShardWriter(self.shards[name][shard], self.schema)
            self._open[key] = writer
            self._writers.append(writer)
        return self._open[key]

    def write(self, name: str, positions: np.ndarray, records: Block) -> None:
        start = self._written[name]
        if len(positions) and (positions[0] != start or np.any(np.diff(positions) != 1)):
            raise ValueError(f"Parquet tables are written in stored order (table {name}, row {start})")
        try:
            table = records_to_table(records, self.schema)
        except UnicodeDecodeError as exc:
            ids = records["ID"]
            row = first_non_utf8(ids)
            if row is None:  # not an ID that failed
                raise
            raise InvalidRowError(f"{name}: row {start + row}: {not_utf8_message(ids[row])}") from exc
        offset = 0
        while offset < len(records):
            shard, within = divmod(start + offset, self.rows_per_shard)
            take = min(len(records) - offset, self.rows_per_shard - within)
            self._writer(name, shard).write_table(table.slice(offset, take), row_group_size=take)
            offset += take
            if within + take == self.rows_per_shard:
                self._close_full(name, shard)
        self._written[name] = start + len(records)
        del table
        _release_arrow_memory()

    def _close_full(self, name: str, shard: int) -> None:
        """Close a full shard now (an open writer holds ~8 MB); `finish` gives it its final footer, as to workers' shards."""
        writer = self._open.pop(f"{name}/{shard}")
        self._writers.remove(writer)
        writer.close()
        self._closed.append(self.shards[name][shard])

    def finish(self, metadata: Mapping) -> None:
        text = json.dumps(metadata)
        for writer in self._writers:
            writer.add_key_value_metadata({METADATA_ATTR: text})
        self.close()
        seal_shards(self.schema, [*self.from_workers, *((path, path) for path in self._closed)], text)
        (self.directory / SIDECAR).write_text(json.dumps(metadata, indent=1))
        (self.directory / CARD).write_text(dataset_card(metadata, self.shards))

    def close(self) -> None:
        while self._writers:
            self._writers.pop().close()
