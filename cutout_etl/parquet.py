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
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import DatasetError, InvalidRowError
from .records import Block
from .schema import DATA_DIR, DEFAULT_ROWS_PER_SHARD, FILE_SPLIT, METADATA_ATTR, SIDECAR

CARD = "README.md"
# Arrow column <- structured-record field
COLUMNS = {
    "id": "ID",
    "ra": "RAJ2000",
    "dec": "DECJ2000",
    "spectype": "SPECTYPE",
    "label": "label",
    "source_file": "source_file",
    "source_row": "source_row",
    "image": "image",
}
_SMALL_COLUMNS = [c for c in COLUMNS if c != "image"]


def arrow_schema(image_size: int, classes: Sequence[str]) -> pa.Schema:
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("ra", pa.float64()),
            ("dec", pa.float64()),
            ("spectype", pa.string()),
            ("label", pa.int64()),
            ("source_file", pa.int16()),
            ("source_row", pa.int64()),
            ("image", pa.list_(pa.float32(), image_size)),
        ]
    )
    return schema.with_metadata({"huggingface": json.dumps({"info": {"features": hf_features(image_size, classes)}})})


def hf_features(image_size: int, classes: Sequence[str]) -> dict:
    """Hugging Face `datasets` features, as `Features.to_dict()` writes them."""

    def value(dtype: str) -> dict:
        return {"dtype": dtype, "_type": "Value"}

    return {
        "id": value("string"),
        "ra": value("float64"),
        "dec": value("float64"),
        "spectype": value("string"),
        "label": {"names": list(classes), "_type": "ClassLabel"},
        "source_file": value("int16"),
        "source_row": value("int64"),
        "image": {"feature": value("float32"), "length": image_size, "_type": "Sequence"},
    }


def records_to_table(records: np.ndarray | Block, schema: pa.Schema) -> pa.Table:
    """Rows (structured records or a `Block`) as an Arrow table, images not copied twice."""
    image = np.ascontiguousarray(records["image"]).reshape(-1)
    size = schema.field("image").type.list_size
    arrays = [
        pa.array(np.char.decode(records["ID"], "utf-8"), pa.string()),
        pa.array(records["RAJ2000"]),
        pa.array(records["DECJ2000"]),
        pa.array(np.char.decode(records["SPECTYPE"], "utf-8"), pa.string()),
        pa.array(records["label"]),
        pa.array(records["source_file"]),
        pa.array(records["source_row"]),
        pa.FixedSizeListArray.from_arrays(pa.array(image, pa.float32()), size),
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def table_to_records(table: pa.Table, dtype: np.dtype) -> np.ndarray:
    """An Arrow table back to structured records of `dtype`, bit-exact."""
    records = np.empty(table.num_rows, dtype)
    for column, field in COLUMNS.items():
        values = table.column(column).combine_chunks()
        if column == "image":
            flat = values.flatten().to_numpy(zero_copy_only=False)
            records["image"] = flat.reshape((table.num_rows, *dtype["image"].shape))
        elif pa.types.is_string(values.type):
            records[field] = np.char.encode(np.asarray(values.to_pylist(), dtype=str), "utf-8")
        else:
            records[field] = values.to_numpy(zero_copy_only=False)
    return records


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
    (statistics, checksums, digest) into each shard's footer.
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
        self._writers: list[pq.ParquetWriter] = []
        self._shards = {
            name: [directory / DATA_DIR / n for n in shard_names(name, rows, rows_per_shard)]
            for name, rows in tables_rows.items()
        }
        self._open: dict[str, pq.ParquetWriter] = {}
        self._written = dict.fromkeys(tables_rows, 0)
        for name in tables_rows:
            if tables_rows[name] == 0:  # an empty split still gets one (empty) shard
                self._writer(name, 0)

    def _writer(self, name: str, shard: int) -> pq.ParquetWriter:
        key = f"{name}/{shard}"
        if key not in self._open:
            writer = pq.ParquetWriter(
                self._shards[name][shard],
                self.schema,
                compression={c: ("none" if c == "image" else "zstd") for c in COLUMNS},
                use_dictionary=["spectype"],
                write_statistics=_SMALL_COLUMNS,
            )
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
            row = first_non_utf8(records["ID"])
            raise InvalidRowError(f"{name}: row {start + row}: {not_utf8_message(records['ID'][row])}") from exc
        offset = 0
        while offset < len(records):
            shard, within = divmod(start + offset, self.rows_per_shard)
            take = min(len(records) - offset, self.rows_per_shard - within)
            self._writer(name, shard).write_table(table.slice(offset, take), row_group_size=take)
            offset += take
        self._written[name] = start + len(records)

    def finish(self, metadata: Mapping) -> None:
        text = json.dumps(metadata)
        for writer in self._writers:
            writer.add_key_value_metadata({METADATA_ATTR: text})
        self.close()
        (self.directory / SIDECAR).write_text(json.dumps(metadata, indent=1))
        (self.directory / CARD).write_text(dataset_card(metadata, self._shards))

    def close(self) -> None:
        while self._writers:
            self._writers.pop().close()


def dataset_card(metadata: Mapping, shards: Mapping[str, list[Path]]) -> str:
    """A Hugging Face dataset card: YAML front matter with splits and features, then prose."""
    classes = metadata["classes"]
    names = "\n".join(f"          '{i}': {json.dumps(c)}" for i, c in enumerate(classes))
    files = "\n".join(f"  - split: {FILE_SPLIT[s]}\n    path: {DATA_DIR}/{FILE_SPLIT[s]}-*" for s in shards)
    h, w, b = metadata["image_shape"]
    counts = "\n".join(
        f"| {FILE_SPLIT[s]} | {metadata['tables_rows'][s]['rows']} | "
        + " | ".join(str(metadata["tables_rows"][s]["class_counts"].get(c, 0)) for c in classes)
        + " |"
        for s in shards
    )
    return f"""---
configs:
- config_name: default
  data_files:
{files}
dataset_info:
  features:
  - name: id
    dtype: string
  - name: ra
    dtype: float64
  - name: dec
    dtype: float64
  - name: spectype
    dtype: string
  - name: label
    dtype:
      class_label:
        names:
{names}
  - name: source_file
    dtype: int16
  - name: source_row
    dtype: int64
  - name: image
    sequence: float32
    length: {h * w * b}
---

# Image cutouts ({", ".join(classes)})

Written by {metadata.get("created_by", "cutout-etl")}. Each row is one object: `image` holds a
{h} x {w} cutout in the bands {", ".join(metadata["bands"])}, flattened row-major with the bands last:
reshape to ({h}, {w}, {b}). Pixel values are raw flux in {metadata["pixel_unit"]}, copied bit-exact
from the inputs. `label` indexes the classes above. Statistics of the training split, the split
parameters, checksums and input provenance are in `{SIDECAR}` (and in every shard's metadata).

| split | rows | {" | ".join(classes)} |
| --- | --- |{" --- |" * len(classes)}
{counts}
"""


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
            raise DatasetError(f"{self.files[0].parent}: rows {start}-{stop - 1} do not match the dataset's schema ({_short(exc)})") from exc

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
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"{path}: not a readable Parquet file (truncated or corrupt: {_short(exc)})") from exc


def _read_group(shard: pq.ParquetFile, path: Path, group: int) -> pa.Table:
    try:
        return shard.read_row_group(group)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"{path}: not a readable Parquet file (truncated or corrupt: row group {group}: {_short(exc)})") from exc
