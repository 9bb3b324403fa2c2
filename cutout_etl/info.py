"""`describe_dataset(path)`: what a built dataset holds, from its stored metadata, as a plain dict (`cutout-etl info`).

Reads the metadata only (no rows, no hashing: `verify` checks the content). The keys are stable: the CLI's
`--json` prints this dict as it is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .dataset import open_dataset

__all__ = ["describe_dataset"]

# Per band, from the stored statistics: (key in the output, where it is in a band's stored summary).
_BAND_FIGURES = {
    "mean": ("mean",),
    "std": ("std",),
    "min": ("min",),
    "max": ("max",),
    "median": ("quantiles", "p50"),
    "mad_sigma": ("mad_sigma",),
    "sky_level": ("sky_median", "p50"),
    "sky_noise": ("sky_sigma", "p50"),
    "nan_pixels": ("nan_pixels",),
    "inf_pixels": ("inf_pixels",),
}


def describe_dataset(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Format, classes, splits with class counts, statistics summary, digest, inputs and creation of a dataset.

    A path that is not a cutout-etl dataset raises the same one-line errors as `open_dataset`.
    """
    with open_dataset(path) as ds:
        metadata, path = ds.metadata, ds.path
        splits = {
            name: {"rows": entry["rows"], "class_counts": entry["class_counts"]}
            for name, entry in metadata["tables_rows"].items()
        }
        return {
            "path": str(path),
            "format": ds.format,
            "format_version": metadata.get("format_version"),
            "kind": metadata.get("kind"),
            "bytes": _size(path),
            "classes": ds.classes,
            "bands": ds.bands,
            "image_shape": list(ds.image_shape),
            "pixel_unit": metadata.get("pixel_unit"),
            "splits": splits,
            "split_method": _split_method(metadata.get("split")),
            "stats": _stats(metadata),
            "digest": metadata.get("digest"),
            "checksum_algorithm": metadata.get("checksums", {}).get("algorithm"),
            "created_by": metadata.get("created_by"),
            "inputs": [_input(entry) for entry in metadata.get("inputs", [])],
            "parent": _input(metadata["parent"]) if "parent" in metadata else None,
            "rows_read": metadata.get("report", {}).get("rows_read"),
            "rows_kept": metadata.get("report", {}).get("rows_kept"),
            "dropped": {k: v for k, v in metadata.get("report", {}).get("dropped", {}).items() if v},
        }


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _split_method(split: dict | None) -> dict | None:
    if split is None:
        return None
    keys = ("fractions", "seed", "group_by", "split_method", "faint_test", "max_fraction_deviation", "within_tolerance")
    return {key: split.get(key) for key in keys}


def _stats(metadata: dict) -> dict[str, dict]:
    """Per split with stored statistics (train first): cutouts counted and the per-band figures."""
    stored = {"train": metadata["stats"]} if metadata.get("stats") else {}
    stored.update(metadata.get("split_stats", {}))
    return {split: _split_stats(entry) for split, entry in stored.items()}


def _split_stats(entry: dict) -> dict:
    bands = {}
    for band, summary in entry.get("bands", {}).items():
        bands[band] = {name: _dig(summary, where) for name, where in _BAND_FIGURES.items()}
    return {"cutouts": entry.get("n_cutouts"), "bands": bands}


def _dig(summary: dict, where: tuple[str, ...]) -> Any:
    value: Any = summary
    for key in where:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _input(entry: dict) -> dict:
    return {key: entry.get(key) for key in ("name", "path", "table_path", "rows", "size", "sha256")}
