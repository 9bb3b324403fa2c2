"""The flux-preserving transform in plain numpy, for any framework (PyTorch, JAX, numpy).

    >>> from cutout_etl import open_dataset                       # doctest: +SKIP
    >>> from cutout_etl.transform import FluxTransform            # doctest: +SKIP
    >>> ds = open_dataset("dataset.h5")                           # doctest: +SKIP
    >>> transform = FluxTransform.from_dataset(ds)                # doctest: +SKIP
    >>> images, labels = ds["train"][0:256]                       # doctest: +SKIP
    >>> x = transform(images)                                     # doctest: +SKIP

`FluxTransform.from_dataset` is the one place the constants are taken from a
dataset's statistics; the Keras layer (`cutout_etl.ml.preprocessing`) is built
from it and computes the same values.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .dataset import Dataset, open_dataset
from .errors import CutoutEtlError

MODES = ("asinh", "robust", "none")
DEFAULT_ROBUST_CLIP = 1000.0


class PreprocessingError(CutoutEtlError, ValueError):
    """The stored statistics cannot give the requested transform."""


@dataclass(frozen=True)
class FluxTransform:
    """Per-band flux transform with fixed constants, computed in float32 (picklable: use it in DataLoader workers).

    ``mode="asinh"``: y = asinh((x - offset_b) / scale_b); ``"robust"``:
    y = clip((x - offset_b) / scale_b, -clip, clip); ``"none"``: no per-band
    transform, y = x / scale with one ``scale`` for every band (a tuple of one
    float; without it y = x, which leaves pixels of ~1e-12 that a network
    initialised for unit inputs does not learn from). In every mode pixels
    that are NaN or +-inf in the input (or overflow) come out as 0, the
    background-subtracted sky level. Bands are the last axis. With
    ``mask_channel`` one channel is appended: 1 where any band's input pixel
    was NaN or +-inf (filled with 0), else 0.
    """

    mode: str = "asinh"
    offset: tuple[float, ...] | None = None
    scale: tuple[float, ...] | None = None
    clip: float | None = None
    bands: tuple[str, ...] | None = None
    mask_channel: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)} (got {self.mode!r})")
        if self.mode == "none":  # one global scale at most; offsets unused, not kept
            object.__setattr__(self, "offset", None)
            object.__setattr__(self, "scale", global_scale(self.scale))
            return
        offset, scale = check_constants(self.mode, self.offset, self.scale, self.bands)
        object.__setattr__(self, "offset", tuple(offset))
        object.__setattr__(self, "scale", tuple(scale))
        if self.mode == "robust" and not (self.clip is not None and self.clip > 0 and math.isfinite(self.clip)):
            raise ValueError(f"robust mode needs a finite clip > 0 (got {self.clip!r})")

    @classmethod
    def from_dataset(
        cls,
        dataset: Dataset | str | os.PathLike[str],
        mode: str = "asinh",
        clip: float = DEFAULT_ROBUST_CLIP,
        mask_channel: bool = False,
    ) -> FluxTransform:
        """The transform of a dataset, from its stored training statistics.

        ``asinh``: per band offset m_b and scale k * sigma_b from ``transform``
        (sky median and sky noise of the training split, k = 3 by default).
        ``robust``: offset = median of all training pixels (``quantiles.p50``),
        scale = ``mad_sigma``, clipped to +-``clip``. ``none``: the flux divided
        by one constant, the median over bands of the training sky noise.
        Raises `PreprocessingError` when the statistics are missing, come from
        another split than train, or give no usable scale (zero sky noise).
        """
        if mode not in MODES:
            raise PreprocessingError(f"mode must be one of {', '.join(MODES)} (got {mode!r})")
        if isinstance(dataset, Dataset):
            transform = _from_dataset(dataset, mode, clip)
        else:
            with open_dataset(Path(dataset)) as ds:
                transform = _from_dataset(ds, mode, clip)
        return replace(transform, mask_channel=mask_channel)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """The transformed images: float32, every value finite; the input's shape (one more channel with the mask)."""
        x = np.asarray(images, dtype=np.float32)
        if self.mode == "none":
            with np.errstate(over="ignore", invalid="ignore"):
                y = x.copy() if self.scale is None else x / np.float32(self.scale[0])
        elif self.offset is not None and self.scale is not None:
            offset, scale = np.asarray(self.offset, np.float32), np.asarray(self.scale, np.float32)
            if x.shape[-1:] != offset.shape:
                raise ValueError(f"constants for {len(offset)} bands, got input with {x.shape[-1:]} on the last axis")
            with np.errstate(over="ignore", invalid="ignore"):  # overflow and NaN become 0 below
                y = (x - offset) / scale
                if self.mode == "asinh":
                    y = np.arcsinh(y)
                elif self.clip is not None:  # robust: __post_init__ checked that clip is set
                    y = np.clip(y, np.float32(-self.clip), np.float32(self.clip))
        y[~(np.isfinite(x) & np.isfinite(y))] = 0
        if not self.mask_channel:
            return y
        invalid = ~np.isfinite(x).all(axis=-1, keepdims=True)
        return np.concatenate([y, invalid.astype(np.float32)], axis=-1)


def global_scale(scale: Sequence[float] | None) -> tuple[float] | None:
    """Mode none's one scale for every band, as a tuple of one float; ValueError unless finite and > 0."""
    if scale is None:
        return None
    values = [float(v) for v in scale]
    if len(values) != 1 or not (math.isfinite(values[0]) and values[0] > 0):
        raise ValueError(f"mode 'none' takes one global scale, finite and > 0 (got {scale!r})")
    return (values[0],)


def check_constants(
    mode: str, offset: Sequence[float] | None, scale: Sequence[float] | None, bands: Sequence[str] | None
) -> tuple[list[float], list[float]]:
    """Offsets and scales as floats, one per band; ValueError unless offsets are finite and scales finite and > 0."""
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


def _from_dataset(ds: Dataset, mode: str, clip: float) -> FluxTransform:
    bands = tuple(ds.bands)
    stats = ds.stats
    if not stats or "bands" not in stats:
        raise PreprocessingError(f"{ds.path}: no statistics stored; run `cutout-etl stats {ds.path}` first")
    if stats.get("split", "train") != "train":
        raise PreprocessingError(
            f"{ds.path}: stored statistics come from split {stats['split']!r}, expected 'train' "
            f"(constants from other splits leak); run `cutout-etl stats {ds.path} --split train`"
        )
    if mode == "none":
        return FluxTransform("none", scale=(_sky_noise_scale(ds, stats),), bands=bands)
    offsets, scales = zip(*(_band_constants(ds, stats, band, mode) for band in bands))
    return FluxTransform(mode, offsets, scales, clip if mode == "robust" else None, bands)


def _sky_noise_scale(ds: Dataset, stats: dict) -> float:
    sigmas = [((stats["bands"].get(b) or {}).get("sky_sigma") or {}).get("p50") for b in ds.bands]
    usable = [v for v in sigmas if v is not None and math.isfinite(v) and v > 0]
    if not usable:
        raise PreprocessingError(f"{ds.path}: no band has a sky noise > 0 to scale the flux by (got {sigmas})")
    return float(np.median(usable))


def _band_constants(ds: Dataset, stats: dict, band: str, mode: str) -> tuple[float, float]:
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
    return float(offset), float(scale)
