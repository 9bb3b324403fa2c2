"""Checksums of what is written, and the dataset's content digest. No I/O.

Each table gets, per block of rows, an xxh3-128 checksum of its image bytes,
of its content columns and of its provenance columns, so `verify` can name
the block that changed. Each content column also gets one checksum over the
whole table: an xxh3-128 over the column's per-block xxh3-128 digests in
block order. Blocks can so be checksummed anywhere (a Dask task each) and
combined in order on the client; the digest therefore depends on the block
size, recorded as `block_rows`. The dataset digest is a SHA-256 over those
streams and the metadata that defines the content (classes, bands, shape,
unit, row and class counts, and the parameters `verify` checks the content
against: the split's fractions, seed, group radius, grouping and sky cell
size, its method and faint-end table when not the default, and the
duplicate-position match radius). Outside it, on purpose:
provenance (`source_file`, `source_row`, `inputs`, `parent`, the rest of
`report`), the tool version, and the statistics (derived from the content;
`verify` recomputes them).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import xxhash

from ..errors import ChecksumError, DatasetError
from ..schema import CONTENT_COLUMNS, PROVENANCE_COLUMNS

if TYPE_CHECKING:
    from ..inputs.records import Block

ALGORITHM = "xxh3-128"
_SMALL_CONTENT = tuple(name for name in CONTENT_COLUMNS if name != "image")  # the image has its own stream
DIGESTED_METADATA = ("format_version", "classes", "bands", "image_shape", "pixel_unit")
DIGESTED_SPLIT = ("fractions", "seed", "group_radius_arcsec", "group_by", "cell_deg")
# Format version 1 digested only the split's fractions and seed; its datasets still verify, without the radii.
DIGESTED_SPLIT_V1 = ("fractions", "seed")
DEFAULT_SPLIT_METHOD = "exact"  # steps/split_methods.SplitMethod.EXACT; other methods are digested


def _columns_digest(records: np.ndarray | Block, columns: tuple[str, ...]) -> str:
    hasher = xxhash.xxh3_128()
    for name in columns:
        hasher.update(np.ascontiguousarray(records[name]).data)
    return hasher.hexdigest()


def block_checksums(records: np.ndarray | Block) -> dict:
    """Everything one block (structured records or a `Block`) contributes to its table's checksums: small, picklable."""
    columns = {name: xxhash.xxh3_128_digest(np.ascontiguousarray(records[name]).data) for name in CONTENT_COLUMNS}
    return {
        "image": columns["image"].hex(),
        "columns": _columns_digest(records, _SMALL_CONTENT),
        "provenance": _columns_digest(records, PROVENANCE_COLUMNS),
        "streams": columns,
    }


class TableChecksums:
    """Checksums of one table, fed block by block in stored order."""

    def __init__(self, block_rows: int) -> None:
        self.block_rows = block_rows
        self.blocks: dict[str, list[str]] = {"image": [], "columns": [], "provenance": []}
        self._streams = {name: xxhash.xxh3_128() for name in CONTENT_COLUMNS}

    def add(self, records: np.ndarray | Block) -> None:
        self.add_block(block_checksums(records))

    def add_block(self, block: Mapping) -> None:
        """Add the `block_checksums` of the next block in stored order."""
        for kind, digests in self.blocks.items():
            digests.append(block[kind])
        for name, hasher in self._streams.items():
            hasher.update(block["streams"][name])

    def to_dict(self) -> dict:
        return {
            "block_rows": self.block_rows,
            "blocks": self.blocks,
            "streams": {name: hasher.hexdigest() for name, hasher in self._streams.items()},
        }


def stored_checksums(path: object, metadata: Mapping, table: str) -> dict:
    """The checksums stored for one table of a dataset read as input; DatasetError if there are none."""
    stored = ((metadata.get("checksums") or {}).get("tables") or {}).get(table)
    if not stored or not stored.get("block_rows") or not isinstance(stored.get("blocks"), Mapping):
        raise DatasetError(
            f"{path}: no checksums for table {table} in the metadata, so what is read cannot be checked "
            "(written by an older cutout-etl, or altered)"
        )
    return stored


class BlockChecker:
    """Checks the blocks of a stored table against its stored checksums, as a command reads them.

    Built from `stored_checksums` (small, picklable: a Dask task makes its
    own). `check` takes the records of block `index` (rows
    index * block_rows onwards) and raises ChecksumError naming the block.
    """

    def __init__(self, path: object, table: str, stored: Mapping) -> None:
        self.path, self.table = path, table
        self.block_rows = int(stored["block_rows"])
        self._blocks = stored["blocks"]

    def check(self, index: int, records: np.ndarray | Block) -> dict:
        """Raise ChecksumError unless block `index` matches; return its `block_checksums`."""
        found = block_checksums(records)
        for kind, expected in self._blocks.items():
            if index >= len(expected) or found[kind] != expected[index]:
                first = index * self.block_rows
                raise ChecksumError(
                    f"{self.path}: {self.table} block {index} (rows {first}-{first + len(records) - 1}): "
                    f"{kind} checksum mismatch; the file was changed after it was written"
                )
        return found

    def check_chunk(self, _file: int, first: int, records: np.ndarray) -> None:
        """`check` as a `scan_inputs` chunk hook: chunks of block_rows rows, from row `first`."""
        self.check(first // self.block_rows, records)


def _optional_split_parameters(split: Mapping) -> dict:
    """The split method and the faint-end table's parameters, digested only when they differ from the default.

    Absent means the default (exact counts, no faint table), so datasets written before these options
    keep their digest, and any change of them (adding, removing or editing the keys) changes the digest.
    """
    optional = {}
    if split.get("split_method") not in (None, DEFAULT_SPLIT_METHOD):
        optional["split_method"] = split["split_method"]
    faint = split.get("faint_test")
    if faint:
        optional["faint_test"] = {key: faint.get(key) for key in ("fraction", "band", "aperture_radius_px")}
    return optional


def dataset_digest(metadata: Mapping, checksums: Mapping[str, Mapping]) -> str:
    """SHA-256 of the dataset's content: see the module docstring for what is in it."""
    content = {key: metadata.get(key) for key in DIGESTED_METADATA}
    split = metadata.get("split") or {}
    version_1 = metadata.get("format_version") == 1
    digested = {key: split.get(key) for key in (DIGESTED_SPLIT_V1 if version_1 else DIGESTED_SPLIT)}
    content["split"] = {**digested, **_optional_split_parameters(split)}
    if not version_1:
        # verify checks that no two objects lie within the match radius: setting it to 0 must not switch that off
        positions = (metadata.get("report") or {}).get("duplicate_positions") or {}
        content["match_radius_arcsec"] = positions.get("match_radius_arcsec")
    content["tables"] = {
        name: {
            "rows": metadata["tables_rows"][name]["rows"],
            "class_counts": metadata["tables_rows"][name]["class_counts"],
            "streams": checksums[name]["streams"],
        }
        for name in metadata["tables"]
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
