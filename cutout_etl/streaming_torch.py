"""`TorchStreamingDataset`: `StreamingBatches` as a `torch.utils.data.IterableDataset` (needs torch).

Import this module only where torch is installed; the rest of cutout-etl never imports it. Each item is one
batch of torch tensors, so build the `DataLoader` with ``batch_size=None``. With ``num_workers > 0`` every
worker takes every ``num_workers``-th batch of this rank's epoch (`torch.utils.data.get_worker_info`), so no
row is read twice and the DataLoader's round-robin over workers yields the batches in the epoch's order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from .dataset import Dataset
from .streaming import StreamingBatches

__all__ = ["TorchStreamingDataset"]


class TorchStreamingDataset(IterableDataset):
    """Block-shuffled, sharded batches (images float32 (N, H, W, B), labels int64 (N,)) as torch tensors.

    Arguments are those of `StreamingBatches`; ``rank`` and ``world_size`` default to
    `torch.distributed`'s when it is initialised, else 0 and 1. Call `set_epoch(epoch)` before each epoch
    (as with `DistributedSampler`): workers iterate copies made when they start, so only that reaches new
    workers. Each iteration also advances the epoch of the copy it runs on, which keeps persistent workers
    (``persistent_workers=True``, whose copies never see `set_epoch` again) in step: 0, 1, 2, ...
    ``channels_first`` gives images as (N, B, H, W), the layout torch convolutions take.
    """

    def __init__(
        self,
        dataset: Dataset | str | os.PathLike[str],
        split: str = "train",
        batch_size: int = 256,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        channels_first: bool = False,
        **options: Any,
    ) -> None:
        super().__init__()
        if (
            rank is None
            and world_size is None
            and torch.distributed.is_available()
            and torch.distributed.is_initialized()
        ):
            rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        rank, world_size = rank or 0, world_size or 1
        self.batches = StreamingBatches(dataset, split, batch_size, rank=rank, world_size=world_size, **options)
        self.channels_first = channels_first

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        """Batches per epoch on this rank (all workers together)."""
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        worker = get_worker_info()
        part, parts = (0, 1) if worker is None else (worker.id, worker.num_workers)
        epoch = self.batches.epoch
        self.batches.epoch += 1  # this copy's next iteration: what persistent workers run
        for images, labels in self.batches.iter_epoch(epoch, part, parts):
            tensor = torch.from_numpy(images)
            yield (tensor.permute(0, 3, 1, 2).contiguous() if self.channels_first else tensor), torch.from_numpy(labels)
