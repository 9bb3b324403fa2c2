"""build, merge, split and stats through the library: what a user relies on."""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy.table import Table

from cutout_etl import open_dataset, pipeline
from cutout_etl.errors import LabelConflictError, UsageError
from cutout_etl.execution import local as execution
from cutout_etl.schema import (
    COLUMN_DESCRIPTIONS,
    COLUMN_UNITS,
    METADATA_ATTR,
    PIXEL_UNIT,
    column_meta_yaml,
    output_dtype,
)

from .conftest import DEMO_ROWS, make_table, write_table


def key(value) -> bytes:
    """astropy gives bytes columns' elements as str."""
    return value.encode() if isinstance(value, str) else bytes(value)


def input_rows(paths):
    """ID -> (label, image) of every row of the inputs, read with astropy."""
    rows = {}
    for p in paths:
        t = Table.read(p, path="data")
        for i, lab, img in zip(t["ID"], t["SPECTYPE"], np.asarray(t["image"])):
            rows[key(i).strip()] = (key(lab).strip().upper().decode(), img)
    return rows


@pytest.fixture(scope="module")
def built(demo_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "dataset.h5"
    metadata = pipeline.build(demo_files, out)
    return out, metadata


def test_build_splits_are_astropy_tables_with_bit_exact_images(built, demo_files):
    out, _ = built
    source = input_rows(demo_files)
    seen = set()
    for split in ("train", "val", "test"):
        t = Table.read(out, path=split)
        assert t.colnames[:6] == ["ID", "RAJ2000", "DECJ2000", "SPECTYPE", "label", "source_file"]
        assert t["image"].dtype == np.float32 and t["image"].shape[1:] == (36, 36, 4)
        assert str(t["image"].unit) == "mgy"
        for row in t:
            label, image = source[key(row["ID"])]
            assert row["SPECTYPE"] == label
            assert np.array_equal(row["image"].view(np.uint32), image.view(np.uint32))
            seen.add(key(row["ID"]))
    assert seen == set(source)  # every row once: no loss, no overlap


@pytest.mark.parametrize("id_len, class_len, shape", [(29, 6, (36, 36, 4)), (3, 1, (8, 8, 1))])
def test_column_meta_is_what_astropy_writes(id_len, class_len, shape):
    """Units, descriptions and table meta are written without astropy.table: the same lines."""
    from astropy.table import meta

    dtype = output_dtype(id_len, class_len, shape)
    table = Table(np.zeros(0, dtype=dtype))
    for name, unit in COLUMN_UNITS.items():
        table[name].unit = unit
    for name, text in COLUMN_DESCRIPTIONS.items():
        table[name].description = text
    table.meta["split"] = "val"
    expected = [line.encode() for line in meta.get_yaml_from_table(table)]
    assert column_meta_yaml(dtype, {"split": "val"}).tolist() == expected


def test_build_metadata(built, demo_files):
    out, metadata = built
    assert metadata["classes"] == ["GALAXY", "QSO", "STAR"]
    assert metadata["bands"] == ["u", "g", "r", "i"]
    assert metadata["pixel_unit"] == PIXEL_UNIT
    assert metadata["split"]["fractions"] == [0.7, 0.15, 0.15] and metadata["split"]["seed"] == 0
    assert {i["name"] for i in metadata["inputs"]} == {p.name for p in demo_files}
    for entry in metadata["inputs"]:
        data = Path(entry["path"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["size"] == len(data)
    counts = metadata["tables_rows"]
    assert counts["train"]["class_counts"] == {"GALAXY": 84, "QSO": 84, "STAR": 84}
    assert sum(c["rows"] for c in counts.values()) == 3 * DEMO_ROWS
    with h5py.File(out) as f:
        assert json.loads(f.attrs[METADATA_ATTR]) == metadata


def test_open_dataset_interface(built):
    out, metadata = built
    with open_dataset(out) as ds:
        assert ds.classes == ["GALAXY", "QSO", "STAR"]
        assert ds.splits == ["train", "val", "test"]
        assert ds.stats["split"] == "train" and ds.stats["n_cutouts"] == len(ds["train"])
        assert len(ds["train"]) + len(ds["val"]) + len(ds["test"]) == 3 * DEMO_ROWS
        batches = list(ds["val"].batches(16))
        images = np.concatenate([b[0] for b in batches])
        labels = np.concatenate([b[1] for b in batches])
        assert images.shape == (len(ds["val"]), 36, 36, 4) and images.dtype == np.float32
        assert labels.dtype == np.int64
        assert np.array_equal(
            np.bincount(labels, minlength=3), [metadata["tables_rows"]["val"]["class_counts"][c] for c in ds.classes]
        )


def test_merge_then_split_equals_build(built, demo_files, tmp_path):
    out, _ = built
    merged = tmp_path / "merged.h5"
    pipeline.merge(demo_files, merged)
    two_step = tmp_path / "two_step.h5"
    pipeline.split(merged, two_step)
    for split in ("train", "val", "test"):
        a, b = Table.read(out, path=split), Table.read(two_step, path=split)
        assert np.array_equal(a.as_array(), b.as_array())  # provenance included
    assert open_dataset(two_step).metadata["parent"]["name"] == "merged.h5"


def test_build_does_not_depend_on_file_or_row_order(demo_files, tmp_path):
    shuffled = []
    rng = np.random.default_rng(3)
    for p in demo_files:
        t = Table.read(p, path="data")
        shuffled.append(write_table(t[rng.permutation(len(t))], tmp_path / f"shuffled_{p.name}"))
    a = tmp_path / "a.h5"
    b = tmp_path / "b.h5"
    pipeline.build(demo_files, a)
    pipeline.build(list(reversed(shuffled)), b)
    for split in ("train", "val", "test"):
        ta, tb = Table.read(a, path=split), Table.read(b, path=split)
        for col in ("ID", "RAJ2000", "DECJ2000", "SPECTYPE", "label", "image"):
            assert np.array_equal(np.asarray(ta[col]), np.asarray(tb[col])), col
    sa, sb = open_dataset(a).stats, open_dataset(b).stats
    assert sa == sb


def test_every_stored_sha256_is_a_real_one(built):
    """The run report names each input without a SHA-256 of its own: it is written before hashing ends."""
    with h5py.File(built[0]) as f:
        text = f.attrs[METADATA_ATTR]
    hashes = re.findall(r'"sha256": "([^"]*)"', text)
    assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes)


def test_the_same_inputs_give_the_same_bytes(demo_files, tmp_path):
    """No creation or modification times in the file: a rebuild can be compared byte for byte."""
    first, second = tmp_path / "a" / "dataset.h5", tmp_path / "b" / "dataset.h5"
    for target in (first, second):
        target.parent.mkdir()
        pipeline.build(demo_files, target)
        time.sleep(1.1)  # HDF5 stamps times in whole seconds: the second build must fall in another one
    assert first.read_bytes() == second.read_bytes()


def test_nan_images_dropped_or_kept_and_counted(tmp_path):
    t = make_table(20, b"STAR")
    t["image"][3] = np.nan  # no finite pixel: dropped
    t["image"][5][0, 0, 0] = np.inf  # partly non-finite: kept
    t["image"][6][:, :, 1] = np.nan  # one band empty: kept
    files = [
        write_table(t, tmp_path / "stars.h5"),
        write_table(make_table(20, b"GALAXY", 100), tmp_path / "gal.h5"),
        write_table(make_table(20, b"QSO", 200), tmp_path / "qso.h5"),
    ]
    metadata = pipeline.build(files, tmp_path / "out.h5")
    report = metadata["report"]
    assert report["dropped"]["no_finite_pixel"] == 1
    assert report["rows_partly_nonfinite"] == 2
    assert report["rows_kept"] == 59
    ids = np.concatenate([Table.read(tmp_path / "out.h5", path=s)["ID"] for s in ("train", "val", "test")])
    assert b"OBJ J00000003" not in ids and b"OBJ J00000005" in ids


def test_duplicate_ids_same_label_kept_once(class_files, tmp_path):
    dup = make_table(3, b"GALAXY", 0, seed=9)  # IDs 0..2 also in galaxies.hdf5
    files = [*class_files, write_table(dup, tmp_path / "more_galaxies.h5")]
    metadata = pipeline.build(files, tmp_path / "out.h5")
    assert metadata["report"]["dropped"]["duplicate_id"] == 3
    assert metadata["report"]["duplicate_ids"]["same_label_groups"] == 3
    assert metadata["report"]["rows_kept"] == 75


def test_conflicting_ids_error_or_dropped(class_files, tmp_path):
    clash = make_table(2, b"STAR", 0, seed=9)  # IDs 0,1 are GALAXY in galaxies.hdf5
    files = [*class_files, write_table(clash, tmp_path / "clash.h5")]
    with pytest.raises(LabelConflictError, match=r"^2 IDs carry conflicting labels: 'OBJ J00000000' \(") as caught:
        pipeline.build(files, tmp_path / "out.h5")
    assert "GALAXY in galaxies.hdf5 row 1" in str(caught.value) and "STAR in clash.h5 row 1" in str(caught.value)
    assert not (tmp_path / "out.h5").exists()
    metadata = pipeline.build(files, tmp_path / "out.h5", merge_options=pipeline.MergeOptions(on_conflict="drop"))
    assert metadata["report"]["dropped"]["conflicting_labels"] == 4
    assert metadata["report"]["rows_kept"] == 73


def test_unknown_labels_dropped_on_request(class_files, tmp_path):
    odd = make_table(4, b"  qso  ", 5000)
    odd["SPECTYPE"][0] = b"BLAZAR"
    files = [*class_files, write_table(odd, tmp_path / "odd.h5")]
    metadata = pipeline.build(files, tmp_path / "out.h5", merge_options=pipeline.MergeOptions(drop_unknown=True))
    assert metadata["report"]["dropped"]["unknown_label"] == 1
    assert metadata["tables_rows"]["train"]["class_counts"]["QSO"] > 0


def test_classes_option_sets_code_order(class_files, tmp_path):
    metadata = pipeline.build(
        class_files, tmp_path / "out.h5", merge_options=pipeline.MergeOptions(classes=["STAR", "QSO", "GALAXY"])
    )
    assert metadata["classes"] == ["STAR", "QSO", "GALAXY"]
    t = Table.read(tmp_path / "out.h5", path="train")
    assert set(t["label"][t["SPECTYPE"] == "STAR"]) == {0}


def test_float64_images_cast_to_float32_and_reported(tmp_path):
    files = [
        write_table(make_table(20, b"GALAXY", 0, dtype="f8"), tmp_path / "g.h5"),
        write_table(make_table(20, b"QSO", 100), tmp_path / "q.h5"),
        write_table(make_table(20, b"STAR", 200), tmp_path / "s.h5"),
    ]
    metadata = pipeline.build(files, tmp_path / "out.h5")
    assert metadata["report"]["rows_cast_to_float32"] == 20
    assert Table.read(tmp_path / "out.h5", path="train")["image"].dtype == np.float32


def test_stats_command_recomputes_on_requested_split(built, tmp_path):
    out, metadata = built
    copy = tmp_path / "copy.h5"
    copy.write_bytes(out.read_bytes())
    updated = pipeline.stats(copy, "val")
    assert updated["stats"] == metadata["stats"]  # the training statistics stay
    assert updated["split_stats"]["val"]["split"] == "val"
    with open_dataset(copy) as ds:
        assert ds.metadata["split_stats"]["val"]["n_cutouts"] == metadata["tables_rows"]["val"]["rows"]


def test_stats_are_those_of_the_train_split(built):
    out, metadata = built
    train = np.asarray(Table.read(out, path="train")["image"], dtype=np.float64)
    for b, band in enumerate(metadata["bands"]):
        s = metadata["stats"]["bands"][band]
        assert s["mean"] == pytest.approx(np.nanmean(train[..., b]), rel=1e-9)
        assert s["std"] == pytest.approx(np.nanstd(train[..., b]), rel=1e-9)
        assert s["finite_pixels"] == np.isfinite(train[..., b]).sum()


def test_chunked_compressed_big_endian_input_goes_through_hdf5(tmp_path, class_files):
    """Not every file is astropy's contiguous layout: rows then come through h5py, bit-exact."""
    t = Table.read(class_files[0], path="data")
    records = np.asarray(t.as_array())
    odd = records.astype(records.dtype.newbyteorder(">"))
    path = tmp_path / "chunked.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=odd, chunks=(7,), compression="gzip")
    metadata = pipeline.build([path, *class_files[1:]], tmp_path / "out.h5")
    assert metadata["report"]["rows_kept"] == 75
    got = {}
    with open_dataset(tmp_path / "out.h5") as ds:
        for split in ds.splits:
            rows = ds[split].read()
            got.update(zip(rows["ID"].tolist(), rows["image"]))
    for row in records:
        assert np.array_equal(got[bytes(row["ID"])].view(np.uint32), row["image"].view(np.uint32))


def test_which_copy_of_a_repeated_id_is_kept_does_not_depend_on_row_order(tmp_path, class_files):
    """Copies of one ID with different pixels: the kept one follows from content, not position."""
    t = Table.read(class_files[0], path="data")
    copies = t[:5].copy()
    copies["image"] = copies["image"] * 2  # same IDs and positions, other pixels
    doubled = __import__("astropy.table", fromlist=["vstack"]).vstack([t, copies])
    forward = write_table(doubled, tmp_path / "forward.h5")
    backward = write_table(doubled[::-1], tmp_path / "backward.h5")
    a = pipeline.build([forward, *class_files[1:]], tmp_path / "a.h5")
    b = pipeline.build([backward, *class_files[1:]], tmp_path / "b.h5")
    assert a["report"]["dropped"]["duplicate_id"] == 5
    assert a["digest"] == b["digest"]


@pytest.mark.parametrize("order", ["image first", "image between", "big-endian image"])
def test_images_bit_exact_whatever_the_input_row_layout(tmp_path, order):
    """Rows are read straight into the output blocks around the image wherever it sits in the row."""
    paths = []
    for i, (label, start) in enumerate([(b"GALAXY", 0), (b"QSO", 1000), (b"STAR", 2000)]):
        table = make_table(30, label, start, seed=i)
        table["MAG_R"] = np.arange(30, dtype="f8")  # a column after the image
        if order == "image first":
            table = table[["image", "ID", "RAJ2000", "DECJ2000", "SPECTYPE", "MAG_R"]]
        elif order == "big-endian image":
            table["image"] = table["image"].astype(">f4")
        paths.append(write_table(table, tmp_path / f"class{i}.hdf5"))
    source = input_rows(paths)
    pipeline.build(paths, tmp_path / "out.h5")
    with open_dataset(tmp_path / "out.h5") as ds:
        for split in ds.splits:
            rows = ds[split].read()
            for row in rows:
                label, image = source[bytes(row["ID"])]
                assert np.array_equal(row["image"].view(np.uint32), image.astype("<f4").view(np.uint32))
                assert row["SPECTYPE"].decode() == label
            assert np.all(rows["RAJ2000"] == 120 + (np.char.rpartition(rows["ID"], b"J")[:, 2].astype(int)) * 0.01)


@pytest.mark.parametrize("rows", [[70, 15, 15], [1, 0, 1000], [512, 513, 1]])
def test_write_pass_visits_every_block_once_each_table_in_order(rows):
    blocks = execution.interleaved_blocks(rows, 16)
    for table, n in enumerate(rows):
        assert [first for t, first in blocks if t == table] == list(range(0, n, 16))
    assert len(blocks) == sum(len(range(0, n, 16)) for n in rows)


def test_choices_accept_their_enum_members_and_plain_strings_alike(class_files, tmp_path):
    by_member = pipeline.build(
        class_files,
        tmp_path / "member.h5",
        merge_options=pipeline.MergeOptions(on_conflict=pipeline.OnConflict.DROP),
        split_options=pipeline.SplitOptions(group_by=pipeline.GroupBy.SKY),
    )
    by_string = pipeline.build(
        class_files,
        tmp_path / "string.h5",
        merge_options=pipeline.MergeOptions(on_conflict="drop"),
        split_options=pipeline.SplitOptions(group_by="sky"),
    )
    assert by_member["digest"] == by_string["digest"]
    with h5py.File(tmp_path / "member.h5") as f:
        stored = json.loads(f.attrs[METADATA_ATTR])
    assert stored["split"]["group_by"] == "sky"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"merge_options": pipeline.MergeOptions(on_conflict="keep")}, "--on-conflict: 'keep' is not error or drop"),
        ({"split_options": pipeline.SplitOptions(group_by="cell")}, "--group-by: 'cell' is not none or sky"),
    ],
)
def test_an_unknown_choice_is_a_usage_error_before_any_work(class_files, tmp_path, options, message):
    with pytest.raises(UsageError, match=f"^{re.escape(message)}$"):
        pipeline.build(class_files, tmp_path / "out.h5", **options)
    assert list(tmp_path.glob("out*")) == [] and list(tmp_path.glob(".out*")) == []
