"""Reading one object's band files into one (H, W, bands) float32 image; runs in worker processes.

Each file is checked before its pixels are used: the header must not name
another band, and its WCS must put the object where the cutout generator
(astropy `Cutout2D`) put it, which also fixes where a cutout trimmed at a
tile edge sits in the full-size image. Nothing here decides a policy's
outcome silently: every padding, crop or drop comes back as a named event.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from ..errors import CutoutFileError
from .options import Policies

BAND_KEYWORDS = ("FILTER", "FILTNAME", "FILTER1", "BAND")
_ORIGIN_SLACK = 1e-6  # pixels: a position this close to a pixel edge may round either way in Cutout2D


@dataclass
class ObjectTask:
    """One object's files (None: no file in that band) and the position each file's name prints."""

    row: int
    files: list[str | None]
    positions: list[tuple[float, float] | None]
    filled: list[str] = field(default_factory=list)  # why bands without a file are NaN (counted if the row is kept)


@dataclass
class ChunkResult:
    """The kept images of a chunk of objects, and what happened to each object."""

    kept_rows: list[int] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    dropped: dict[int, str] = field(default_factory=dict)  # row -> reason
    kept_changed: dict[str, int] = field(default_factory=dict)  # reason -> kept objects a policy changed
    max_relative_rounding: float = 0.0
    files_read: int = 0
    bytes_read: int = 0


def read_chunk(tasks: list[ObjectTask], bands: list[str], shape: tuple[int, int], policies: Policies) -> ChunkResult:
    """Read every object of the chunk; a file that contradicts its name raises CutoutFileError."""
    result = ChunkResult()
    for task in tasks:
        image = np.full((*shape, len(bands)), np.nan, dtype=np.float32)
        reasons: list[str] = list(task.filled)
        for b, (path, position) in enumerate(zip(task.files, task.positions)):
            if path is None or position is None:
                continue
            plane, event = _read_band(Path(path), bands[b], bands, position, shape, policies, result)
            if event:
                reasons.append(event)
            if plane is not None:
                image[:, :, b] = plane
        dropping = [r for r in reasons if r.startswith("dropped_")]
        if dropping:
            result.dropped[task.row] = dropping[0].removeprefix("dropped_")
            continue
        for reason in dict.fromkeys(reasons):
            result.kept_changed[reason] = result.kept_changed.get(reason, 0) + 1
        result.kept_rows.append(task.row)
        result.images.append(image)
    return result


def _read_band(
    path: Path,
    band: str,
    bands: list[str],
    position: tuple[float, float],
    shape: tuple[int, int],
    policies: Policies,
    result: ChunkResult,
) -> tuple[np.ndarray | None, str]:
    """The file's pixels on the (H, W) grid of the object (or None when dropped), and the policy event if any."""
    data, header = _open(path)
    result.files_read += 1
    result.bytes_read += data.nbytes
    _check_band(path, header, band, bands)
    origin = _box_origin(path, header, position, data.shape, shape)
    event = _size_event(data.shape, shape, policies)
    if event.startswith("dropped_"):
        return None, event
    plane = np.full(shape, np.nan, dtype=np.float32)
    (oy, ox), (h, w) = origin, data.shape
    y0, y1, x0, x1 = max(0, oy), min(h, oy + shape[0]), max(0, ox), min(w, ox + shape[1])
    plane[y0 - oy : y1 - oy, x0 - ox : x1 - ox] = _to_float32(path, data[y0:y1, x0:x1], result)
    return plane, event


def _open(path: Path) -> tuple[np.ndarray, fits.Header]:
    try:
        with fits.open(path, memmap=False) as hdus:
            hdu = next((h for h in hdus if h.data is not None and h.is_image), None)
            if hdu is None:
                raise CutoutFileError(f"{path}: holds no image")
            data, header = np.asarray(hdu.data, dtype=np.float64), hdu.header
    except CutoutFileError:
        raise
    except Exception as exc:  # astropy raises OSError, ValueError, TypeError... for a broken FITS file
        raise CutoutFileError(f"{path}: cannot read the cutout ({str(exc).splitlines()[0]})") from exc
    if data.ndim != 2:
        raise CutoutFileError(f"{path}: image has {data.ndim} dimensions, not 2")
    return data, header


