"""The output formats: one registry chooses the format of an output and detects that of a dataset."""

from __future__ import annotations

import numpy as np
import pytest

from cutout_etl import formats, open_dataset, pipeline
from cutout_etl.errors import UsageError
from cutout_etl.formats.hdf5 import HDF5Format
from cutout_etl.formats.hf_card import hf_features
from cutout_etl.formats.parquet import arrow_schema
from cutout_etl.schema import OUTPUT_COLUMNS, output_dtype
from cutout_etl.steps.checksums import CONTENT_COLUMNS, PROVENANCE_COLUMNS


def test_an_unknown_format_name_is_a_usage_error_naming_the_known_ones_and_writes_nothing(class_files, tmp_path):
    out = tmp_path / "out.h5"
    with pytest.raises(UsageError, match=r"^--format: 'csv' is not one of 'hdf5', 'parquet'$"):
        pipeline.build(class_files, out, output=pipeline.OutputOptions(format="csv"))
    assert not out.exists()


@pytest.mark.parametrize(
    ("target", "name", "expected"),
    [
        ("out.h5", None, "hdf5"),
        ("out/", None, "parquet"),
        ("out.parquet", None, "parquet"),
        ("out", None, "hdf5"),
        ("out.h5", "parquet", "parquet"),
        ("out/", "hdf5", "hdf5"),
    ],
)
def test_the_format_follows_the_option_else_the_path_as_typed(target, name, expected):
    assert formats.choose(target, name).name == expected


def test_build_and_open_dataset_agree_on_the_format_of_each_output(class_files, tmp_path):
    for target in (tmp_path / "ds.h5", f"{tmp_path / 'ds_pq'}/"):
        pipeline.build(class_files, target)
        with open_dataset(target) as ds:
            assert ds.format == formats.choose(target).name == formats.detect(ds.path).name


def test_every_layout_and_schema_derives_from_the_one_column_table():
    dtype = output_dtype(12, 6, (4, 4, 2))
    assert dtype.names == tuple(c.name for c in OUTPUT_COLUMNS)
    assert dtype["ID"] == np.dtype("S12") and dtype["SPECTYPE"] == np.dtype("S6") and dtype["image"].shape == (4, 4, 2)
    assert set(CONTENT_COLUMNS) | set(PROVENANCE_COLUMNS) == set(dtype.names)
    assert arrow_schema(32, ["A"]).names == [c.arrow_name for c in OUTPUT_COLUMNS]
    assert list(hf_features(32, ["A"])) == [c.arrow_name for c in OUTPUT_COLUMNS]


class _NpzFormat(HDF5Format):
    """A stand-in third format: registered by one line, before the default."""

    name, title = "npz", "NPZ"

    def wants_target(self, target):
        return str(target).endswith(".npz")

    def guess_can_open(self, path):
        return path.suffix == ".npz"


def test_a_registered_format_is_chosen_detected_and_named_by_the_one_registry(monkeypatch, tmp_path):
    monkeypatch.setattr(formats, "FORMATS", {"npz": _NpzFormat(), **formats.FORMATS})
    assert formats.choose("out.npz").name == "npz" and formats.choose("out/").name == "parquet"
    assert formats.detect(tmp_path / "x.npz").name == "npz" and formats.detect(tmp_path).name == "parquet"
    with pytest.raises(UsageError, match=r"is not one of 'hdf5', 'npz', 'parquet'$"):
        formats.choose("out.h5", "csv")


def test_the_cli_format_choices_are_the_registered_formats():
    assert [choice.value for choice in formats.FormatName] == sorted(formats.FORMATS)
