"""Shuffled, sharded (images, labels) batches of one split for any framework: `StreamingBatches`.

The block shuffle: batch i of an epoch is one contiguous block of `batch_size` stored rows (the last block
may be shorter); the blocks start at an offset in [0, batch_size) and are visited in an order, both drawn
from (seed, epoch) (`block_order`). It is a valid shuffle because build stores each split's classes
interleaved in proportion, and it keeps every batch one sequential read. The Keras loader
(`ml/batch_loader.py`) uses the same draw, so both give the same batches for the same seed and epoch.

Sharding (rank, world_size): rank r takes blocks r, r + world_size, ... of the epoch's order, so ranks
never share a row, and every rank gets the same number of batches: the last `blocks % world_size`
blocks of the epoch's order are dropped (`remainder="drop"`, the default; with shuffling a different set of
rows each epoch), or the order is padded with its own first blocks so that some rows are seen twice in the
epoch (`remainder="repeat"`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np

from .block_reader import BlockReader
from .dataset import Dataset, open_dataset

__all__ = ["StreamingBatches", "augment_exact", "block_order"]

Transform = Callable[[np.ndarray], np.ndarray]


def block_order(rows: int, batch_size: int, shuffle: bool, seed: int, epoch: int) -> tuple[int, np.ndarray]:
    """(offset of the first block, order of the blocks) of one epoch: the block shuffle's one draw."""
    blocks = np.arange((rows + batch_size - 1) // batch_size, dtype=np.int64)
    if not shuffle or rows == 0:
        return 0, blocks
    rng = np.random.default_rng([seed, epoch])
    return int(rng.integers(min(batch_size, rows))), rng.permutation(blocks)


def block_spans(block: int, offset: int, rows: int, batch_size: int) -> list[tuple[int, int]]:
    """The stored (first row, count) runs of a block: one run, or two where the block wraps past the end."""
    first = (block * batch_size + offset) % rows
    count = min(batch_size, rows - block * batch_size)
    head = min(count, rows - first)
    return [(first, count)] if head == count else [(first, head), (0, count - head)]


def augment_exact(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image flipped (or not) and turned by a multiple of 90 degrees, drawn from `rng`.

    Exact: every output image holds the same pixel values as its input, moved. Square images take any of
    the 8 symmetries of the square; others only the 4 that keep their shape.
    """
    count = len(images)
    square = images.shape[1] == images.shape[2]
    turns = rng.integers(4, size=count) if square else 2 * rng.integers(2, size=count)
    flips = rng.integers(2, size=count).astype(bool)
    out = np.empty_like(images)
    for turn in np.unique(turns):
        for flip in (False, True):
            chosen = (turns == turn) & (flips == flip)
            if chosen.any():
                moved = np.rot90(images[chosen], int(turn), axes=(1, 2))
                out[chosen] = moved[:, :, ::-1] if flip else moved
    return out


class StreamingBatches:
    """Iterate (images float32 (N, H, W, B), labels int64 (N,)) batches of one split, block-shuffled.

    ``dataset`` is a path or an open `Dataset`. With ``shuffle`` (default: only for ``"train"``) each epoch
    has its own block order from (seed, epoch); iterating gives the current epoch's batches of this rank,
    and then advances the epoch (or call `set_epoch` first, as distributed samplers do). ``augment`` applies
    `augment_exact` with a generator seeded by (seed, epoch, batch): the same batches whatever the process.
    ``transform`` is then applied to the images (e.g. the stored flux transform). Every array is C-contiguous
    and freshly allocated. The object pickles; files are reopened lazily in each process.
    """

    def __init__(
        self,
        dataset: Dataset | str | os.PathLike[str],
        split: str = "train",
        batch_size: int = 256,
        *,
        shuffle: bool | None = None,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        remainder: Literal["drop", "repeat"] = "drop",
        augment: bool = False,
        transform: Transform | None = None,
    ) -> None:
        _check(batch_size, rank, world_size, remainder)
        ds = dataset if isinstance(dataset, Dataset) else open_dataset(Path(dataset))
        try:
            self.reader = BlockReader(ds, split)
        finally:
            if ds is not dataset:
                ds.close()
        self.split, self.rows, self.batch_size = split, self.reader.rows, int(batch_size)
        self.shuffle = split == "train" if shuffle is None else bool(shuffle)
        self.seed, self.epoch = int(seed), int(epoch)
        self.rank, self.world_size, self.remainder = int(rank), int(world_size), remainder
        self.augment, self.transform = bool(augment), transform

    def set_epoch(self, epoch: int) -> None:
        """Use the block order of `epoch` (0-based) from the next iteration."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Batches per epoch on this rank (the same on every rank)."""
        blocks = (self.rows + self.batch_size - 1) // self.batch_size
        if self.remainder == "repeat":
            return (blocks + self.world_size - 1) // self.world_size
        return blocks // self.world_size

    def blocks(self, epoch: int | None = None) -> tuple[int, np.ndarray]:
        """(offset, this rank's blocks in order) for `epoch` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        offset, order = block_order(self.rows, self.batch_size, self.shuffle, self.seed, epoch)
        if self.remainder == "repeat" and len(order):
            order = np.resize(order, len(self) * self.world_size)  # pads with the order's own first blocks
        mine = order[self.rank :: self.world_size][: len(self)]
        return offset, mine

    def rows_of(self, index: int, epoch: int | None = None) -> np.ndarray:
        """Stored row numbers of this rank's batch `index` of `epoch` (default: the current one)."""
        offset, mine = self.blocks(epoch)
        spans = block_spans(int(mine[index]), offset, self.rows, self.batch_size)
        return np.concatenate([np.arange(first, first + count) for first, count in spans])

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        epoch = self.epoch
        self.epoch += 1
        return self.iter_epoch(epoch)

    def iter_epoch(self, epoch: int, part: int = 0, parts: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """This rank's batches of `epoch`; of those, only numbers part, part + parts, ... (DataLoader workers)."""
        offset, mine = self.blocks(epoch)
        for index in range(part, len(mine), parts):
            yield self.batch(int(mine[index]), offset, epoch)

    def batch(self, block: int, offset: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """The batch of stored block `block` at `offset`, augmented and transformed as configured."""
        parts = [
            self.reader.read(first, count) for first, count in block_spans(block, offset, self.rows, self.batch_size)
        ]
        images, labels = parts[0] if len(parts) == 1 else (np.concatenate(p) for p in zip(*parts))
        if self.augment:
            images = augment_exact(images, np.random.default_rng([self.seed, epoch, block, 1]))
        if self.transform is not None:
            images = np.ascontiguousarray(self.transform(images))
        return images, labels

    def close(self) -> None:
        self.reader.close()

    def __repr__(self) -> str:
        order = f"shuffled (seed {self.seed}, epoch {self.epoch})" if self.shuffle else "stored order"
        shard = f", rank {self.rank} of {self.world_size}" if self.world_size > 1 else ""
        return (
            f"<StreamingBatches {self.reader.path.name}[{self.split}]: {self.rows} rows, "
            f"{len(self)} batches of {self.batch_size}{shard}, {order}>"
        )


def _check(batch_size: int, rank: int, world_size: int, remainder: str) -> None:
    def positive(value: object) -> bool:
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and bool(value >= 1)

    if not positive(batch_size):
        raise ValueError(f"batch_size must be a positive integer (got {batch_size!r})")
    if not positive(world_size) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size (got rank {rank!r}, world_size {world_size!r})")
    if remainder not in ("drop", "repeat"):
        raise ValueError(f"remainder must be 'drop' or 'repeat' (got {remainder!r})")
