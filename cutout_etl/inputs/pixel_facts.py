"""Per-row facts of the pixels, computed on a chunk of images already in memory.

The one place that defines them, for the scan pass (`scan.py`), `inspect` and `verify`:
- `image_digests`: an xxh3-128 of each image's bytes as written (little-endian float32, the
  output's type), so two rows have equal digests exactly when their stored images are identical
  (up to a 2^-128 collision). 16 bytes a row are kept, never the images.
- `aperture_flux`: the flux of one band inside a circle of APERTURE_RADIUS_PX pixels around the
  cutout centre, the brightness the faint-end test split ranks objects by.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xxhash

from ..errors import UsageError

DIGEST_DTYPE = np.dtype("S16")
APERTURE_BAND = "r"
APERTURE_RADIUS_PX = 3.0


def image_digests(images: np.ndarray) -> np.ndarray:
    """xxh3-128 of each row's image as little-endian float32 (what the output stores), as 16-byte strings."""
    stored = np.ascontiguousarray(images, dtype="<f4")
    digest = xxhash.xxh3_128_digest
    joined = b"".join([digest(image.data) for image in stored])
    return np.frombuffer(joined, dtype=DIGEST_DTYPE).copy() if len(stored) else np.zeros(0, DIGEST_DTYPE)


def aperture_mask(height: int, width: int, radius: float = APERTURE_RADIUS_PX) -> np.ndarray:
    """Pixels whose centre lies within `radius` pixels of the cutout centre ((h - 1) / 2, (w - 1) / 2)."""
    y, x = np.mgrid[0:height, 0:width]
    return (y - (height - 1) / 2) ** 2 + (x - (width - 1) / 2) ** 2 <= radius * radius


def aperture_band_index(bands: Sequence[str], band: str = APERTURE_BAND) -> int | None:
    """The index of the aperture band in `bands`, None if the images have no such band."""
    return list(bands).index(band) if band in bands else None


def require_aperture_band(bands: Sequence[str], option: str, band: str = APERTURE_BAND) -> int:
    """The index of the aperture band; UsageError naming `option` if the images have none."""
    index = aperture_band_index(bands, band)
    if index is None:
        raise UsageError(
            f"{option}: needs the '{band}' band for the aperture flux; the images' bands are {', '.join(bands)}"
        )
    return index


def aperture_flux(images: np.ndarray, band: int | None) -> np.ndarray:
    """Float64 sum of band `band` inside the central aperture, non-finite pixels left out.

    NaN where the aperture has no finite pixel, or for every row when `band` is None (no such band).
    """
    if band is None:
        return np.full(len(images), np.nan)
    mask = aperture_mask(*images.shape[1:3])
    pixels = images[:, mask, band].astype(np.float64)
    finite = np.isfinite(pixels)
    flux = np.where(finite, pixels, 0.0).sum(axis=1)
    flux[~finite.any(axis=1)] = np.nan
    return flux
