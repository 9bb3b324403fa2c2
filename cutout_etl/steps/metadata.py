"""The dataset's metadata: built once per command, completed by the write pass, sealed last.

Every command's metadata goes through here, in one key order (the bytes of
the output depend on it): `describe` (format, classes, bands, tables and
their rows, the run report, the split), then `store_stats`, then
`record_provenance` (the hashed `inputs`, or a split's `parent`), then
`seal` (checksums and the content digest).
"""

from __future__ import annotations

from collections.abc import Sequence

from .. import __version__
from ..inputs.scan import InputFile
from ..schema import FORMAT_NAME, FORMAT_VERSION, PIXEL_UNIT, band_names
from .checksums import ALGORITHM, dataset_digest
from .merge import Plan
from .split import Layout
from .stats import BandStats


def describe(
    kind: str,
    plan: Plan,
    layout: Layout,
    inputs: list[dict],
    report: dict | None = None,
    split: dict | None = None,
) -> dict:
    """What the dataset holds and how it was made; `report` defaults to the plan's own (a split keeps its parent's)."""
    scan = plan.scan
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "created_by": f"cutout-etl {__version__}",
        "classes": scan.classes,
        "bands": band_names(scan.image_shape[-1]),
        "image_shape": list(scan.image_shape),
        "image_layout": "channels last (height, width, bands)",
        "pixel_unit": PIXEL_UNIT,
        "row_dtype": {"id_bytes": scan.id_len, "class_bytes": max(len(c) for c in scan.classes)},
        "tables": layout.tables,
        "tables_rows": layout.tables_rows,
        "inputs": inputs,
        "report": plan.report() if report is None else report,
    }
    if split is not None:
        metadata["split"] = split
    return metadata


def stats_entry(table: str, acc: BandStats, bands: Sequence[str]) -> dict:
    """One table's statistics as stored: the table's name, then its per-band summary."""
    return {"split": table, **acc.summary(bands=bands)}


def store_stats(metadata: dict, computed: dict) -> dict:
    """The training split's statistics go to `stats` (what models use); any other split's to `split_stats[split]`."""
    split = computed["split"]
    if split == "train":
        metadata["stats"] = computed
    else:
        metadata.setdefault("split_stats", {})[split] = computed
    return metadata


def record_provenance(metadata: dict, files: Sequence[InputFile], carry_provenance: bool) -> dict:
    """Where the rows came from: the hashed files are the `inputs`.

    For a split of a merged file (`carry_provenance`) the one hashed file is
    the `parent`, and the `inputs` are the parent's, given to `describe`.
    """
    described = [f.describe() for f in files]
    if carry_provenance:
        metadata["parent"] = described[0]
    else:
        metadata["inputs"] = described
    return metadata


def seal(metadata: dict, checksums: dict[str, dict]) -> dict:
    """Add the checksums and the content digest: the last step before writing metadata."""
    metadata["checksums"] = {"algorithm": ALGORITHM, "tables": checksums}
    metadata["digest"] = dataset_digest(metadata, checksums)
    return metadata
