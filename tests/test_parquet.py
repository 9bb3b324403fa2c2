"""Parquet output: the same dataset as HDF5, read as it is by the ML ecosystem."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before datasets is imported: never touch the network
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cutout_etl import open_dataset, pipeline
from cutout_etl.cli import app
from cutout_etl.schema import SIDECAR
from cutout_etl.verify import verify

SHAPE = (36, 36, 4)


@pytest.fixture(scope="module")
def both(demo_files, tmp_path_factory):
    root = tmp_path_factory.mktemp("parquet")
    h5, directory = root / "dataset.h5", root / "dataset_parquet"
    pipeline.build(demo_files, h5)
    pipeline.build(demo_files, str(directory) + "/", output=pipeline.OutputOptions(rows_per_shard=100))
    return h5, directory


def all_rows(path, split):
    with open_dataset(path) as ds:
        return ds[split].read()


def test_parquet_and_hdf5_hold_the_same_rows_bit_for_bit(both):
    h5, directory = both
    with open_dataset(h5) as a, open_dataset(directory) as b:
        assert (a.format, b.format) == ("hdf5", "parquet")
        assert a.classes == b.classes and a.splits == b.splits and a.stats == b.stats
        assert a.metadata["digest"] == b.metadata["digest"]
        for split in a.splits:
            assert len(a[split]) == len(b[split])
            ra, rb = a[split].read(), b[split].read()
            assert ra.tobytes() == rb.tobytes()
            images_a = np.concatenate([i for i, _ in a[split].batches(50)])
            images_b = np.concatenate([i for i, _ in b[split].batches(50)])
            assert images_b.shape == (len(b[split]), *SHAPE)
            assert np.array_equal(images_a.view(np.uint32), images_b.view(np.uint32))


def test_layout_shards_and_metadata_in_every_shard(both):
    _, directory = both
    names = sorted(p.name for p in (directory / "data").iterdir())
    assert names[:2] == ["test-00000-of-00001.parquet", "train-00000-of-00003.parquet"]
    assert "validation-00000-of-00001.parquet" in names
    sidecar = (directory / SIDECAR).read_text()
    for shard in (directory / "data").iterdir():
        meta = pq.ParquetFile(shard).metadata.metadata
        assert meta[b"cutout_etl"].decode() and b"huggingface" in meta
        assert pq.ParquetFile(shard).schema_arrow.field("image").type == pa.list_(pa.float32(), 5184)
    import json

    assert json.loads(pq.ParquetFile(directory / "data" / names[0]).metadata.metadata[b"cutout_etl"]) == json.loads(
        sidecar
    )
    card = (directory / "README.md").read_text()
    assert card.startswith("---\nconfigs:") and "path: data/validation-*" in card and "'1': \"QSO\"" in card


def test_verify_on_parquet_names_a_changed_block(both, tmp_path):
    _, directory = both
    assert verify(directory)["ok"]
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(directory, copy)
    shard = copy / "data" / "train-00001-of-00003.parquet"
    table = pq.read_table(shard)
    flat = table.column("image").combine_chunks().flatten().to_numpy().copy()
    flat[5] = np.nextafter(flat[5], np.float32(1))
    image = pa.FixedSizeListArray.from_arrays(pa.array(flat), 5184)
    table = table.set_column(table.schema.get_field_index("image"), "image", image)
    pq.write_table(table, shard)  # train rows 100-199: inside the first 512-row checksum block
    report = verify(copy)
    assert not report["ok"]
    assert "train block 0 (rows 0-511): image checksum mismatch" in report["failures"]


def test_convert_round_trip_is_bit_exact(both, tmp_path):
    h5, _ = both
    runner = CliRunner()
    assert runner.invoke(app, ["convert", str(h5), str(tmp_path / "pq") + "/", "--quiet"]).exit_code == 0
    result = runner.invoke(app, ["convert", str(tmp_path / "pq"), str(tmp_path / "back.h5"), "--quiet"])
    assert result.exit_code == 0, result.stderr
    import h5py

    with h5py.File(h5) as a, h5py.File(tmp_path / "back.h5") as b:
        for split in ("train", "val", "test"):
            assert a[split][()].tobytes() == b[split][()].tobytes()
    assert open_dataset(tmp_path / "back.h5").metadata["digest"] == open_dataset(h5).metadata["digest"]


def test_cli_format_option_and_overwrite(demo_files, tmp_path):
    runner = CliRunner()
    target = tmp_path / "out"
    result = runner.invoke(app, ["build", *map(str, demo_files), "-o", str(target), "--format", "parquet", "--quiet"])
    assert result.exit_code == 0, result.stderr
    assert (target / SIDECAR).is_file()
    again = runner.invoke(
        app,
        [
            "build",
            *map(str, demo_files),
            "-o",
            str(target),
            "--format",
            "parquet",
            "--quiet",
            "--seed",
            "3",
            "--overwrite",
        ],
    )
    assert again.exit_code == 0 and open_dataset(target).metadata["split"]["seed"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the old directory is gone, no temporaries
    refused = runner.invoke(app, ["build", *map(str, demo_files), "-o", str(target), "--format", "hdf5", "--overwrite"])
    assert refused.exit_code == 2 and "is a directory; this output format writes a file" in refused.stderr


def images_from_flat(flat: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(flat, dtype=np.float32).reshape(-1, *SHAPE)


def expected_train(both):
    h5, _ = both
    rows = all_rows(h5, "train")
    return rows["ID"].astype(str), rows["image"]


def test_pandas_reads_images_bit_exact(both):
    import pandas as pd

    ids, images = expected_train(both)
    frame = pd.read_parquet(both[1] / "data", filters=None).query("id in @ids")
    frame = frame.set_index("id").loc[ids]
    got = images_from_flat(np.stack(frame["image"].to_numpy()))
    assert np.array_equal(got.view(np.uint32), images.view(np.uint32))


def test_polars_reads_images_bit_exact(both):
    import polars as pl

    ids, images = expected_train(both)
    frame = pl.read_parquet(str(both[1] / "data" / "train-*.parquet"))
    assert frame["id"].to_list() == list(ids)
    got = images_from_flat(frame["image"].to_numpy())
    assert np.array_equal(got.view(np.uint32), images.view(np.uint32))


def test_duckdb_reads_images_bit_exact(both):
    import duckdb

    ids, images = expected_train(both)
    table = duckdb.sql(
        f"select id, image from read_parquet('{both[1]}/data/train-*.parquet') order by filename, file_row_number"
    ).arrow()
    if hasattr(table, "read_all"):
        table = table.read_all()
    assert table.column("id").to_pylist() == list(ids)
    got = images_from_flat(table.column("image").combine_chunks().flatten().to_numpy())
    assert np.array_equal(got.view(np.uint32), images.view(np.uint32))


def test_pyarrow_dataset_reads_images_bit_exact(both):
    import pyarrow.dataset as pads

    ids, images = expected_train(both)
    table = pads.dataset(both[1] / "data").to_table(filter=pads.field("id").isin(list(ids)))
    order = {i: n for n, i in enumerate(table.column("id").to_pylist())}
    flat = table.column("image").combine_chunks().flatten().to_numpy()
    got = images_from_flat(flat)[[order[i] for i in ids]]
    assert np.array_equal(got.view(np.uint32), images.view(np.uint32))


def test_hugging_face_datasets_finds_splits_and_class_names(both, tmp_path):
    datasets = pytest.importorskip("datasets")
    _, directory = both
    loaded = datasets.load_dataset(str(directory), cache_dir=str(tmp_path / "cache"))
    assert set(loaded) == {"train", "validation", "test"}
    assert loaded["train"].features["label"].names == ["GALAXY", "QSO", "STAR"]
    with open_dataset(directory) as ds:
        assert loaded["validation"].num_rows == len(ds["val"])
        first = ds["train"].read(0, 1)
    image = np.asarray(loaded["train"][0]["image"], dtype=np.float32).reshape(SHAPE)
    assert np.array_equal(image.view(np.uint32), first["image"][0].view(np.uint32))
    plain = datasets.load_dataset("parquet", data_dir=str(directory / "data"), cache_dir=str(tmp_path / "cache2"))
    assert plain["test"].features["label"].names == ["GALAXY", "QSO", "STAR"]


def test_stats_on_parquet_says_how(both):
    result = CliRunner().invoke(app, ["stats", str(both[1])])
    assert result.exit_code == 2
    assert "a Parquet dataset's statistics are written by build into every shard" in result.stderr


def test_ids_that_are_not_utf8_give_one_line_for_parquet(tmp_path):
    from .conftest import make_table, write_table

    odd = make_table(5, b"GALAXY", 0)
    odd["ID"][0] = b"\xe9obj"
    files = [
        write_table(odd, tmp_path / "g.h5"),
        write_table(make_table(5, b"QSO", 100), tmp_path / "q.h5"),
        write_table(make_table(5, b"STAR", 200), tmp_path / "s.h5"),
    ]
    result = CliRunner().invoke(app, ["build", *map(str, files), "-o", str(tmp_path / "out") + "/", "--quiet"])
    assert result.exit_code == 1  # bad data, named by file and row
    assert (
        result.stderr
        == f"error: {files[0]}: row 0: ID b'\\xe9obj' is not UTF-8 text, which Parquet's string columns need; write HDF5 instead\n"
    )
    assert not (tmp_path / "out").exists()
