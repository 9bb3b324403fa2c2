"""HDF5 tables read through a memory map: the same rows as h5py, and safe when the file changes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from cutout_etl import open_dataset
from cutout_etl.errors import DatasetError


def chunked_copy(source, target) -> None:
    """The same dataset with every table chunked and compressed: what h5py must read, not the mapping."""
    with h5py.File(source) as src, h5py.File(target, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for name, table in src.items():
            dst.create_dataset(name, data=table[()], chunks=True, compression="gzip")
            for key, value in table.attrs.items():
                dst[name].attrs[key] = value


@pytest.fixture(scope="module")
def stored(small_dataset):
    with h5py.File(small_dataset) as f:
        return f["train"][:]


@pytest.fixture(scope="module")
def chunked(small_dataset, tmp_path_factory):
    target = tmp_path_factory.mktemp("chunked") / "dataset.h5"
    chunked_copy(small_dataset, target)
    return target


def test_mapped_and_h5py_reads_give_the_same_rows(small_dataset, chunked, stored):
    rng = np.random.default_rng(0)
    keys = [slice(0, 7), slice(5, len(stored)), rng.permutation(len(stored))[:50], np.array([3, 3, 1, 3, 0]), [-1]]
    keys += [np.arange(4, 30), slice(9, 9), slice(-3, None), np.array([5, 6, 6, 8])]  # runs in order, empty, repeats
    with open_dataset(small_dataset) as mapped, open_dataset(chunked) as plain:
        assert mapped["train"]._table.layout is not None and plain["train"]._table.layout is None
        for key in keys:
            (a, b), (c, d) = mapped["train"][key], plain["train"][key]
            assert a.flags.c_contiguous and a.flags.aligned and a.dtype == np.float32 and b.dtype == np.int64
            assert a.tobytes() == c.tobytes() and np.array_equal(b, d)
            rows = np.arange(len(stored))[key]
            assert a.tobytes() == np.ascontiguousarray(stored["image"][rows]).tobytes()
        batches = list(mapped["train"].batches(30))
        assert np.concatenate([x for x, _ in batches]).tobytes() == np.ascontiguousarray(stored["image"]).tobytes()


def test_a_table_cut_short_after_opening_is_an_error_not_a_crash(small_dataset, tmp_path):
    short = tmp_path / "short.h5"
    shutil.copy(small_dataset, short)
    with open_dataset(short) as ds:
        split = ds["train"]
        end = split._table.hdf5_table.id.get_offset() + 10
        os.truncate(short, end)
        with pytest.raises(DatasetError, match="truncated"):
            split[0:5]


def test_a_file_replaced_by_rename_keeps_serving_the_file_opened(small_dataset, stored, tmp_path):
    target = tmp_path / "dataset.h5"
    shutil.copy(small_dataset, target)
    with open_dataset(target) as ds:
        split = ds["train"]
        split[0:2]  # mapped now
        other = tmp_path / "other.h5"
        with open(other, "wb") as fh:
            fh.write(b"\0" * target.stat().st_size)
        other.replace(target)
        images, labels = split[0 : len(stored)]
    assert images.tobytes() == np.ascontiguousarray(stored["image"]).tobytes()
    assert np.array_equal(labels, stored["label"])


def test_closing_the_dataset_unmaps_the_tables(small_dataset):
    before = sorted(os.listdir("/proc/self/fd"))
    ds = open_dataset(small_dataset)
    for name in ds.splits:
        ds[name][0:3]
    assert str(small_dataset) in Path("/proc/self/maps").read_text()
    ds.close()
    assert str(small_dataset) not in Path("/proc/self/maps").read_text()
    assert sorted(os.listdir("/proc/self/fd")) == before
