"""The reference CNN, loading a saved model safely, and predicting a split in stored order."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from .batch_loader import CutoutPyDataset
from .photometry import DEFAULT_RADII, ApertureFluxes
from .preprocessing import FluxPreprocessing


def build_model(
    preprocessing: FluxPreprocessing,
    image_shape: Sequence[int],
    n_classes: int,
    filters: Sequence[int] = (16, 32, 64),
    dropout: float = 0.3,
    apertures: Sequence[float] | None = DEFAULT_RADII,
) -> keras.Model:
    """A small CNN: preprocessing, per width two 3x3 convolutions and a 2x2 max-pool, global pooling, softmax.

    With ``apertures`` (radii in pixels; ``None`` turns it off) the raw input also goes through
    `ApertureFluxes` (central aperture fluxes and colours in units of the preprocessing's per-band scale),
    batch normalisation and a dense layer, concatenated with the pooled features, then one hidden dense layer
    before the softmax: the photometry a gradient-boosting baseline classifies from, which the convolutions
    alone learn slowly.
    """
    inputs = keras.Input(shape=tuple(image_shape), name="flux")
    x = preprocessing(inputs)
    for i, width in enumerate(filters):
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{i}a")(x)
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{i}b")(x)
        if i < len(filters) - 1:
            x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    if apertures is not None:
        offset, scale = aperture_constants(preprocessing, image_shape[-1])
        photometry = ApertureFluxes(offset, scale, apertures, name="aperture_fluxes")(inputs)
        # asinh magnitudes span ~0-15 with spreads that differ per aperture: standardised, the dense layer
        # trains in tens of epochs instead of hundreds (README "A hard benchmark"). No trainable layer feeds
        # it, so its statistics do not drift: a short memory (0.9) is exact within tens of steps, where
        # Keras's 0.99 leaves a short run predicting with the initial mean 0, variance 1.
        photometry = keras.layers.BatchNormalization(momentum=0.9, name="photometry_norm")(photometry)
        photometry = keras.layers.Dense(128, activation="relu", name="photometry_dense")(photometry)
        x = keras.layers.Concatenate(name="features")([x, photometry])
        x = keras.layers.Dense(64, activation="relu", name="head")(x)  # lets colours and morphology combine
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="class_probabilities")(x)
    return keras.Model(inputs, outputs, name="cutout_cnn")


def aperture_constants(preprocessing: FluxPreprocessing, n_bands: int) -> tuple[list[float], list[float]]:
    """Per-band offset and noise scale for `ApertureFluxes`, taken from the preprocessing's stored constants."""
    if preprocessing.scale is None:
        raise ValueError(
            "the aperture fluxes need the preprocessing's scale (mode none without one): pass apertures=None"
        )
    if preprocessing.offset is None:  # mode none: one global scale, no offset
        return [0.0] * n_bands, preprocessing.scale * n_bands
    return list(preprocessing.offset), list(preprocessing.scale)


LR_SCHEDULES = ("constant", "plateau")
# How the reference CNN is trained by default (examples/train_keras.py, benchmarks/bench_preprocessing.py):
# to convergence, with exact flips/rotations; the README's "A hard benchmark" has the evidence.
TRAINING_DEFAULTS = {"epochs": 150, "patience": 12, "lr_schedule": "constant", "augment": True}


def training_callbacks(patience: int, lr_schedule: str = "plateau") -> list[keras.callbacks.Callback]:
    """Early stopping on the val loss after ``patience`` epochs without improvement, keeping the best weights;
    with ``lr_schedule="plateau"`` also halve Adam's rate after ``patience // 3`` such epochs (down to 1e-5).

    The first callback is the `keras.callbacks.EarlyStopping` (its ``best_epoch`` says which weights were kept).
    """
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES} (got {lr_schedule!r})")
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
    ]
    if lr_schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.5, patience=max(1, patience // 3), min_lr=1e-5, verbose=0
            )
        )
    return callbacks


def load_model(path: str | os.PathLike[str], **kwargs: Any) -> keras.Model:
    """`keras.saving.load_model` in safe mode, with `FluxPreprocessing` registered."""
    kwargs.setdefault("safe_mode", True)
    return keras.saving.load_model(os.fspath(path), **kwargs)


def predict_split(model: keras.Model, loader: CutoutPyDataset) -> tuple[np.ndarray, np.ndarray]:
    """(true labels, class probabilities) over a split in stored order (the loader must not shuffle)."""
    if loader.shuffle:
        raise ValueError("predict_split needs a loader with shuffle=False (stored order)")
    return loader.labels(), model.predict(loader, verbose=0)
