"""The reference CNN, loading a saved model safely, and predicting a split in stored order."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from .batch_loader import CutoutPyDataset
from .preprocessing import FluxPreprocessing


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


def load_model(path: str | os.PathLike[str], **kwargs: Any) -> keras.Model:
    """`keras.saving.load_model` in safe mode, with `FluxPreprocessing` registered."""
    kwargs.setdefault("safe_mode", True)
    return keras.saving.load_model(os.fspath(path), **kwargs)


def predict_split(model: keras.Model, loader: CutoutPyDataset) -> tuple[np.ndarray, np.ndarray]:
    """(true labels, class probabilities) over a split in stored order (the loader must not shuffle)."""
    if loader.shuffle:
        raise ValueError("predict_split needs a loader with shuffle=False (stored order)")
    return loader.labels(), model.predict(loader, verbose=0)
