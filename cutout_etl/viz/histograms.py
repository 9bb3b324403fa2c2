"""The histogram PNG: per band and class, the pixel distribution and the central-flux distribution; colours."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..inputs.scan import ProgressFn
from .figure_png import DPI, figure_png, matplotlib_figure
from .preview_source import Source, read_pairs
from .softening import SOFTENING_K, Softening

APERTURE = 6  # side in pixels of the central box summed for the "central flux"
HIST_BINS = 120
HIST_LOW = -4.0  # asinh units


@dataclass
class Histograms:
    """Per class and band: pixel counts in asinh bins, and each object's central flux."""

    edges: np.ndarray  # (B, bins + 1) maggies
    counts: np.ndarray  # (C, B, bins) int64
    central: list[np.ndarray]  # per class, (n, B) float64 maggies, sky subtracted
    objects: dict[str, int]


def central_flux(images: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Sum of the central APERTURE x APERTURE pixels minus the sky, (N, B) float64; NaN pixels count as sky."""
    h, w = images.shape[1:3]
    a = APERTURE - (h % 2)
    y0, x0 = (h - a) // 2, (w - a) // 2
    box = images[:, y0 : y0 + a, x0 : x0 + a].astype(np.float64) - offset
    return np.where(np.isfinite(box), box, 0.0).sum(axis=(1, 2))


def collect_histograms(
    source: Source, soft: Softening, picks: list[np.ndarray], chunk_rows: int, progress: ProgressFn
) -> Histograms:
    """One pass over the drawn rows, `progress("histogram", done, total)` per chunk.

    Pixels are first counted by the top 16 bits of their float32 pattern (as
    in `stats`: bins 2**-8 of the value wide, no transcendental per pixel),
    then each such bin goes by its midpoint into the asinh bins.
    """
    n_classes, n_bands = len(source.classes), len(source.bands)
    pairs = np.concatenate(picks) if picks else np.empty((0, 2), np.int64)
    codes = np.concatenate([np.full(len(p), c) for c, p in enumerate(picks)]).astype(np.uint32)
    central = np.zeros((len(pairs), n_bands))
    bits = np.zeros(n_classes * n_bands << 16, np.int64)
    band_key = np.arange(n_bands, dtype=np.uint32) << 16
    for part, images, _ in read_pairs(source, pairs, chunk_rows, progress, "histogram"):
        central[part] = central_flux(images, soft.offset)
        key = np.ascontiguousarray(images, dtype=np.float32).view(np.uint32) >> 16
        key += band_key
        key += (codes[part] * np.uint32(n_bands << 16))[:, None, None, None]
        bits += np.bincount(key.ravel(), minlength=bits.size)
    u_edges = np.linspace(HIST_LOW, float(soft.high.max()) + 3.0, HIST_BINS + 1)
    counts = _asinh_bins(bits.reshape(n_classes, n_bands, 1 << 16), soft, u_edges)
    edges = soft.offset[:, None] + soft.scale[:, None] * np.sinh(u_edges)[None, :]
    per_class = [central[codes == c] for c in range(n_classes)]
    return Histograms(edges, counts, per_class, {c: len(p) for c, p in zip(source.classes, per_class)})


def _asinh_bins(bits: np.ndarray, soft: Softening, u_edges: np.ndarray) -> np.ndarray:
    """(C, B, 65536) counts by float32 top bits -> (C, B, bins) counts in asinh bins (ends clipped in)."""
    top = np.arange(1 << 16, dtype=np.uint32)
    finite = (top & 0x7F80) != 0x7F80  # exponent all ones: inf and NaN, not counted
    middle = ((top[finite] << 16) | np.uint32(0x8000)).view(np.float32).astype(np.float64)
    n_bins = len(u_edges) - 1
    out = np.zeros((*bits.shape[:2], n_bins), np.int64)
    du = u_edges[1] - u_edges[0]
    for b in range(bits.shape[1]):
        u = np.arcsinh((middle - soft.offset[b]) / soft.scale[b])
        target = np.clip(np.floor((u - u_edges[0]) / du), 0, n_bins - 1).astype(np.int64)
        for c in range(bits.shape[0]):
            out[c, b] = np.bincount(target, weights=bits[c, b][finite], minlength=n_bins).astype(np.int64)
    return out


def luptitudes(flux: np.ndarray, softening_flux: np.ndarray) -> np.ndarray:
    """Asinh magnitudes (Lupton, Gunn & Szalay 1999) of fluxes in maggies, softening b per band."""
    b = softening_flux
    return -2.5 / math.log(10) * (np.arcsinh(flux / (2 * b)) + np.log(b))


def render_histograms(source: Source, soft: Softening, hist: Histograms, title: str) -> bytes:
    """Per band: pixel distribution and central-flux distribution, one curve per class; plus colours."""
    Figure = matplotlib_figure()
    n_bands, n_classes = len(source.bands), len(source.classes)
    colour = n_bands >= 3
    ncols = n_bands + (1 if colour else 0)
    fig = Figure(figsize=(2.9 * ncols, 5.8), dpi=DPI)
    axes = fig.subplots(2, ncols, squeeze=False)
    fig.subplots_adjust(left=0.055, right=0.99, bottom=0.09, top=0.9, wspace=0.28, hspace=0.42)
    sigma_ap = soft.scale / SOFTENING_K * APERTURE  # aperture noise for uncorrelated pixels
    u_edges = np.arcsinh((hist.edges - soft.offset[:, None]) / soft.scale[:, None])
    for b, band in enumerate(source.bands):
        top, bottom = axes[0, b], axes[1, b]
        used = np.flatnonzero(hist.counts[:, b].sum(axis=0))
        for c, name in enumerate(source.classes):
            total = hist.counts[c, b].sum()
            if total:
                top.stairs(hist.counts[c, b] / total, u_edges[b], color=f"C{c % 10}", label=name)
        if len(used):
            top.set_xlim(u_edges[b, used[0]] - 0.5, u_edges[b, used[-1] + 1] + 0.5)
        top.set_yscale("log")
        _asinh_axis(top, float(soft.scale[b]))
        top.set_title(f"{band}: pixels", fontsize=9)
        top.set_xlabel("pixel value - sky (maggies, asinh axis)", fontsize=7.5)
        flux_u = [np.arcsinh(hist.central[c][:, b] / sigma_ap[b]) for c in range(n_classes)]
        every = np.concatenate(flux_u)
        if len(every):
            fewest = min(len(f) for f in flux_u if len(f))
            edges = np.linspace(every.min(), every.max() + 1e-9, int(np.clip(1.5 * math.sqrt(fewest), 10, 40)) + 1)
            for c, name in enumerate(source.classes):
                if len(flux_u[c]):
                    values, _ = np.histogram(flux_u[c], edges)
                    bottom.stairs(values / len(flux_u[c]), edges, color=f"C{c % 10}", label=name)
        _asinh_axis(bottom, float(sigma_ap[b]))
        bottom.set_title(f"{band}: central {APERTURE}x{APERTURE} px flux", fontsize=9)
        bottom.set_xlabel("flux - sky (maggies, asinh axis)", fontsize=7.5)
        for ax in (top, bottom):
            ax.tick_params(labelsize=6.5)
    axes[0, 0].set_ylabel("fraction of pixels per bin", fontsize=8)
    axes[1, 0].set_ylabel("fraction of objects per bin", fontsize=8)
    if colour:
        _colour_panels(axes[:, -1], source, hist, sigma_ap)
    axes[0, 0].legend(fontsize=7, frameon=False)
    objects = ", ".join(f"{c} {n}" for c, n in hist.objects.items())
    fig.suptitle(f"{title}  ({objects} objects; softening: {soft.source})", fontsize=9)
    return figure_png(fig)


def _colour_panels(axes: Any, source: Source, hist: Histograms, sigma_ap: np.ndarray) -> None:
    """Colour-colour diagrams of the central fluxes: u-g vs g-r, and g-r vs r-i with four bands."""
    n_bands, bands = len(source.bands), source.bands
    mags = [luptitudes(hist.central[c], sigma_ap) for c in range(len(source.classes))]
    for row, (i, j, k) in enumerate([(0, 1, 2), (1, 2, 3)][: 1 + (n_bands >= 4)]):
        ax = axes[row]
        for c, name in enumerate(source.classes):
            m = mags[c]
            ax.scatter(
                m[:, j] - m[:, k],
                m[:, i] - m[:, j],
                s=2,
                alpha=0.5,
                color=f"C{c % 10}",
                label=name,
                rasterized=True,
                linewidths=0,
            )
        ax.set_xlabel(f"{bands[j]} - {bands[k]}", fontsize=8)
        ax.set_ylabel(f"{bands[i]} - {bands[j]}", fontsize=8)
        ax.set_title("colours (central flux, asinh mag)", fontsize=9)
        ax.tick_params(labelsize=6.5)
    if n_bands < 4:
        axes[1].set_visible(False)


def _asinh_axis(ax: Any, width: float, spacing: float = 1.6) -> None:
    """Label an axis drawn in u = asinh(value / width) with the values: 0 and +-powers of ten."""
    lo, hi = ax.get_xlim()
    ticks, labels = [0.0], ["0"]
    for sign in (1, -1):
        last = 0.0
        for k in range(-20, 5):
            u = sign * math.asinh(10.0**k / width)
            if lo <= u <= hi and abs(u - last) >= spacing:
                ticks.append(u)
                labels.append(("$-" if sign < 0 else "$") + f"10^{{{k}}}$")
                last = u
    ax.set_xticks(ticks, labels)
    ax.set_xlim(lo, hi)
