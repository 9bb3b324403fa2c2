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
* `ApertureFluxes` measures per-band central aperture fluxes and their
  colours from the raw flux (asinh of the flux in noise units, float32, no
  weights); `build_model` concatenates them with the CNN's pooled features
  (``apertures=None`` turns this off).
* `build_model`, `training_callbacks` (early stopping, the learning-rate schedule), `class_weights` and
  `classification_report` are what the
  example ``examples/train_keras.py`` is made of.

Load a saved model with `load_model` (safe mode), or import this module before
``keras.saving.load_model``: importing it registers ``FluxPreprocessing``.

This module gathers the public names; each lives where its concern does: `preprocessing` (the layer),
`photometry` (the aperture fluxes), `batch_loader` (the streaming loader), `model` (the CNN, loading, predicting) and `metrics` (numpy only).
"""

from __future__ import annotations

from .batch_loader import CutoutPyDataset
from .metrics import class_weights, classification_report
from .model import LR_SCHEDULES, TRAINING_DEFAULTS, build_model, load_model, predict_split, training_callbacks
from .photometry import ApertureFluxes
from .preprocessing import DEFAULT_ROBUST_CLIP, MODES, FluxPreprocessing, PreprocessingError, preprocessing_from_dataset

__all__ = [
    "DEFAULT_ROBUST_CLIP",
    "LR_SCHEDULES",
    "MODES",
    "TRAINING_DEFAULTS",
    "ApertureFluxes",
    "CutoutPyDataset",
    "FluxPreprocessing",
    "PreprocessingError",
    "build_model",
    "class_weights",
    "classification_report",
    "load_model",
    "predict_split",
    "preprocessing_from_dataset",
    "training_callbacks",
]