def _check_band(path: Path, header: fits.Header, band: str, bands: list[str]) -> None:
    """The first band keyword present must name this band (as a word: 'OCAM_r_SDSS' names r)."""
    keyword = next((k for k in BAND_KEYWORDS if k in header), None)
    if keyword is None:
        return
    value = str(header[keyword]).strip()
    words = {w.lower() for w in re.split(r"[^A-Za-z0-9]+", value) if w}
    if band.lower() not in words:
        others = sorted(b for b in bands if b.lower() in words)
        holds = f"band {others[0]}" if others else f"'{value}'"
        raise CutoutFileError(f"{path}: header {keyword} = '{value}' says it holds {holds}, not band {band}")


def _box_origin(
    path: Path, header: fits.Header, position: tuple[float, float], file_shape: tuple[int, ...], shape: tuple[int, int]
) -> tuple[int, int]:
    """Where the object's full (H, W) box starts in the file's pixels, from its WCS; CutoutFileError if it cannot fit."""
    wcs = _celestial_wcs(path, header)
    x, y = wcs.all_world2pix([[position[0], position[1]]], 0)[0]
    origin = (_axis_origin(y, file_shape[0], shape[0]), _axis_origin(x, file_shape[1], shape[1]))
    if origin[0] is None or origin[1] is None:
        raise CutoutFileError(
            f"{path}: its WCS puts RA {position[0]} Dec {position[1]} at pixel ({x:.2f}, {y:.2f}) of a "
            f"{file_shape[1]}x{file_shape[0]} cutout, not where a {shape[1]}x{shape[0]} cutout of that object has it"
        )
    return origin[0], origin[1]


def _celestial_wcs(path: Path, header: fits.Header) -> WCS:
    """The header's celestial WCS; wcslib's fixes of non-standard headers (a third of the time) only when needed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header, fix=False)
            if not wcs.has_celestial:
                wcs = WCS(header)
        except (ValueError, KeyError, TypeError):  # wcslib's errors are ValueErrors
            try:
                wcs = WCS(header)
            except (ValueError, KeyError, TypeError) as exc:
                raise CutoutFileError(f"{path}: unreadable WCS in the header ({str(exc).splitlines()[0]})") from exc
    if not wcs.has_celestial:
        raise CutoutFileError(f"{path}: no celestial WCS in the header, so the cutout's position cannot be checked")
    return wcs if wcs.naxis == 2 and wcs.is_celestial else wcs.celestial


def _axis_origin(pixel: float, file_length: int, length: int) -> int | None:
    """Cutout2D's box start (ceil(p - n/2)); the file must lie in the box (trimmed) or the box in the file (larger)."""
    if not math.isfinite(pixel):
        return None
    for slack in (0.0, -_ORIGIN_SLACK, _ORIGIN_SLACK):
        origin = math.ceil(pixel - length / 2 + slack)
        inside = origin <= 0 and origin + length >= file_length if file_length <= length else True
        holds = origin >= 0 and origin + length <= file_length if file_length >= length else True
        if inside and holds:
            return origin
    return None


def _size_event(file_shape: tuple[int, ...], shape: tuple[int, int], policies: Policies) -> str:
    """'' for the right size; else what the size policies make of it (a name starting 'dropped_' drops the object)."""
    smaller = any(f < s for f, s in zip(file_shape, shape))
    larger = any(f > s for f, s in zip(file_shape, shape))
    if smaller and policies.smaller == "drop":
        return "dropped_trimmed_at_edge"
    if larger and policies.larger == "drop":
        return "dropped_larger_than_size"
    if smaller:
        return "padded_trimmed_at_edge"
    return "cropped_larger_than_size" if larger else ""


def _to_float32(path: Path, pixels: np.ndarray, result: ChunkResult) -> np.ndarray:
    """float32 pixels; the largest relative rounding is recorded; a finite value beyond float32's range is an error."""
    single = pixels.astype(np.float32)
    finite = np.isfinite(pixels)
    if not np.isfinite(single[finite]).all():
        raise CutoutFileError(f"{path}: pixel values beyond float32's range (|x| > 3.4e38)")
    nonzero = finite & (pixels != 0)
    if nonzero.any():
        error = np.abs(single[nonzero].astype(np.float64) - pixels[nonzero]) / np.abs(pixels[nonzero])
        result.max_relative_rounding = max(result.max_relative_rounding, float(error.max()))
    return single
