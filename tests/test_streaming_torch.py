"""The torch `IterableDataset` over `StreamingBatches`: DataLoader workers split an epoch without repeating a row."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cutout_etl.streaming_torch import TorchStreamingDataset


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_two_workers_give_the_epoch_in_order_without_repeats(small_dataset, context):
    dataset = TorchStreamingDataset(small_dataset, "train", batch_size=16, seed=3, augment=True)
    expected = [(x, y) for x, y in dataset.batches.iter_epoch(1)]
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2, multiprocessing_context=context)
    dataset.set_epoch(1)
    got = list(loader)
    assert len(got) == len(expected) == len(dataset)
    for (x, y), (tx, ty) in zip(expected, got, strict=True):
        assert tx.dtype == torch.float32 and ty.dtype == torch.int64
        np.testing.assert_array_equal(tx.numpy(), x)
        np.testing.assert_array_equal(ty.numpy(), y)
    rows = np.concatenate([dataset.batches.rows_of(i, 1) for i in range(len(dataset))])
    assert len(np.unique(rows)) == len(rows) == dataset.batches.rows


def test_ranks_and_channels_first(small_dataset):
    ranks = [
        TorchStreamingDataset(small_dataset, batch_size=16, rank=r, world_size=2, channels_first=True) for r in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1])
    seen = []
    for r, dataset in enumerate(ranks):
        for i, (images, labels) in enumerate(torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=0)):
            assert images.shape[1:] == (4, 36, 36) and images.is_contiguous()
            stored = next(dataset.batches.iter_epoch(0, i, len(dataset)))[0]
            np.testing.assert_array_equal(images.numpy(), stored.transpose(0, 3, 1, 2))
            seen.append(dataset.batches.rows_of(i, 0))
    every = np.concatenate(seen)
    assert len(np.unique(every)) == len(every)


def test_persistent_workers_follow_the_epochs(small_dataset):
    dataset = TorchStreamingDataset(small_dataset, "train", batch_size=16, seed=8)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2, persistent_workers=True)
    for epoch in range(3):
        dataset.set_epoch(epoch)
        got = [labels.numpy() for _, labels in loader]
        expected = [labels for _, labels in dataset.batches.iter_epoch(epoch)]
        assert [g.tolist() for g in got] == [e.tolist() for e in expected], epoch
    assert [int(dataset.batches.rows_of(0, e)[0]) for e in range(3)] != [int(dataset.batches.rows_of(0, 0)[0])] * 3
