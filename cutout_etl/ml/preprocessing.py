"""The flux-preserving preprocessing layer (saved with the model) and how to build it from a dataset's statistics."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from ..dataset import Dataset, open_dataset
from ..errors import CutoutEtlError

MODES = ("asinh", "robust", "none")
DEFAULT_ROBUST_CLIP = 1000.0


class PreprocessingError(CutoutEtlError, ValueError):
    """The stored statistics cannot give the requested transform."""


@keras.saving.register_keras_serializable(package="cutout_etl")
class FluxPreprocessing(keras.layers.Layer):
    """Per-band flux transform with fixed constants, always computed in float32.

    ``mode="asinh"``: y = asinh((x - offset_b) / scale_b); ``"robust"``:
    y = clip((x - offset_b) / scale_b, -clip, clip); ``"none"``: no per-band
    transform, y = x / scale with one ``scale`` for every band (a list of one
    float; without it y = x, which leaves pixels of ~1e-12 that a network
    initialised for unit inputs does not learn from). In
    every mode pixels that are NaN or +-inf in the input (or overflow) come
    out as 0, the background-subtracted sky level. ``offset`` and ``scale``
    are one float per band (the last axis); scales must be finite and > 0.
    With ``mask_channel=True`` one channel is appended: 1 where any band's
    input pixel was NaN or +-inf (filled with 0 above), else 0, so the model
    can tell a filled pixel from sky. Build it from a dataset with
    `preprocessing_from_dataset`.
    """

    def __init__(
        self,
        mode: str = "asinh",
        offset: Sequence[float] | None = None,
        scale: Sequence[float] | None = None,
        clip: float | None = None,
        bands: Sequence[str] | None = None,
        mask_channel: bool = False,
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
        self.mask_channel = bool(mask_channel)
        if mode == "none":
            self.offset, self.scale = None, _global_scale(scale)
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
            y = x if self._scale32 is None else x / ops.convert_to_tensor(self._scale32)
        else:
            y = (x - ops.convert_to_tensor(self._offset32)) / ops.convert_to_tensor(self._scale32)
            if self.mode == "asinh":
                y = ops.arcsinh(y)
            elif self.clip is not None:  # robust: __init__ checked that clip is set
                y = ops.clip(y, -self.clip, self.clip)
        valid = ops.logical_and(ops.isfinite(x), ops.isfinite(y))
        y = ops.where(valid, y, ops.zeros_like(y))
        if not self.mask_channel:
            return y
        invalid = ops.any(ops.logical_not(ops.isfinite(x)), axis=-1, keepdims=True)
        return ops.concatenate([y, ops.cast(invalid, "float32")], axis=-1)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        if not self.mask_channel:
            return input_shape
        channels = None if input_shape[-1] is None else input_shape[-1] + 1
        return (*input_shape[:-1], channels)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(mode=self.mode, offset=self.offset, scale=self.scale, clip=self.clip, bands=self.bands)
        config.update(mask_channel=self.mask_channel)
        return config


def _global_scale(scale: Sequence[float] | None) -> list[float] | None:
    if scale is None:
        return None
    values = [float(v) for v in scale]
    if len(values) != 1 or not (math.isfinite(values[0]) and values[0] > 0):
        raise ValueError(f"mode 'none' takes one global scale, finite and > 0 (got {scale!r})")
    return values


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
    mask_channel: bool = False,
) -> FluxPreprocessing:
    """The preprocessing layer for a dataset, from its stored training statistics.

    ``asinh``: per band offset m_b and scale k * sigma_b from ``transform``
    (sky median and sky noise of the training split, k = 3 by default).
    ``robust``: offset = median of all training pixels (``quantiles.p50``),
    scale = ``mad_sigma``, clipped to +-``clip``. ``none``: raw flux.
    ``mask_channel``: append the invalid-pixel channel (see `FluxPreprocessing`).
    Raises `PreprocessingError` when the statistics are missing, come from
    another split than train, or give no usable scale (zero sky noise).
    """
    if mode not in MODES:
        raise PreprocessingError(f"mode must be one of {', '.join(MODES)} (got {mode!r})")
    if isinstance(dataset, Dataset):
        layer = _preprocessing(dataset, mode, clip, name)
    else:
        with open_dataset(Path(dataset)) as ds:
            layer = _preprocessing(ds, mode, clip, name)
    layer.mask_channel = bool(mask_channel)  # not built yet: the output shape follows
    return layer


def _preprocessing(ds: Dataset, mode: str, clip: float, name: str) -> FluxPreprocessing:
    stats = ds.stats
    if not stats or "bands" not in stats:
        raise PreprocessingError(f"{ds.path}: no statistics stored; run `cutout-etl stats {ds.path}` first")
    if stats.get("split", "train") != "train":
        raise PreprocessingError(
            f"{ds.path}: stored statistics come from split {stats['split']!r}, expected 'train' "
            f"(constants from other splits leak); run `cutout-etl stats {ds.path} --split train`"
        )
    if mode == "none":
        sigmas = [((stats["bands"].get(b) or {}).get("sky_sigma") or {}).get("p50") for b in ds.bands]
        usable = [v for v in sigmas if v is not None and math.isfinite(v) and v > 0]
        if not usable:
            raise PreprocessingError(f"{ds.path}: no band has a sky noise > 0 to scale the flux by (got {sigmas})")
        return FluxPreprocessing("none", scale=[float(np.median(usable))], bands=ds.bands, name=name)
    offsets, scales = [], []
    for band in ds.bands:
        entry = stats["bands"].get(band)
        if entry is None:
            raise PreprocessingError(f"{ds.path}: no statistics for band {band!r} (bands: {', '.join(ds.bands)})")
        if mode == "asinh":
            transform = entry.get("transform") or {}
            if transform.get("kind") != "asinh":
                raise PreprocessingError(
                    f"{ds.path}: band {band!r}: stored transform is {transform!r}, expected kind 'asinh'"
                )
            offset, scale = transform.get("offset"), transform.get("scale")
            what = f"scale k*sigma_sky = {scale} (sky noise {entry.get('sky_sigma', {}).get('p50')})"
        else:
            offset, scale = (entry.get("quantiles") or {}).get("p50"), entry.get("mad_sigma")
            what = f"mad_sigma = {scale}"
        if offset is None or not math.isfinite(offset):
            raise PreprocessingError(
                f"{ds.path}: band {band!r}: no finite offset stored for the {mode} transform (got {offset})"
            )
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
