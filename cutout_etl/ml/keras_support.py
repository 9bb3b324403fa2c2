"""Keras 3 helpers: a streaming loader, the flux-preserving preprocessing layer, a reference CNN.

Needs the optional extra ``keras`` (``pip install 'cutout-etl[keras]'``: Keras 3
with the TensorFlow backend). Only the ``keras`` API is used, so the same code
runs under ``KERAS_BACKEND=jax`` or ``torch`` with that backend installed.

* `CutoutPyDataset` streams (images, labels) batches of one split straight
  from the file: each batch is one contiguous block of rows (two at the
  wrap-around), read from an HDF5 dataset with ``preadv`` straight into the
  batch array (from Parquet through the dataset's reader). With ``shuffle``
  the blocks start at a random offset and come in a random order, drawn
  afresh every epoch from ``seed``. This is a valid shuffle because the
  classes are interleaved in proportion inside each stored split.
* `FluxPreprocessing` is the first layer of the model and is saved with it,
  so inference applies the transform used in training. Per band, with
  constants from the training split's statistics:
  ``asinh((x - m_b) / (k sigma_b))`` (default), ``(x - median_b) / mad_sigma_b``
  clipped (``robust``) or the raw flux (``none``); then pixels that are
  not finite become 0. No per-image scaling and no epsilon: a missing or
  zero scale is an error.
* `build_model`, `class_weights` and `classification_report` are what the
  example ``examples/train_keras.py`` is made of.

Load a saved model with `load_model` (safe mode), or import this module before
``keras.saving.load_model``: importing it registers ``FluxPreprocessing``.
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np
from keras import ops

from ..dataset import Dataset, open_dataset
from ..errors import CutoutEtlError, InputFileError
from ..inputs import readers, row_reader

__all__ = [
    "MODES",
    "CutoutPyDataset",
    "FluxPreprocessing",
    "PreprocessingError",
    "build_model",
    "class_weights",
    "classification_report",
    "load_model",
    "predict_split",
    "preprocessing_from_dataset",
]

MODES = ("asinh", "robust", "none")
DEFAULT_ROBUST_CLIP = 1000.0
# Linux IOV_MAX is 1024 buffers per preadv call: two per row (header, image).
_ROWS_PER_PREADV = 512


class PreprocessingError(CutoutEtlError, ValueError):
    """The stored statistics cannot give the requested transform."""


# ---------------------------------------------------------------- preprocessing


@keras.saving.register_keras_serializable(package="cutout_etl")
class FluxPreprocessing(keras.layers.Layer):
    """Per-band flux transform with fixed constants, always computed in float32.

    ``mode="asinh"``: y = asinh((x - offset_b) / scale_b); ``"robust"``:
    y = clip((x - offset_b) / scale_b, -clip, clip); ``"none"``: y = x. In
    every mode pixels that are NaN or +-inf in the input (or overflow) come
    out as 0, the background-subtracted sky level. ``offset`` and ``scale``
    are one float per band (the last axis); scales must be finite and > 0.
    Build it from a dataset with `preprocessing_from_dataset`.
    """

    def __init__(
        self,
        mode: str = "asinh",
        offset: Sequence[float] | None = None,
        scale: Sequence[float] | None = None,
        clip: float | None = None,
        bands: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        # Fluxes of 1e-12 underflow in float16: never let a mixed-precision
        # policy lower this layer's compute dtype.
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)} (got {mode!r})")
        self.mode = mode
        self.bands = None if bands is None else [str(b) for b in bands]
        self.clip = None if clip is None else float(clip)
        if mode == "none":
            self.offset = self.scale = None
        else:
            self.offset, self.scale = _check_constants(mode, offset, scale, self.bands)
            if mode == "robust" and not (self.clip is not None and self.clip > 0 and math.isfinite(self.clip)):
                raise ValueError(f"robust mode needs a finite clip > 0 (got {clip!r})")
        # float64 constants cast once to float32: 1e-12 and 1/1e-12 are both
        # well inside float32's normal range, so nothing is lost that matters.
        self._offset32 = None if self.offset is None else np.asarray(self.offset, np.float32)
        self._scale32 = None if self.scale is None else np.asarray(self.scale, np.float32)

    def build(self, input_shape: tuple) -> None:
        n_bands = input_shape[-1]
        if self.offset is not None and n_bands is not None and n_bands != len(self.offset):
            raise ValueError(
                f"FluxPreprocessing has constants for {len(self.offset)} bands "
                f"(got input with {n_bands} on the last axis)"
            )
        super().build(input_shape)

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, "float32")
        if self.mode == "none":
            y = x
        else:
            y = (x - ops.convert_to_tensor(self._offset32)) / ops.convert_to_tensor(self._scale32)
            y = ops.arcsinh(y) if self.mode == "asinh" else ops.clip(y, -self.clip, self.clip)
        valid = ops.logical_and(ops.isfinite(x), ops.isfinite(y))
        return ops.where(valid, y, ops.zeros_like(y))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            mode=self.mode, offset=self.offset, scale=self.scale, clip=self.clip, bands=self.bands
        )
        return config


def _check_constants(
    mode: str, offset: Sequence[float] | None, scale: Sequence[float] | None, bands: Sequence[str] | None
) -> tuple[list[float], list[float]]:
    if offset is None or scale is None:
        raise ValueError(f"mode {mode!r} needs offset and scale per band (got offset={offset!r}, scale={scale!r})")
    offset = [float(v) for v in offset]
    scale = [float(v) if v is not None else math.nan for v in scale]
    if len(offset) != len(scale) or (bands is not None and len(bands) != len(offset)):
        raise ValueError(
            f"offset, scale and bands must have one entry per band "
            f"(got {len(offset)}, {len(scale)} and {None if bands is None else len(bands)})"
        )
    names = bands if bands is not None else [f"#{i}" for i in range(len(offset))]
    for name, m, s in zip(names, offset, scale):
        if not math.isfinite(m):
            raise ValueError(f"band {name}: offset must be finite (got {m})")
        if not (math.isfinite(s) and s > 0):
            raise ValueError(f"band {name}: scale must be finite and > 0 (got {s}); no epsilon is added")
    return offset, scale


def preprocessing_from_dataset(
    dataset: Dataset | str | os.PathLike[str],
    mode: str = "asinh",
    clip: float = DEFAULT_ROBUST_CLIP,
    name: str = "flux_preprocessing",
) -> FluxPreprocessing:
    """The preprocessing layer for a dataset, from its stored training statistics.

    ``asinh``: per band offset m_b and scale k * sigma_b from ``transform``
    (sky median and sky noise of the training split, k = 3 by default).
    ``robust``: offset = median of all training pixels (``quantiles.p50``),
    scale = ``mad_sigma``, clipped to +-``clip``. ``none``: raw flux.
    Raises `PreprocessingError` when the statistics are missing, come from
    another split than train, or give no usable scale (zero sky noise).
    """
    if mode not in MODES:
        raise PreprocessingError(f"mode must be one of {', '.join(MODES)} (got {mode!r})")
    if isinstance(dataset, Dataset):
        return _preprocessing(dataset, mode, clip, name)
    with open_dataset(dataset) as ds:
        return _preprocessing(ds, mode, clip, name)


def _preprocessing(ds: Dataset, mode: str, clip: float, name: str) -> FluxPreprocessing:
    if mode == "none":
        return FluxPreprocessing("none", bands=ds.bands, name=name)
    stats = ds.stats
    if not stats or "bands" not in stats:
        raise PreprocessingError(f"{ds.path}: no statistics stored; run `cutout-etl stats {ds.path}` first")
    if stats.get("split", "train") != "train":
        raise PreprocessingError(
            f"{ds.path}: stored statistics come from split {stats['split']!r}, expected 'train' "
            f"(constants from other splits leak); run `cutout-etl stats {ds.path} --split train`"
        )
    offsets, scales = [], []
    for band in ds.bands:
        entry = stats["bands"].get(band)
        if entry is None:
            raise PreprocessingError(f"{ds.path}: no statistics for band {band!r} (bands: {', '.join(ds.bands)})")
        if mode == "asinh":
            transform = entry.get("transform") or {}
            if transform.get("kind") != "asinh":
                raise PreprocessingError(f"{ds.path}: band {band!r}: stored transform is {transform!r}, expected kind 'asinh'")
            offset, scale = transform.get("offset"), transform.get("scale")
            what = f"scale k*sigma_sky = {scale} (sky noise {entry.get('sky_sigma', {}).get('p50')})"
        else:
            offset, scale = (entry.get("quantiles") or {}).get("p50"), entry.get("mad_sigma")
            what = f"mad_sigma = {scale}"
        if offset is None or not math.isfinite(offset):
            raise PreprocessingError(f"{ds.path}: band {band!r}: no finite offset stored for the {mode} transform (got {offset})")
        if scale is None or not (math.isfinite(scale) and scale > 0):
            raise PreprocessingError(
                f"{ds.path}: band {band!r}: cannot build the {mode} transform: {what}; "
                "a zero or missing scale is not replaced by an epsilon (are the training cutouts all constant?)"
            )
        offsets.append(float(offset))
        scales.append(float(scale))
    return FluxPreprocessing(
        mode, offset=offsets, scale=scales, clip=clip if mode == "robust" else None, bands=ds.bands, name=name
    )


# ---------------------------------------------------------------- streaming loader


class CutoutPyDataset(keras.utils.PyDataset):
    """(images float32 (N, H, W, B), labels int64 (N,)) batches of one split, streamed.

    ``dataset`` is a path or an open `Dataset`. Batch ``i`` of an epoch is one
    contiguous block of ``batch_size`` rows (the last may be shorter), so a
    batch is one read and the split is never in memory. With ``shuffle``
    (default: only for ``"train"``) the blocks start at an offset in
    [0, batch_size) and are visited in an order, both drawn from
    ``(seed, epoch)``; the epoch advances in `on_epoch_end` (or set it with
    `set_epoch`; Keras 3 ``fit`` also calls `on_epoch_end` once before its
    first epoch, so its epochs use orders 1, 2, ...). Batches depend only on
    (seed, epoch, index), so worker threads or processes and Keras's
    prefetching return the same batches as a plain loop. Pass
    ``shuffle=False`` to ``model.fit`` so that Keras keeps this seeded order
    instead of reshuffling batch indices with Python's global ``random``. ``**kwargs`` go to `keras.utils.PyDataset`
    (``workers``, ``use_multiprocessing``, ``max_queue_size``): reads are
    positioned and the file is reopened in each process, so both are safe.
    """

    def __init__(
        self,
        dataset: Dataset | str | os.PathLike[str],
        split: str = "train",
        batch_size: int = 256,
        shuffle: bool | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer (got {batch_size!r})")
        ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
        try:
            self._describe(ds, split, batch_size, shuffle, seed)
        finally:
            if ds is not dataset:
                ds.close()
        # Reads use their own descriptor (or their own Dataset for the
        # fallback), opened on first use in each process.
        self._dataset: Dataset | None = None
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pid: int | None = None
        self._finalizer: weakref.finalize | None = None
        self._offset, self._order = self._draw_blocks()

    def _describe(self, ds: Dataset, split: str, batch_size: int, shuffle: bool | None, seed: int) -> None:
        table = ds[split]  # KeyError naming the splits if absent
        self.path = Path(ds.path)
        self.split = split
        self.batch_size = int(batch_size)
        self.shuffle = split == "train" if shuffle is None else bool(shuffle)
        self.seed = int(seed)
        self.epoch = 0
        self.classes = ds.classes
        self.image_shape = ds.image_shape
        self.rows = len(table)
        h5_table = table.hdf5_table()
        self._layout = _raw_layout(h5_table, self.image_shape) if h5_table is not None else None

    # -- the PyDataset interface

    def __len__(self) -> int:
        return (self.rows + self.batch_size - 1) // self.batch_size

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"batch {index} out of range ({len(self)} batches)")
        block = int(self._order[index])
        first = (block * self.batch_size + self._offset) % self.rows
        count = min(self.batch_size, self.rows - block * self.batch_size)
        head = min(count, self.rows - first)
        if head == count:
            return self._read(first, count)
        images_a, labels_a = self._read(first, head)
        images_b, labels_b = self._read(0, count - head)
        return np.concatenate([images_a, images_b]), np.concatenate([labels_a, labels_b])

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)

    # -- public helpers

    def set_epoch(self, epoch: int) -> None:
        """Use the block order of `epoch` (0-based) from now on."""
        self.epoch = int(epoch)
        self._offset, self._order = self._draw_blocks()

    def rows_of(self, index: int) -> np.ndarray:
        """Row numbers (in the stored split) of batch `index` of the current epoch."""
        block = int(self._order[index])
        count = min(self.batch_size, self.rows - block * self.batch_size)
        return (block * self.batch_size + self._offset + np.arange(count)) % self.rows

    def labels(self) -> np.ndarray:
        """Every label of the split in stored order (reads the label column only)."""
        with open_dataset(self.path) as ds:
            h5_table = ds[self.split].hdf5_table()
            if h5_table is not None:
                return np.asarray(h5_table.fields("label")[:], np.int64)
            chunks = [labels for _, labels in ds[self.split].batches(4096)]
        return np.concatenate(chunks).astype(np.int64) if chunks else np.empty(0, np.int64)

    def close(self) -> None:
        """Close the open file (it is reopened on the next read)."""
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()
            if self._dataset is not None:
                self._dataset.close()
            self._fd = self._pid = self._finalizer = self._dataset = None

    # -- internals

    def _draw_blocks(self) -> tuple[int, np.ndarray]:
        blocks = np.arange(len(self), dtype=np.int64)
        if not self.shuffle or self.rows == 0:
            return 0, blocks
        rng = np.random.default_rng([self.seed, self.epoch])
        return int(rng.integers(min(self.batch_size, self.rows))), rng.permutation(blocks)

    def _read(self, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        if self._layout is None:
            return self._read_through_dataset(first, count)
        offset, row_size, _, label_at = self._layout
        header = row_size - self._image_bytes
        images = np.empty((count, *self.image_shape), np.float32)
        head = np.empty((count, header), np.uint8)
        image_bytes, head_bytes = memoryview(images.reshape(-1).view(np.uint8)), memoryview(head.reshape(-1))
        size = self._image_bytes
        fd, position = self._file(), offset + first * row_size
        for start in range(0, count, _ROWS_PER_PREADV):
            stop = min(count, start + _ROWS_PER_PREADV)
            # Scatter each row: header -> head[i], image -> images[i] (one copy).
            buffers: list[memoryview] = [head_bytes] * (2 * (stop - start))
            buffers[0::2] = [head_bytes[i : i + header] for i in range(start * header, stop * header, header)]
            buffers[1::2] = [image_bytes[i : i + size] for i in range(start * size, stop * size, size)]
            want = (stop - start) * row_size
            if os.preadv(fd, buffers, position) != want:
                raise InputFileError(
                    f"{self.path}: truncated: split {self.split!r} rows {first}-{first + count - 1} lie past the end of the file"
                )
            position += want
        labels = head[:, label_at : label_at + 8].copy().view("<i8").reshape(count)
        return images, labels.astype(np.int64, copy=False)

    def _read_through_dataset(self, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        # Parquet, or HDF5 tables that are chunked or compressed: the
        # dataset's own reader, one thread at a time (its file caches are shared).
        with self._lock:
            if self._dataset is None:
                self._dataset = open_dataset(self.path)
            rows = self._dataset[self.split].read(first, first + count)
        return np.ascontiguousarray(rows["image"], np.float32), rows["label"].astype(np.int64)

    @property
    def _image_bytes(self) -> int:
        return int(np.prod(self.image_shape)) * 4

    def _file(self) -> int:
        with self._lock:
            if self._fd is None or self._pid != os.getpid():
                fd = os.open(self.path, os.O_RDONLY)
                self._fd, self._pid = fd, os.getpid()
                self._finalizer = weakref.finalize(self, os.close, fd)
            return self._fd

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_fd=None, _pid=None, _finalizer=None, _dataset=None, _lock=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        order = f"shuffled (seed {self.seed}, epoch {self.epoch})" if self.shuffle else "stored order"
        return f"<CutoutPyDataset {self.path.name}[{self.split}]: {self.rows} rows, {len(self)} batches of {self.batch_size}, {order}>"


def _raw_layout(table: h5py.Dataset, image_shape: Sequence[int]) -> tuple[int, int, int, int] | None:
    """(file offset, row size, image offset, label offset) for raw reads, else None.

    Raw reads need an HDF5 table that is contiguous and uncompressed, whose
    last field is the little-endian float32 image and whose label is
    little-endian int64, on a little-endian machine; anything else (Parquet
    too) goes through the dataset's own reader.
    """
    offset = row_reader.raw_offset(table)
    dtype = table.dtype
    if offset is None or dtype.names is None or {"image", "label"} - set(dtype.names):
        return None
    image_dtype, image_at = dtype.fields["image"][:2]
    label_dtype, label_at = dtype.fields["label"][:2]
    if np.little_endian is False or image_dtype.base != np.dtype("<f4") or label_dtype != np.dtype("<i8"):
        return None
    if tuple(image_dtype.shape) != tuple(image_shape) or image_at + image_dtype.itemsize != dtype.itemsize:
        return None
    if not label_at + 8 <= image_at:
        return None
    return int(offset), int(dtype.itemsize), int(image_at), int(label_at)


# ---------------------------------------------------------------- model and evaluation


def build_model(
    preprocessing: FluxPreprocessing,
    image_shape: Sequence[int],
    n_classes: int,
    filters: Sequence[int] = (16, 32, 64),
    dropout: float = 0.3,
) -> keras.Model:
    """A small CNN: preprocessing, per width two 3x3 convolutions and a 2x2 max-pool, global pooling, softmax."""
    inputs = keras.Input(shape=tuple(image_shape), name="flux")
    x = preprocessing(inputs)
    for i, width in enumerate(filters):
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{i}a")(x)
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{i}b")(x)
        if i < len(filters) - 1:
            x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="class_probabilities")(x)
    return keras.Model(inputs, outputs, name="cutout_cnn")


def class_weights(dataset: Dataset, split: str = "train") -> dict[int, float]:
    """Weights n / (n_classes * n_c) from the stored class counts (0 for an empty class)."""
    counts = dataset.metadata["tables_rows"][split]["class_counts"]
    n_classes = len(dataset.classes)
    total = sum(int(counts.get(name, 0)) for name in dataset.classes)
    return {
        label: (total / (n_classes * int(counts.get(name, 0))) if counts.get(name, 0) else 0.0)
        for label, name in enumerate(dataset.classes)
    }


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix (numpy only).

    A precision, recall or F1 whose denominator is 0 is reported as 0.0 (as
    scikit-learn's default). ``confusion_matrix[i][j]`` counts true class i
    predicted as class j.
    """
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of the same length (got {y_true.shape} and {y_pred.shape})")
    n = len(classes)
    confusion = np.bincount(y_true * n + y_pred, minlength=n * n).reshape(n, n)
    tp = np.diag(confusion).astype(np.float64)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros(n), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(n), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros(n), where=both > 0)
    return {
        "n": len(y_true),
        "accuracy": float(tp.sum() / max(len(y_true), 1)),
        "macro_f1": float(f1.mean()),
        "majority_rate": float(support.max() / max(len(y_true), 1)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(classes, precision, recall, f1, support)
        },
        "confusion_matrix": {
            "classes": list(classes),
            "rows": "true class",
            "columns": "predicted class",
            "counts": confusion.tolist(),
        },
    }


def load_model(path: str | os.PathLike[str], **kwargs: Any) -> keras.Model:
    """`keras.saving.load_model` in safe mode, with `FluxPreprocessing` registered."""
    kwargs.setdefault("safe_mode", True)
    return keras.saving.load_model(os.fspath(path), **kwargs)


def predict_split(model: keras.Model, loader: CutoutPyDataset) -> tuple[np.ndarray, np.ndarray]:
    """(true labels, class probabilities) over a split in stored order (the loader must not shuffle)."""
    if loader.shuffle:
        raise ValueError("predict_split needs a loader with shuffle=False (stored order)")
    return loader.labels(), model.predict(loader, verbose=0)
