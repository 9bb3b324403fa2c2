"""--split-method stable (no object moves when rows are added) and --faint-test (the faintest of each class)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cutout_etl import open_dataset, pipeline
from cutout_etl.errors import UsageError
from cutout_etl.inputs.pixel_facts import aperture_flux
from cutout_etl.pipeline import SplitOptions
from cutout_etl.steps.split import keyed_hash
from cutout_etl.steps.split_methods import stable_assignment
from cutout_etl.verify import verify

from .conftest import class_tables, make_table, write_class_files, write_table

FRACTIONS = st.sampled_from([(0.7, 0.15, 0.15), (0.5, 0.5, 0.0), (0.8, 0.0, 0.2), (1.0, 0.0, 0.0)])


def split_of_ids(path) -> dict[bytes, str]:
    with open_dataset(path) as ds:
        return {i: name for name in ds.splits for i in ds[name].read(0, len(ds[name]))["ID"].tolist()}


@given(
    st.lists(st.binary(min_size=1, max_size=12), min_size=1, max_size=200, unique=True),
    st.integers(0, 2**63 - 1),
    FRACTIONS,
    st.data(),
)
def test_stable_split_never_moves_an_object_when_rows_are_added(ids, seed, fractions, data):
    old = np.array(ids, dtype="S12")
    added = data.draw(
        st.lists(st.binary(min_size=1, max_size=12), max_size=100).map(lambda a: np.array(a or [b"x"], "S12"))
    )
    grown = np.unique(np.concatenate([old, added]))
    before = dict(zip(old.tolist(), stable_assignment(keyed_hash(old, seed), fractions).tolist()))
    after = dict(zip(grown.tolist(), stable_assignment(keyed_hash(grown, seed), fractions).tolist()))
    assert all(after[i] == s for i, s in before.items())
    assert all(fractions[s] > 0 for s in after.values())


def test_stable_build_keeps_every_object_in_its_split_as_the_catalogue_grows(tmp_path):
    stable = SplitOptions(method="stable", group_radius=0)
    small = write_class_files(tmp_path / "small", class_tables((40, 40, 40)))
    grown = write_class_files(tmp_path / "grown", class_tables((90, 70, 60)))
    first = pipeline.build(small, tmp_path / "small.h5", split_options=stable)
    pipeline.build(grown, tmp_path / "grown.h5", split_options=stable)
    before, after = split_of_ids(tmp_path / "small.h5"), split_of_ids(tmp_path / "grown.h5")
    assert all(after[i] == s for i, s in before.items())
    assert first["split"]["split_method"] == "stable"
    assert set(first["split"]["expected_binomial_sd"]["GALAXY"]) == {"train", "val", "test"}
    assert first["split"]["max_deviation_in_sd"] >= 0
    assert verify(tmp_path / "small.h5")["ok"]


def test_the_digest_covers_the_split_method(tmp_path):
    files = write_class_files(tmp_path / "in")
    exact = pipeline.build(files, tmp_path / "exact.h5", split_options=SplitOptions(seed=4))
    stable = pipeline.build(files, tmp_path / "stable.h5", split_options=SplitOptions(seed=4, method="stable"))
    assert exact["digest"] != stable["digest"]


def test_faint_test_holds_the_faintest_objects_of_each_class(demo_files, tmp_path):
    out = tmp_path / "faint.h5"
    result = pipeline.build(demo_files, out, split_options=SplitOptions(faint_test=0.2))
    with open_dataset(out) as ds:
        assert ds.splits == ["train", "val", "test", "test_faint"]
        tables = {name: ds[name].read(0, len(ds[name])) for name in ds.splits}
        r_band = ds.bands.index("r")
    flux = {name: aperture_flux(rows["image"], r_band) for name, rows in tables.items()}
    for code, name in enumerate(result["classes"]):
        faint = flux["test_faint"][tables["test_faint"]["label"] == code]
        others = np.concatenate([flux[s][tables[s]["label"] == code] for s in ("train", "val", "test")])
        assert len(faint) == round(0.2 * (len(faint) + len(others)))
        assert faint.max() <= others.min()
    assert (
        result["split"]["faint_test"]["per_class"]["QSO"]["chosen"]
        == result["tables_rows"]["test_faint"]["class_counts"]["QSO"]
    )
    assert verify(out)["ok"]


def test_faint_test_needs_an_r_band(tmp_path):
    tables = {
        label: make_table(10, label.encode(), start=100 * i, shape=(8, 8, 3), seed=i)
        for i, label in enumerate(("GALAXY", "QSO", "STAR"))
    }
    files = [write_table(t, tmp_path / f"{label}.h5") for label, t in tables.items()]
    with pytest.raises(UsageError, match="--faint-test: needs the 'r' band"):
        pipeline.build(files, tmp_path / "out.h5", split_options=SplitOptions(faint_test=0.2))
