"""Parquet shards written one at a time, by this process or by Dask workers, and sealed at the end.

Every shard is written with the same writer settings (`ShardWriter`),
so a shard a worker wrote and one the local sink wrote hold the same bytes
for the same rows. A worker does not know the final metadata (the digest
needs every block's checksums): it writes its whole shard under a temporary
name in the output's temporary directory, with a footer that lacks the
`cutout_etl` key. `seal_shards` then gives each shard the final footer
without rewriting its row groups: the footer (Parquet's FileMetaData, at the
end of the file, behind the data it points at by offset) is rebuilt from the
same writer settings plus the final key-value metadata, and the shard's row
groups are appended to it, so the sealed file is byte for byte what the
local sink writes (tests/test_parquet_workers.py).
"""

from __future__ import annotations

import io
import os
import struct
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..schema import METADATA_ATTR, OUTPUT_COLUMNS
from .write_behind import AppendBehind

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

_COLUMNS = [c.arrow_name for c in OUTPUT_COLUMNS]
_SHAPED = {c.arrow_name for c in OUTPUT_COLUMNS if c.shaped}
TEMP_SUFFIX = ".part"  # a worker's shard before sealing: `.NAME.<uuid>.part`, hidden, in data/
_FOOTER_TAIL = 8  # the footer's length (uint32, little-endian) and the magic "PAR1"


class ShardWriter:
    """One shard's Parquet writer on a file of its own; written row groups leave the page cache (`write_behind`)."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        import pyarrow as pa

        self._file = pa.OSFile(str(path), "wb")
        self._behind = AppendBehind(self._file.fileno())
        self._writer = _parquet_writer(self._file, schema)

    def write_table(self, table: pa.Table, row_group_size: int) -> None:
        self._writer.write_table(table, row_group_size=row_group_size)
        self._behind.advance(self._file.tell())

    def add_key_value_metadata(self, metadata: dict[str, str]) -> None:
        self._writer.add_key_value_metadata(metadata)

    def close(self) -> None:
        try:
            self._writer.close()
        finally:
            self._file.close()


def _parquet_writer(where: pa.NativeFile | io.BytesIO, schema: pa.Schema) -> pq.ParquetWriter:
    """The one set of writer settings: images uncompressed, small columns zstd, statistics on the small columns."""
    import pyarrow.parquet as pq

    return pq.ParquetWriter(
        where,
        schema,
        compression={c: ("none" if c in _SHAPED else "zstd") for c in _COLUMNS},
        use_dictionary=["spectype"],
        write_statistics=[c for c in _COLUMNS if c not in _SHAPED],
    )


def temp_shard_path(final: Path) -> Path:
    """Where a worker writes `final` before sealing: unique per attempt, so a retried task never meets a stale one."""
    return final.with_name(f".{final.name}.{uuid.uuid4().hex}{TEMP_SUFFIX}")


def seal_shards(schema: pa.Schema, shards: Sequence[tuple[Path, Path]], metadata_text: str) -> None:
    """Give each (temporary, final) shard the final footer and its final name; remove attempts nobody collected."""
    footer = _footer_template(schema, metadata_text)
    for temp, final in shards:
        _replace_footer(temp, footer)
        os.replace(temp, final)
    directories = {final.parent for _, final in shards}
    for directory in directories:
        for stale in directory.glob(f".*{TEMP_SUFFIX}"):  # a task retried after its worker died
            stale.unlink()


def _footer_template(schema: pa.Schema, metadata_text: str) -> pq.FileMetaData:
    """The footer of an empty shard with the final key-value metadata, as the local sink writes it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    writer = _parquet_writer(buffer, schema)
    writer.add_key_value_metadata({METADATA_ATTR: metadata_text})
    writer.close()
    return pq.read_metadata(pa.BufferReader(buffer.getvalue()))


def _replace_footer(path: Path, template: pq.FileMetaData) -> None:
    """Truncate the shard after its row groups and write the template's footer with them appended."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    written = pq.read_metadata(path)
    footer = pq.read_metadata(pa.BufferReader(_metadata_file(template)))  # a copy: appending changes it
    footer.append_row_groups(written)
    with open(path, "r+b") as fh:
        fh.seek(-_FOOTER_TAIL, os.SEEK_END)
        (length,) = struct.unpack("<I", fh.read(4))
        fh.seek(-(_FOOTER_TAIL + length), os.SEEK_END)
        fh.truncate()
        fh.write(_metadata_file(footer)[4:])  # without the leading magic: the data part has it


def _metadata_file(metadata: pq.FileMetaData) -> bytes:
    """`metadata` serialised as Parquet writes a footer: magic, FileMetaData, its length, magic."""
    out = io.BytesIO()
    metadata.write_metadata_file(out)
    return out.getvalue()
