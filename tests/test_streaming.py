"""`StreamingBatches`: block shuffle, sharding, exact augmentations, and the torch `IterableDataset` wrapper."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from cutout_etl import open_dataset
from cutout_etl.errors import CutoutEtlError
from cutout_etl.pipeline import convert
from cutout_etl.streaming import StreamingBatches, augment_exact, block_order


@pytest.fixture(scope="module")
def stored(small_dataset):
    with open_dataset(small_dataset) as ds:
        rows = ds["train"].read()
    return np.ascontiguousarray(rows["image"]), rows["label"].astype(np.int64)


def _epoch(batches: StreamingBatches, epoch: int) -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    got = list(batches.iter_epoch(epoch))
    return [batches.rows_of(i, epoch) for i in range(len(got))], got


def test_epoch_is_every_row_once_in_contiguous_blocks(small_dataset, stored):
    images, labels = stored
    batches = StreamingBatches(small_dataset, "train", batch_size=40, seed=3)
    assert batches.shuffle and len(batches) == -(-len(labels) // 40)
    rows, got = _epoch(batches, 0)
    for which, (x, y) in zip(rows, got):
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.flags.c_contiguous and x.flags.aligned and y.flags.c_contiguous and y.flags.aligned
        np.testing.assert_array_equal(x, images[which])
        np.testing.assert_array_equal(y, labels[which])
        assert np.all(np.diff(which) % len(labels) == 1)  # one block, modulo the wrap-around
    np.testing.assert_array_equal(np.sort(np.concatenate(rows)), np.arange(len(labels)))


def test_order_is_seeded_per_epoch_and_iteration_advances_it(small_dataset):
    def firsts(seed: int, epoch: int) -> list[int]:
        batches = StreamingBatches(small_dataset, "train", batch_size=16, seed=seed)
        return [int(batches.rows_of(i, epoch)[0]) for i in range(len(batches))]

    assert firsts(1, 0) == firsts(1, 0)
    assert firsts(1, 0) != firsts(1, 1) != firsts(2, 1)
    batches = StreamingBatches(small_dataset, "train", batch_size=16, seed=1)
    first = [y for _, y in batches]
    second = [y for _, y in batches]
    assert batches.epoch == 2
    assert [y.tolist() for y in first] == [y.tolist() for _, y in batches.iter_epoch(0)]
    assert [y.tolist() for y in second] == [y.tolist() for _, y in batches.iter_epoch(1)]
    val = StreamingBatches(small_dataset, "val", batch_size=16)
    assert not val.shuffle
    np.testing.assert_array_equal(np.concatenate([val.rows_of(i) for i in range(len(val))]), np.arange(val.rows))


def test_same_batches_as_the_keras_loader(small_dataset):
    pytest.importorskip("keras")
    from cutout_etl.ml.keras_support import CutoutPyDataset

    keras_loader = CutoutPyDataset(small_dataset, "train", batch_size=24, seed=5)
    keras_loader.set_epoch(2)
    batches = StreamingBatches(small_dataset, "train", batch_size=24, seed=5)
    for i, (x, y) in enumerate(batches.iter_epoch(2)):
        np.testing.assert_array_equal(keras_loader.rows_of(i), batches.rows_of(i, 2))
        np.testing.assert_array_equal(keras_loader[i][0], x)


@pytest.mark.parametrize("remainder", ["drop", "repeat"])
def test_ranks_get_equal_batches_of_disjoint_rows(small_dataset, stored, remainder):
    n = len(stored[1])
    blocks = -(-n // 16)
    world = 3 if blocks % 3 else 4
    assert blocks % world, "the split must leave a remainder for this test to mean anything"
    ranks = [
        StreamingBatches(small_dataset, batch_size=16, seed=2, rank=r, world_size=world, remainder=remainder)
        for r in range(world)
    ]
    assert len({len(b) for b in ranks}) == 1
    for epoch in (0, 1):
        rows = [np.concatenate([b.rows_of(i, epoch) for i in range(len(b))]) for b in ranks]
        assert all(len(list(b.iter_epoch(epoch))) == len(b) for b in ranks)
        every = np.concatenate(rows)
        if remainder == "drop":
            assert len(np.unique(every)) == len(every)  # disjoint
            assert len(ranks[0]) == blocks // world
        else:
            np.testing.assert_array_equal(np.unique(every), np.arange(n))  # nothing dropped
            assert len(ranks[0]) == -(-blocks // world)
    dropped = set(range(n)) - set(np.concatenate([b.rows_of(i, 0) for b in ranks for i in range(len(b))]).tolist())
    if remainder == "drop":  # the epoch order's last blocks % world blocks
        _, order = block_order(n, 16, True, 2, 0)
        assert len(dropped) > 0 and not set(np.concatenate([ranks[0].rows_of(0, 0)]).tolist()) & dropped
        assert len(order) - len(ranks[0]) * world == blocks % world


def test_augmentation_keeps_every_pixel_value_and_is_seeded(small_dataset, stored):
    plain = StreamingBatches(small_dataset, "train", batch_size=32, seed=9)
    augmented = StreamingBatches(small_dataset, "train", batch_size=32, seed=9, augment=True)
    moved = 0
    for (x, y), (ax, ay) in zip(plain.iter_epoch(1), augmented.iter_epoch(1)):
        np.testing.assert_array_equal(y, ay)
        assert ax.shape == x.shape and ax.flags.c_contiguous
        flat, aflat = x.reshape(len(x), -1), ax.reshape(len(ax), -1)
        np.testing.assert_array_equal(np.sort(flat, axis=1), np.sort(aflat, axis=1))  # same multiset per image
        moved += int(np.sum(np.any(flat != aflat, axis=1)))
    assert moved > 0
    again = pickle.loads(pickle.dumps(augmented))
    for (ax, _), (bx, _) in zip(augmented.iter_epoch(1), again.iter_epoch(1)):
        np.testing.assert_array_equal(ax, bx)


def test_augment_exact_draws_all_eight_symmetries():
    image = np.arange(2 * 2 * 1, dtype=np.float32).reshape(1, 2, 2, 1)
    out = augment_exact(np.repeat(image, 400, axis=0), np.random.default_rng(0))
    assert len({o.tobytes() for o in out}) == 8
    rect = np.arange(2 * 3, dtype=np.float32).reshape(1, 2, 3, 1).repeat(100, axis=0)
    assert len({o.tobytes() for o in augment_exact(rect, np.random.default_rng(0))}) == 4


def test_transform_applies_to_the_images(small_dataset):
    scaled = StreamingBatches(small_dataset, "val", batch_size=50, transform=lambda x: x * 2)
    plain = StreamingBatches(small_dataset, "val", batch_size=50)
    for (x, y), (sx, sy) in zip(plain, scaled):
        np.testing.assert_array_equal(sx, x * 2)
        np.testing.assert_array_equal(sy, y)


def test_parquet_gives_the_same_batches(small_dataset, tmp_path):
    convert(small_dataset, tmp_path / "dataset.parquet")
    hdf5 = StreamingBatches(small_dataset, batch_size=30, seed=4, rank=1, world_size=2)
    parquet = StreamingBatches(tmp_path / "dataset.parquet", batch_size=30, seed=4, rank=1, world_size=2)
    with open_dataset(small_dataset) as ds:
        assert ds["train"]._table.layout is not None  # HDF5 through its memory map
    for (x, y), (px, py) in zip(hdf5.iter_epoch(0), parquet.iter_epoch(0), strict=True):
        np.testing.assert_array_equal(x, px)
        np.testing.assert_array_equal(y, py)
        assert px.flags.c_contiguous and py.flags.c_contiguous


def test_bad_arguments_are_value_errors(small_dataset):
    for kwargs in ({"batch_size": 0}, {"batch_size": True}, {"rank": 2, "world_size": 2}, {"remainder": "pad"}):
        with pytest.raises(ValueError):
            StreamingBatches(small_dataset, **kwargs)
    with pytest.raises(KeyError, match="no split 'nope'"):
        StreamingBatches(small_dataset, "nope")


def test_a_table_cut_short_is_a_one_line_error(small_dataset, tmp_path):
    short = tmp_path / "short.h5"
    short.write_bytes(small_dataset.read_bytes())
    batches = StreamingBatches(short, batch_size=16)
    with open_dataset(short) as ds:
        end = ds["train"].hdf5_table().id.get_offset() + 10
    with open(short, "r+b") as fh:
        fh.truncate(end)
    with pytest.raises(CutoutEtlError, match="truncated"):
        next(iter(batches))
