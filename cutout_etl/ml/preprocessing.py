"""The flux-preserving preprocessing layer (saved with the model) and how to build it from a dataset's statistics."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from ..dataset import Dataset
from ..transform import DEFAULT_ROBUST_CLIP, MODES, FluxTransform, PreprocessingError

__all__ = ["DEFAULT_ROBUST_CLIP", "MODES", "FluxPreprocessing", "PreprocessingError", "preprocessing_from_dataset"]


@keras.saving.register_keras_serializable(package="cutout_etl")
class FluxPreprocessing(keras.layers.Layer):
    """Per-band flux transform with fixed constants, always computed in float32.

    ``mode="asinh"``: y = asinh((x - offset_b) / scale_b); ``"robust"``:
    y = clip((x - offset_b) / scale_b, -clip, clip); ``"none"``: y = x / scale
    with one global ``scale`` (a list of one float; without it y = x). In
    every mode pixels that are NaN or +-inf in the input (or overflow) come
    out as 0, the background-subtracted sky level. ``offset`` and ``scale``
    are one float per band (the last axis); scales must be finite and > 0.
    With ``mask_channel=True`` one channel is appended: 1 where any band's
    input pixel was NaN or +-inf (filled with 0), else 0, so the model can
    tell a filled pixel from sky. Build it from a dataset with
    `preprocessing_from_dataset`. The numpy `cutout_etl.transform.FluxTransform`
    computes the same values outside Keras.
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
        checked = FluxTransform(mode, _tuple(offset), _tuple(scale), clip, _tuple(bands))  # the checks, in one place
        self.mask_channel = bool(mask_channel)
        self.mode = mode
        self.bands = None if bands is None else [str(b) for b in bands]
        self.clip = None if clip is None else float(clip)
        self.offset = None if checked.offset is None else list(checked.offset)
        self.scale = None if checked.scale is None else list(checked.scale)
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


def _tuple(values: Sequence | None) -> tuple | None:
    return None if values is None else tuple(values)


def preprocessing_from_dataset(
    dataset: Dataset | str | os.PathLike[str],
    mode: str = "asinh",
    clip: float = DEFAULT_ROBUST_CLIP,
    name: str = "flux_preprocessing",
    mask_channel: bool = False,
) -> FluxPreprocessing:
    """The preprocessing layer for a dataset, from its stored training statistics.

    The constants are `FluxTransform.from_dataset`'s (`cutout_etl.transform`
    says where each comes from); raises `PreprocessingError` when the
    statistics cannot give them. ``mask_channel``: append the invalid-pixel
    channel (see `FluxPreprocessing`).
    """
    transform = FluxTransform.from_dataset(dataset, mode, clip, mask_channel)
    return FluxPreprocessing(
        transform.mode,
        offset=transform.offset,
        scale=transform.scale,
        clip=transform.clip,
        bands=transform.bands,
        mask_channel=transform.mask_channel,
        name=name,
    )
