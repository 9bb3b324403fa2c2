"""open_dataset(p)[split] as a map-style dataset: indexing, slices, pickling, PyTorch DataLoader workers."""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cutout_etl import open_dataset, pipeline
from cutout_etl.errors import DatasetError

SHAPE = (36, 36, 4)


@pytest.fixture(scope="module")
def both(demo_files, tmp_path_factory):
    """The demo files as HDF5 and as Parquet (100-row shards: reads cross shard and row-group edges)."""
    root = tmp_path_factory.mktemp("access")
    h5, directory = root / "dataset.h5", root / "dataset_parquet"
    pipeline.build(demo_files, h5)
    pipeline.build(demo_files, str(directory) + "/", output=pipeline.OutputOptions(rows_per_shard=100))
    return h5, directory


@pytest.fixture(scope="module")
def stored(both):
    """The train table as h5py reads it: what every access must give back."""
    with h5py.File(both[0]) as f:
        return f["train"][:]


@pytest.fixture(params=["hdf5", "parquet"])
def path(request, both):
    return both[0] if request.param == "hdf5" else both[1]


def check_fresh(array: np.ndarray) -> None:
    """What torch.from_numpy needs, and no view into a larger buffer."""
    assert array.flags.c_contiguous and array.flags.aligned and array.flags.writeable
    assert array.base is None or array.base.flags.c_contiguous


def test_one_row_is_an_image_and_a_label(path, stored):
    with open_dataset(path) as ds:
        split = ds["train"]
        assert len(split) == len(stored)
        image, label = split[5]
        assert image.shape == SHAPE and image.dtype == np.float32 and np.array_equal(image, stored["image"][5])
        assert isinstance(label, np.int64) and label == stored["label"][5]
        last_image, _ = split[-1]
        assert np.array_equal(last_image, stored["image"][-1])
        check_fresh(image)


SLICES = [slice(0, 7), slice(90, 230), slice(None, None, -1), slice(3, 250, 13), slice(5, 5), slice(None, None, 1)]
SLICES += [slice(-5, None), slice(10, 3), slice(200, 10**9), slice(-(10**9), 4), slice(10**9, None)]  # as numpy slices


@pytest.mark.parametrize("key", SLICES)
def test_slices_give_the_rows_h5py_gives(path, stored, key):
    with open_dataset(path) as ds:
        images, labels = ds["train"][key]
    assert np.array_equal(images, stored["image"][key]) and np.array_equal(labels, stored["label"][key])
    assert images.dtype == np.float32 and labels.dtype == np.int64
    check_fresh(images)
    check_fresh(labels)


def test_index_arrays_keep_the_order_asked(path, stored):
    rows = len(stored)
    index = np.array([7, 3, rows - 1, 3, -2, 99, 100, 101, 0, 199, 200])
    with open_dataset(path) as ds:
        images, labels = ds["train"][index]
        listed_images, _ = ds["train"][index.tolist()]
    assert np.array_equal(images, stored["image"][index]) and np.array_equal(labels, stored["label"][index])
    assert np.array_equal(listed_images, images)
    check_fresh(images)


def test_out_of_range_and_non_integer_indices_raise_index_error(path):
    with open_dataset(path) as ds:
        split = ds["train"]
        for bad in (len(split), -len(split) - 1, [0, len(split)], np.array([0.5]), np.array([True])):
            with pytest.raises(IndexError):
                split[bad]


def test_batches_and_read_are_contiguous_aligned_and_torch_takes_them(path, stored):
    with open_dataset(path) as ds:
        images, labels = next(ds["train"].batches(64))
        rows = ds["train"].read(10, 20)
    assert torch.from_numpy(images).shape == (64, *SHAPE)
    assert torch.equal(torch.from_numpy(labels), torch.from_numpy(stored["label"][:64].copy()))
    assert rows.dtype.isalignedstruct and rows.flags.c_contiguous
    assert torch.equal(torch.from_numpy(rows["label"]), torch.from_numpy(stored["label"][10:20].copy()))
    for name in stored.dtype.names:
        assert np.array_equal(rows[name], stored[name][10:20]), name


def test_a_split_pickles_as_its_path_and_name_and_reads_after(path, stored):
    with open_dataset(path) as ds:
        split = ds["train"]
        split[0]  # files open in this process: none of it may travel
        data = pickle.dumps(split)
    assert len(data) < 500
    copy = pickle.loads(data)
    assert {"path", "name"} <= set(copy.__getstate__())
    images, _ = copy[10:20]
    assert np.array_equal(images, stored["image"][10:20])
    copy.close()


def test_a_split_refuses_a_file_replaced_by_another_dataset(both, demo_files, tmp_path):
    target = tmp_path / "dataset.h5"
    shutil.copy(both[0], target)
    with open_dataset(target) as ds:
        data = pickle.dumps(ds["train"])
    pipeline.build(
        demo_files, tmp_path / "other.h5", split_options=pipeline.SplitOptions(seed=1)
    )  # other rows in train
    (tmp_path / "other.h5").replace(target)
    with pytest.raises(DatasetError, match="changed since"):
        len(pickle.loads(data))


def _child_reads(split, parent_dataset_id, queue) -> None:
    images, labels = split[0:3]
    queue.put((id(split.dataset) != parent_dataset_id, images.sum(dtype=np.float64), labels.tolist()))


def test_after_fork_a_split_opens_its_own_file(both, stored):
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    with open_dataset(both[0]) as ds:
        split = ds["train"]
        split[0]
        child = context.Process(target=_child_reads, args=(split, id(ds), queue))
        child.start()
        own_file, total, labels = queue.get(timeout=60)
        child.join(timeout=60)
    assert child.exitcode == 0 and own_file
    assert total == stored["image"][0:3].sum(dtype=np.float64) and labels == stored["label"][0:3].tolist()


def row_keys(images: np.ndarray, labels: np.ndarray) -> list[tuple[bytes, int]]:
    return sorted(zip((bytes(memoryview(np.ascontiguousarray(i)).cast("B")) for i in images), labels.tolist()))


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_torch_dataloader_with_two_workers_reads_every_row_once(path, stored, start_method):
    """The split goes to DataLoader as it is: no adapter, no collate function."""
    split = open_dataset(path)["train"]
    split[0]  # the parent has the files open and read before the workers start
    loader = DataLoader(
        split,
        batch_size=64,  # several batches per worker from the 252 train rows
        shuffle=True,
        num_workers=2,
        multiprocessing_context=start_method,
        generator=torch.Generator().manual_seed(0),
    )
    images, labels = [], []
    for batch_images, batch_labels in loader:
        assert batch_images.dtype == torch.float32 and batch_labels.dtype == torch.int64
        images.append(batch_images.numpy())
        labels.append(batch_labels.numpy())
    got = row_keys(np.concatenate(images), np.concatenate(labels))
    assert got == row_keys(stored["image"], stored["label"])


def test_closing_the_dataset_closes_every_file_it_opened(path):
    gc.collect()  # files an earlier test left to the garbage collector would close during this one
    before = set(os.listdir("/proc/self/fd"))
    ds = open_dataset(path)
    ds["train"][0:10]
    assert _open_files_under(path)
    ds.close()
    assert set(os.listdir("/proc/self/fd")) <= before
    assert not _open_files_under(path)


def _open_files_under(root: Path) -> list[str]:
    """The files below `root` that this process holds open."""
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:  # closed since the listing (listdir's own descriptor, among others)
            continue
    return [t for t in targets if t.startswith(str(root.resolve()))]
