"""The one stretch every object is drawn with: y = asinh((x - sky) / (3 sky sigma)), per band."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..steps.stats import BandStats
from .preview_source import Source

SOFTENING_K = 3.0  # s_b = k * sky sigma, as in the stored transform
DISPLAY_LOW = -1.0  # asinh units: about 3.5 sky sigma below the sky level
DEFAULT_DISPLAY_HIGH = 6.0  # used when no 99.9th percentile is known


@dataclass
class Softening:
    """The one stretch used for every object: y = asinh((x - offset) / scale), per band."""

    offset: np.ndarray  # (B,) maggies
    scale: np.ndarray  # (B,) maggies
    high: np.ndarray  # (B,) display ceiling, asinh units
    source: str  # where the numbers come from, for captions and the summary

    def apply(self, images: np.ndarray) -> np.ndarray:
        return np.arcsinh((images - self.offset.astype(np.float32)) / self.scale.astype(np.float32))

    def describe(self, bands: Sequence[str]) -> dict:
        return {
            "source": self.source,
            "formula": "asinh((x - offset) / scale), scale = 3 sky sigma",
            "bands": {
                b: {"offset": float(o), "scale": float(s), "display": [DISPLAY_LOW, float(h)]}
                for b, o, s, h in zip(bands, self.offset, self.scale, self.high)
            },
        }


def softening(source: Source, drawn: np.ndarray) -> Softening:
    """From the stored statistics when present, else from the drawn cutouts."""
    if source.stats is not None and all(b in source.stats["bands"] for b in source.bands):
        summary, note = source.stats, f"stored statistics of the {source.stats.get('split', 'train')} split"
    else:
        acc = BandStats(n_bands=len(source.bands))
        acc.update(drawn)
        summary = acc.summary(bands=source.bands, softening_k=SOFTENING_K)
        note = f"computed from the {len(drawn)} drawn cutouts (no stored statistics)"
    offset, scale, high = [], [], []
    for band in source.bands:
        entry = summary["bands"][band]
        transform = entry.get("transform") or {}
        o = transform.get("offset")
        o = 0.0 if o is None or not math.isfinite(o) else float(o)
        s = _first_positive(transform.get("scale"), _times(SOFTENING_K, entry.get("mad_sigma")), entry.get("std"))
        top = (entry.get("quantiles") or {}).get("p99.9")
        h = math.asinh((top - o) / s) if top is not None and math.isfinite(top) else DEFAULT_DISPLAY_HIGH
        offset.append(o)
        scale.append(s)
        high.append(max(h, DISPLAY_LOW + 2.0))
    return Softening(np.array(offset), np.array(scale), np.array(high), note)


def _times(k: float, value: float | None) -> float | None:
    return None if value is None else k * value


def _first_positive(*values: float | None) -> float:
    for v in values:
        if v is not None and math.isfinite(v) and v > 0:
            return float(v)
    return 1.0  # constant images: any scale shows them the same
