"""The grid PNG: one row per drawn object, one column per band (fixed stretch) plus the colour composite."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import UsageError
from ..inputs.scan import ProgressFn
from .figure_png import DPI, encode_png, figure_rgb, matplotlib_figure
from .preview_source import Source, read_pairs
from .softening import DISPLAY_LOW, Softening

LUPTON_Q = 8.0
ZOOM = 2  # screen pixels per image pixel in the grid
GAP, CLASS_GAP = 4, 14  # screen pixels between cells, and between classes
BAD_RGB = (230, 40, 160)  # NaN/inf pixels in the grid


@dataclass
class Grid:
    """The drawn objects, in display order (grouped by class)."""

    images: np.ndarray  # (N, H, W, B) float32
    ids: list[str]
    codes: np.ndarray  # (N,) class index
    where: list[str]  # "file.hdf5 #row" or "train #row"
    rows: list[int]


def read_grid(source: Source, picks: list[np.ndarray], chunk_rows: int, progress: ProgressFn) -> Grid:
    pairs = np.concatenate(picks) if picks else np.empty((0, 2), np.int64)
    if len(pairs) == 0:
        raise UsageError(f"{source.name}: no rows to preview (no row has a class label)")
    codes = np.concatenate([np.full(len(p), c) for c, p in enumerate(picks)])
    h, w, b = source.image_shape
    images = np.empty((len(pairs), h, w, b), np.float32)
    ids = [""] * len(pairs)
    for part, chunk, chunk_ids in read_pairs(source, pairs, chunk_rows, progress, "preview"):
        images[part] = chunk
        for i, v in zip(part, chunk_ids):
            ids[i] = v
    where = [f"{source.tables[t].label} #{r}" for t, r in pairs]
    return Grid(images, ids, codes, where, [int(r) for r in pairs[:, 1]])


def composite_bands(bands: Sequence[str]) -> tuple[int, int, int] | None:
    """Band indices for red, green, blue: i, r, g when named so, else the last three reversed."""
    if all(b in bands for b in "irg"):
        return bands.index("i"), bands.index("r"), bands.index("g")
    if len(bands) >= 3:
        n = len(bands)
        return n - 1, n - 2, n - 3
    return None


def lupton_stretch(soft: Softening, rgb: tuple[int, int, int]) -> float:
    """make_lupton_rgb's `stretch` for a softening (stretch / Q) equal to the mean band scale."""
    return LUPTON_Q * float(np.mean(soft.scale[list(rgb)]))


def band_cells(images: np.ndarray, soft: Softening) -> np.ndarray:
    """(N, H, W, B) fluxes -> (N, B, H, W, 3) uint8 grey cells, one fixed stretch per band."""
    y = soft.apply(images)
    level = (y - DISPLAY_LOW) / (soft.high.astype(np.float32) - DISPLAY_LOW)
    grey = np.round(np.clip(np.nan_to_num(level, nan=0.0), 0.0, 1.0) * 255).astype(np.uint8)
    cells = np.repeat(np.moveaxis(grey, -1, 1)[..., None], 3, axis=-1)
    cells[np.moveaxis(~np.isfinite(images), -1, 1)] = BAD_RGB
    return cells


