"""What Hugging Face `datasets` reads of a Parquet dataset: the features (in every shard's footer) and the card."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from ..schema import DATA_DIR, FILE_SPLIT, OUTPUT_COLUMNS, SIDECAR, OutputColumn


def hf_features(image_size: int, classes: Sequence[str]) -> dict:
    """Hugging Face `datasets` features, as `Features.to_dict()` writes them."""

    def value(dtype: str) -> dict:
        return {"dtype": dtype, "_type": "Value"}

    def feature(column: OutputColumn) -> dict:
        if column.hf == "ClassLabel":
            return {"names": list(classes), "_type": "ClassLabel"}
        if column.hf == "Sequence":
            return {"feature": value(column.arrow), "length": image_size, "_type": "Sequence"}
        return value(column.arrow)

    return {c.arrow_name: feature(c) for c in OUTPUT_COLUMNS}


class _ClassName(str):
    """A class name in the card's YAML: double-quoted, as JSON would write it."""


class _CardDumper(yaml.SafeDumper):
    pass


def _represent_class_name(dumper: yaml.SafeDumper, text: _ClassName) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style='"')


_CardDumper.add_representer(_ClassName, _represent_class_name)


def _card_feature(column: OutputColumn, classes: Sequence[str], image_size: int) -> dict:
    if column.hf == "ClassLabel":
        names = {str(i): _ClassName(c) for i, c in enumerate(classes)}
        return {"name": column.arrow_name, "dtype": {"class_label": {"names": names}}}
    if column.hf == "Sequence":
        return {"name": column.arrow_name, "sequence": column.arrow, "length": image_size}
    return {"name": column.arrow_name, "dtype": column.arrow}


def card_front_matter(metadata: Mapping, splits: Sequence[str]) -> str:
    """The card's YAML front matter: the data files of each split, and the features."""
    image_size = math.prod(metadata["image_shape"])
    files = [{"split": FILE_SPLIT[s], "path": f"{DATA_DIR}/{FILE_SPLIT[s]}-*"} for s in splits]
    front = {
        "configs": [{"config_name": "default", "data_files": files}],
        "dataset_info": {"features": [_card_feature(c, metadata["classes"], image_size) for c in OUTPUT_COLUMNS]},
    }
    return yaml.dump(front, Dumper=_CardDumper, sort_keys=False, default_flow_style=False, width=math.inf)


def dataset_card(metadata: Mapping, shards: Mapping[str, list[Path]]) -> str:
    """A Hugging Face dataset card: YAML front matter with splits and features, then prose."""
    classes = metadata["classes"]
    h, w, b = metadata["image_shape"]
    counts = "\n".join(
        f"| {FILE_SPLIT[s]} | {metadata['tables_rows'][s]['rows']} | "
        + " | ".join(str(metadata["tables_rows"][s]["class_counts"].get(c, 0)) for c in classes)
        + " |"
        for s in shards
    )
    return f"""---
{card_front_matter(metadata, list(shards))}---

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
