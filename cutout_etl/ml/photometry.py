"""Aperture photometry inside the model: per-band central aperture fluxes and colours from the raw flux."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

DEFAULT_RADII = (2.0, 3.0, 5.0, 8.0)


@keras.saving.register_keras_serializable(package="cutout_etl")
class ApertureFluxes(keras.layers.Layer):
    """Per-band fluxes in circular apertures about the cutout centre, as asinh magnitudes, and their colours.

    From the raw flux x (N, H, W, bands), before any per-pixel transform: per
    band b and radius r, F = sum over pixels with distance to the centre
    <= r of (x - offset_b), then a = asinh(F / (scale_b * sqrt(n_r))) with n_r
    the pixels in the aperture, so a ~ 1 is a flux of one ``scale`` of
    noise in that aperture. Output per image: the a for every (radius, band)
    then the differences of adjacent bands (colours) per radius, flattened.
    Non-finite pixels count as the sky (offset_b). No trainable weights, no
    epsilon: scales must be finite and > 0 (fluxes are ~1e-12), float32.
    """

    def __init__(
        self,
        offset: Sequence[float],
        scale: Sequence[float],
        radii: Sequence[float] = DEFAULT_RADII,
        **kwargs: Any,
    ) -> None:
        kwargs["dtype"] = "float32"  # 1e-12 underflows in float16
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.offset, self.scale, self.radii = (
            [float(v) for v in offset],
            [float(v) for v in scale],
            [float(r) for r in radii],
        )
        if len(self.offset) != len(self.scale) or not self.radii:
            raise ValueError(f"one offset and scale per band, and at least one radius (got {offset}, {scale}, {radii})")
        if not all(np.isfinite(s) and s > 0 for s in self.scale) or not all(np.isfinite(self.offset)):
            raise ValueError(f"offsets must be finite and scales finite and > 0 (got {offset}, {scale})")
        self._masks: np.ndarray | None = None

    def build(self, input_shape: tuple) -> None:
        if input_shape[-1] != len(self.scale):
            raise ValueError(f"ApertureFluxes has constants for {len(self.scale)} bands (input has {input_shape[-1]})")
        masks = aperture_masks(input_shape[1], input_shape[2], self.radii)  # (H, W, R)
        # divided by sqrt(pixels) once here: the sum then comes out in noise units of that aperture
        self._masks = (masks / np.sqrt(masks.sum(axis=(0, 1)))).astype(np.float32)
        super().build(input_shape)

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, "float32")
        offset = ops.convert_to_tensor(np.asarray(self.offset, np.float32))
        scale = ops.convert_to_tensor(np.asarray(self.scale, np.float32))
        units = (x - offset) / scale  # per pixel, in scales: ~1, no 1e-12 left to sum
        units = ops.where(ops.isfinite(units), units, ops.zeros_like(units))
        flux = ops.einsum("nhwb,hwr->nrb", units, ops.convert_to_tensor(self._masks))
        mags = ops.arcsinh(flux)
        colours = mags[:, :, :-1] - mags[:, :, 1:]
        return ops.concatenate([ops.reshape(mags, (-1, self.n_mags)), ops.reshape(colours, (-1, self.n_colours))], 1)

    @property
    def n_mags(self) -> int:
        return len(self.radii) * len(self.scale)

    @property
    def n_colours(self) -> int:
        return len(self.radii) * (len(self.scale) - 1)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.n_mags + self.n_colours)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(offset=self.offset, scale=self.scale, radii=self.radii)
        return config


def aperture_masks(height: int, width: int, radii: Sequence[float]) -> np.ndarray:
    """(H, W, R) booleans as float64: pixel centres within each radius of the cutout centre ((size - 1) / 2)."""
    yy, xx = np.mgrid[:height, :width]
    distance = np.hypot(yy - (height - 1) / 2, xx - (width - 1) / 2)
    return np.stack([distance <= r for r in radii], axis=-1).astype(np.float64)
