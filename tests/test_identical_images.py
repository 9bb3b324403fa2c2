"""Identical images under different IDs: found in the scan pass, reported by inspect, kept once by build,
never in two splits (verify)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from cutout_etl import open_dataset, pipeline
from cutout_etl.errors import LabelConflictError
from cutout_etl.inspection import inspect_files
from cutout_etl.pipeline import MergeOptions
from cutout_etl.verify import verify

from .conftest import class_tables, write_class_files

EXTRA = {"GALAXY": "galaxies_more.hdf5"}


def files_with_copies(tmp_path, shuffle: int | None = None):
    """Class files where 3 galaxy images reappear in another file under new IDs and 1 inside the same file."""
    tables = class_tables((30, 20, 25))
    galaxies = tables["GALAXY"]
    galaxies["image"][7] = galaxies["image"][1]  # within one file, IDs J00000001 and J00000007
    more = class_tables((10,), starts=(5000,), seeds=(9,))["GALAXY"]
    more["image"][:3] = galaxies["image"][10:13]  # across files: J00005000-2 copy J00000010-12
    if shuffle is not None:
        order = np.random.default_rng(shuffle).permutation(len(galaxies))
        galaxies = galaxies[order]
    paths = write_class_files(tmp_path, {**tables, "GALAXY": galaxies})
    return paths + write_class_files(tmp_path, {"GALAXY": more}, names=EXTRA)


def ids_of(path) -> set[bytes]:
    with open_dataset(path) as ds:
        return {i for name in ds.splits for i in ds[name].read(0, len(ds[name]))["ID"].tolist()}


def test_build_keeps_the_smallest_id_of_identical_images_in_any_order(tmp_path):
    paths = files_with_copies(tmp_path / "a")
    result = pipeline.build(paths, tmp_path / "a.h5")
    assert result["report"]["dropped"]["duplicate_image"] == 4
    assert result["report"]["duplicate_images"]["same_label_groups"] == 4
    kept = ids_of(tmp_path / "a.h5")
    assert b"OBJ J00000001" in kept and b"OBJ J00000007" not in kept
    assert {b"OBJ J00000010", b"OBJ J00000011", b"OBJ J00000012"} <= kept
    assert not {b"OBJ J00005000", b"OBJ J00005001", b"OBJ J00005002"} & kept
    shuffled = files_with_copies(tmp_path / "b", shuffle=3)
    again = pipeline.build(list(reversed(shuffled)), tmp_path / "b.h5")
    assert again["digest"] == result["digest"]
    assert verify(tmp_path / "a.h5")["ok"]


def test_keep_duplicate_images_keeps_every_copy_in_one_split(tmp_path):
    paths = files_with_copies(tmp_path)
    options = MergeOptions(keep_duplicate_images=True)
    result = pipeline.build(paths, tmp_path / "kept.h5", merge_options=options)
    assert result["report"]["dropped"]["duplicate_image"] == 0
    assert result["report"]["duplicate_images"]["kept"] is True
    assert result["split"]["rows_sharing_an_image"] == 8
    assert {b"OBJ J00000007", b"OBJ J00005000"} <= ids_of(tmp_path / "kept.h5")
    assert verify(tmp_path / "kept.h5")["ok"]


def test_one_image_under_two_labels_is_refused_or_dropped(tmp_path):
    tables = class_tables((30, 20, 25))
    tables["QSO"]["image"][4] = tables["GALAXY"]["image"][2]
    paths = write_class_files(tmp_path, tables)
    with pytest.raises(LabelConflictError, match="images identical to another under a different ID"):
        pipeline.build(paths, tmp_path / "refused.h5")
    result = pipeline.build(paths, tmp_path / "dropped.h5", merge_options=MergeOptions(on_conflict="drop"))
    assert result["report"]["dropped"]["conflicting_image"] == 2


def test_inspect_reports_identical_images_within_and_across_files(tmp_path):
    report = inspect_files(files_with_copies(tmp_path))
    found = report["build"]["duplicate_images"]
    assert found["groups_same_label"] == 4 and found["groups_across_files"] == 3
    assert found["rows_dropped_by_build"] == 4
    per_file = {f["name"]: f["identical_images"] for f in report["files"]}
    assert per_file["galaxies.hdf5"] == {"groups": 1, "rows_in_groups": 2}
    assert any("identical images under different IDs" in p["message"] for p in report["problems"])
    assert report["ok"]  # build handles them: a warning


def test_verify_fails_on_one_image_in_two_splits(tmp_path):
    out = tmp_path / "ds.h5"
    pipeline.build(write_class_files(tmp_path / "in"), out)
    with h5py.File(out, "r+") as f:
        test = f["test"][0]
        train = f["train"][0]
        train["image"] = test["image"]
        f["train"][0] = train
    failures = verify(out)["failures"]
    assert any("1 images appear in more than one split (train/test 1)" in f for f in failures)