def colour_cells(images: np.ndarray, soft: Softening, rgb: tuple[int, int, int]) -> np.ndarray:
    """(N, H, W, B) fluxes -> (N, H, W, 3) uint8 Lupton composites, one fixed stretch."""
    from astropy.visualization import make_lupton_rgb

    stretch = lupton_stretch(soft, rgb)
    sky = np.nan_to_num(images - soft.offset.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 where the intensity is 0; astropy then uses 0
        return np.stack(
            [
                make_lupton_rgb(
                    im[..., rgb[0]], im[..., rgb[1]], im[..., rgb[2]], minimum=0.0, stretch=stretch, Q=LUPTON_Q
                )
                for im in sky
            ]
        )


@dataclass
class GridLayout:
    """Where everything sits in the grid PNG (pixels, origin top left)."""

    width: int
    height: int
    cells: list[list[tuple[int, int, int, int]]]  # per object, per column: (x0, y0, x1, y1)
    columns: list[str] = field(default_factory=list)


def _grid_layout(n_rows: int, codes: np.ndarray, n_cols: int, size: int) -> tuple[GridLayout, int, int]:
    cell = size * ZOOM
    left, top, right, bottom = 236, 58, 12, 74
    ys, y = [], top
    for i in range(n_rows):
        if i and codes[i] != codes[i - 1]:
            y += CLASS_GAP - GAP
        ys.append(y)
        y += cell + GAP
    height = y - GAP + bottom
    width = left + n_cols * (cell + GAP) - GAP + right
    cells = [
        [(left + j * (cell + GAP), y0, left + j * (cell + GAP) + cell, y0 + cell) for j in range(n_cols)] for y0 in ys
    ]
    return GridLayout(width, height, cells), left, top


def render_grid(source: Source, grid: Grid, soft: Softening, title: str) -> tuple[bytes, GridLayout]:
    """The grid as PNG bytes: one row per object, one column per band plus the composite."""
    Figure = matplotlib_figure()
    n, h = grid.images.shape[:2]
    rgb = composite_bands(source.bands)
    cells = band_cells(grid.images, soft)  # (N, B, H, W, 3)
    if rgb is not None:
        cells = np.concatenate([cells, colour_cells(grid.images, soft, rgb)[:, None]], axis=1)
    columns = list(source.bands) + ([f"{''.join(source.bands[i] for i in rgb)} colour"] if rgb else [])
    layout, left, top = _grid_layout(n, grid.codes, len(columns), h)
    layout.columns = columns
    fig = Figure(figsize=(layout.width / DPI, layout.height / DPI), dpi=DPI)

    def at(x: float, y: float) -> tuple[float, float]:  # PNG pixels (top left) -> figure fraction
        return x / layout.width, 1 - y / layout.height

    fig.text(*at(8, 8), title, fontsize=9.5, fontweight="bold", va="top")
    for j, name in enumerate(columns):
        x0, _, x1, _ = layout.cells[0][j]
        sub = "Lupton" if j >= len(source.bands) else f"s={soft.scale[j]:.2g}"
        fig.text(*at((x0 + x1) / 2, top - 18), name, fontsize=9, fontweight="bold", ha="center", va="bottom")
        fig.text(*at((x0 + x1) / 2, top - 4), sub, fontsize=6.5, color="0.35", ha="center", va="bottom")
    for i in range(n):
        _, y0, _, y1 = layout.cells[i][0]
        x, mid = left - 8, (y0 + y1) / 2
        fig.text(
            *at(x, mid - 13),
            source.classes[grid.codes[i]],
            fontsize=8.5,
            fontweight="bold",
            color=f"C{grid.codes[i] % 10}",
            ha="right",
            va="center",
        )
        fig.text(*at(x, mid), grid.ids[i], fontsize=7, family="monospace", ha="right", va="center")
        fig.text(*at(x, mid + 12), _short(grid.where[i], 40), fontsize=6, color="0.4", ha="right", va="center")
    footer = _footer(source, soft, rgb, grid.images)
    fig.text(*at(8, layout.height - 6), "\n".join(footer), fontsize=6.5, color="0.25", va="bottom", wrap=True)
    canvas = figure_rgb(fig)  # the text; the cells go in pixel for pixel (no resampling)
    for i in range(n):
        for j, (x0, y0, x1, y1) in enumerate(layout.cells[i]):
            canvas[y0:y1, x0:x1] = np.repeat(np.repeat(cells[i, j], ZOOM, axis=0), ZOOM, axis=1)
    return encode_png(canvas), layout


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else "..." + text[-(n - 3) :]


def _footer(source: Source, soft: Softening, rgb: tuple[int, int, int] | None, images: np.ndarray) -> list[str]:
    """How to read the grid: the stretch, where the softening comes from, the colour composite."""
    footer = [
        f"Each band: asinh((x - sky) / s), s = 3 sky sigma, shown from {DISPLAY_LOW:g} to the band's p99.9;"
        + " the same for every object.",
        f"Softening: {soft.source}.",
    ]
    if rgb is not None:
        footer.append(
            f"Colour: make_lupton_rgb({', '.join(source.bands[i] for i in rgb)}), Q={LUPTON_Q:g}, "
            f"stretch={lupton_stretch(soft, rgb):.2g} maggies, same for every object."
        )
    if not np.isfinite(images).all():
        footer.append("NaN/inf pixels in magenta.")
    return footer
