"""`cutout-etl preview`: the cutouts band by band, and their flux distributions.

The input is one built dataset (rows drawn from one split) or class files.
Only the drawn rows are read: labels come from the label column alone, then
the images of the drawn rows are read by index (`readers.RowReader`).

Every object is drawn with the same stretch, so brightness and colour
differences stay visible: per band b, y = asinh((x - m_b) / s_b) with m_b the
sky level and s_b = 3 sky sigma, the dataset's stored statistics when present
(else computed on the fly from the drawn cutouts), shown from y = -1 to a
per-band ceiling (the stored 99.9th percentile of the pixels). The colour
composite is `astropy.visualization.make_lupton_rgb` of the sky-subtracted
fluxes of i, r, g (AB maggies share one zero point, so colours are true) with
one fixed softening.

matplotlib (the `plot` extra) is imported only when drawing, through its
object API and the Agg canvas: no pyplot, no global state.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .. import formats
from ..dataset import open_dataset
from ..errors import CutoutEtlError, DatasetError, InputFileError, OutputWriteError, UsageError
from ..formats import atomic
from ..formats.hdf5 import has_metadata
from ..inputs import readers
from ..inputs.scan import ProgressFn, ReadOptions, no_progress, open_inputs
from ..schema import Columns, as_bytes, band_names
from ..steps.merge import encode_labels, normalize_labels
from ..steps.stats import BandStats

DEFAULT_PER_CLASS = 6
MAX_PER_CLASS = 50
DEFAULT_HIST_PER_CLASS = 2000
SOFTENING_K = 3.0  # s_b = k * sky sigma, as in the stored transform
DISPLAY_LOW = -1.0  # asinh units: about 3.5 sky sigma below the sky level
DEFAULT_DISPLAY_HIGH = 6.0  # used when no 99.9th percentile is known
LUPTON_Q = 8.0
APERTURE = 6  # side in pixels of the central box summed for the "central flux"
ZOOM = 2  # screen pixels per image pixel in the grid
GAP, CLASS_GAP = 4, 14  # screen pixels between cells, and between classes
DPI = 100
BAD_RGB = (230, 40, 160)  # NaN/inf pixels in the grid
HIST_BINS = 120
HIST_LOW = -4.0  # asinh units


class PlotUnavailableError(CutoutEtlError):
    """matplotlib (the `plot` extra) is not installed."""


def _matplotlib() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailableError(
            "drawing needs matplotlib, which is not installed: pip install 'cutout-etl[plot]'"
        ) from None
    return Figure


# ---------------------------------------------------------------- inputs


@dataclass
class _Table:
    """One table rows are drawn from, open for reading by row index."""

    info: readers.TableInfo
    reader: readers.RowReader
    codes: np.ndarray  # class index per row; -1 for rows outside the classes
    label: str  # how a row is named in titles: file name, or split name

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, list[str]]:
        records = self.reader.read(rows)
        images = np.asarray(records[self.info.columns.image], dtype=np.float32)
        ids = [v.decode("utf-8", "replace") for v in as_bytes(records[self.info.columns.id])]
        return images, ids


@dataclass
class Source:
    """What the preview draws from: tables, classes, bands and any stored statistics."""

    kind: str  # "dataset" or "class files"
    name: str  # for titles
    tables: list[_Table]
    classes: list[str]
    bands: list[str]
    image_shape: tuple[int, int, int]
    split: str | None = None
    stats: dict | None = None  # stored per-band statistics (a dataset's `stats`)

    def rows_per_class(self) -> dict[str, int]:
        return {c: int(sum((t.codes == i).sum() for t in self.tables)) for i, c in enumerate(self.classes)}


def is_dataset(path: Path) -> bool:
    """A cutout-etl dataset carries its metadata in a root attribute."""
    return has_metadata(path)


def open_source(
    paths: Sequence[Path], split: str | None, read: ReadOptions, stack: contextlib.ExitStack
) -> Source:
    """Open one dataset or a set of class files; the files stay open until `stack` closes."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise UsageError("no input: give a dataset or class files")
    for path in paths:
        fmt = formats.detect(path)
        if not fmt.rows_as_input:
            raise UsageError(f"{path}: preview reads HDF5; convert a {fmt.title} dataset first (cutout-etl convert {path} dataset.h5)")
    datasets = [p for p in paths if is_dataset(p)]
    if datasets and len(paths) > 1:
        raise UsageError(f"{datasets[0]}: is a cutout-etl dataset; preview takes one dataset, or class files, not both")
    if datasets:
        return _open_dataset(paths[0], split, stack)
    if split is not None:
        raise UsageError(f"{paths[0]}: --split applies to a dataset; this is a class file")
    return _open_class_files(paths, read, stack)


def _open_dataset(path: Path, split: str | None, stack: contextlib.ExitStack) -> Source:
    with open_dataset(path) as ds:
        metadata = ds.metadata
    tables = list(metadata["tables"])
    if split is None:
        split = "train" if "train" in tables else tables[0] if len(tables) == 1 else "train"
    if split not in tables:
        raise DatasetError(f"{path}: no split '{split}' (splits: {', '.join(tables)})")
    f = stack.enter_context(readers.open_h5(path))
    info = readers.inspect_table(path, f, split, Columns())
    classes = list(metadata["classes"])
    codes = _read_field(info, f, "label").astype(np.int64)
    codes[(codes < 0) | (codes >= len(classes))] = -1
    table = _Table(info, _reader(info, f, stack), codes, split)
    stats = metadata.get("stats")
    return Source(
        kind="dataset",
        name=path.name,
        tables=[table],
        classes=classes,
        bands=list(metadata["bands"]),
        image_shape=info.image_shape,
        split=split,
        stats=stats if stats and stats.get("bands") else None,
    )


def _open_class_files(paths: list[Path], read: ReadOptions, stack: contextlib.ExitStack) -> Source:
    opened = sorted(open_inputs(paths, read, stack), key=lambda o: (o[0].name, str(o[0].path)))
    labels = [normalize_labels(_read_field(info, f, info.columns.label)) for info, f in opened]
    classes = sorted({v.decode("utf-8", "replace") for part in labels for v in np.unique(part)})
    tables = [
        _Table(info, _reader(info, f, stack), encode_labels(part, classes).astype(np.int64), info.name)
        for (info, f), part in zip(opened, labels)
    ]
    shape = opened[0][0].image_shape
    name = opened[0][0].name if len(opened) == 1 else f"{len(opened)} class files"
    return Source("class files", name, tables, classes, band_names(shape[-1]), shape)


def _reader(info: readers.TableInfo, f: h5py.File, stack: contextlib.ExitStack) -> readers.RowReader:
    reader = readers.RowReader(info, f)
    stack.callback(reader.close)
    return reader


def _read_field(info: readers.TableInfo, f: h5py.File, name: str) -> np.ndarray:
    """One column of every row (HDF5 reads the field alone, not the images)."""
    try:
        return f[info.table_path].fields(name)[:]
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        raise InputFileError(f"{info.path}: cannot read column '{name}': corrupt or truncated ({exc})") from exc


# ---------------------------------------------------------------- drawing rows


def draw(source: Source, per_class: int, seed: int, salt: int = 0) -> list[np.ndarray]:
    """Per class, up to `per_class` distinct rows as (table, row) pairs, sorted.

    Deterministic in (seed, salt): each class has its own random stream, so a
    class's draw does not depend on the others.
    """
    picks = []
    for code in range(len(source.classes)):
        pairs = np.concatenate([
            np.stack([np.full(len(rows), t), rows], axis=1)
            for t, rows in ((t, np.flatnonzero(table.codes == code)) for t, table in enumerate(source.tables))
        ])
        rng = np.random.default_rng([seed, salt, code])
        if len(pairs) > per_class:
            pairs = pairs[np.sort(rng.choice(len(pairs), size=per_class, replace=False))]
        picks.append(pairs.astype(np.int64).reshape(-1, 2))
    return picks


def _read_pairs(
    source: Source, pairs: np.ndarray, chunk_rows: int, progress: ProgressFn | None = None, stage: str = "read"
) -> Iterator[tuple[np.ndarray, np.ndarray, list[str]]]:
    """Yield (indices into `pairs`, images, ids) chunk by chunk, table by table."""
    done = 0
    for t, table in enumerate(source.tables):
        index = np.flatnonzero(pairs[:, 0] == t)
        index = index[np.argsort(pairs[index, 1], kind="stable")]
        for first in range(0, len(index), chunk_rows):
            part = index[first : first + chunk_rows]
            images, ids = table.read(pairs[part, 1])
            done += len(part)
            if progress is not None:
                progress(stage, done, len(pairs))
            yield part, images, ids


# ---------------------------------------------------------------- softening


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


# ---------------------------------------------------------------- the grid


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
    for part, chunk, chunk_ids in _read_pairs(source, pairs, chunk_rows, progress, "preview"):
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
        return np.stack([
            make_lupton_rgb(im[..., rgb[0]], im[..., rgb[1]], im[..., rgb[2]], minimum=0.0, stretch=stretch, Q=LUPTON_Q)
            for im in sky
        ])


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
    cells = [[(left + j * (cell + GAP), y0, left + j * (cell + GAP) + cell, y0 + cell) for j in range(n_cols)] for y0 in ys]
    return GridLayout(width, height, cells), left, top


def render_grid(source: Source, grid: Grid, soft: Softening, title: str) -> tuple[bytes, GridLayout]:
    """The grid as PNG bytes: one row per object, one column per band plus the composite."""
    Figure = _matplotlib()
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
        fig.text(*at(x, mid - 13), source.classes[grid.codes[i]], fontsize=8.5, fontweight="bold",
                 color=f"C{grid.codes[i] % 10}", ha="right", va="center")
        fig.text(*at(x, mid), grid.ids[i], fontsize=7, family="monospace", ha="right", va="center")
        fig.text(*at(x, mid + 12), _short(grid.where[i], 40), fontsize=6, color="0.4", ha="right", va="center")
    footer = [
        f"Each band: asinh((x - sky) / s), s = 3 sky sigma, shown from {DISPLAY_LOW:g} to the band's p99.9;"
        + " the same for every object.",
        f"Softening: {soft.source}.",
    ]
    if rgb is not None:
        footer.append(f"Colour: make_lupton_rgb({', '.join(source.bands[i] for i in rgb)}), Q={LUPTON_Q:g}, "
                      f"stretch={lupton_stretch(soft, rgb):.2g} maggies, same for every object.")
    if not np.isfinite(grid.images).all():
        footer.append("NaN/inf pixels in magenta.")
    fig.text(*at(8, layout.height - 6), "\n".join(footer), fontsize=6.5, color="0.25", va="bottom", wrap=True)
    canvas = _rgb(fig)  # the text; the cells go in pixel for pixel (no resampling)
    for i in range(n):
        for j, (x0, y0, x1, y1) in enumerate(layout.cells[i]):
            canvas[y0:y1, x0:x1] = np.repeat(np.repeat(cells[i, j], ZOOM, axis=0), ZOOM, axis=1)
    return _encode(canvas), layout


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else "..." + text[-(n - 3):]


def _rgb(fig: Any) -> np.ndarray:
    """The figure drawn by Agg, (height, width, 3) uint8, a writable copy."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.array(np.asarray(canvas.buffer_rgba())[..., :3])


def _encode(rgb: np.ndarray) -> bytes:
    """RGB PNG (no alpha channel: ~10% smaller), no metadata: the same pixels give the same bytes."""
    from PIL import Image  # a dependency of matplotlib

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="png", optimize=True)
    return buffer.getvalue()


def _png(fig: Any) -> bytes:
    return _encode(_rgb(fig))


# ---------------------------------------------------------------- histograms


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
    for part, images, _ in _read_pairs(source, pairs, chunk_rows, progress, "histogram"):
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
    Figure = _matplotlib()
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
    return _png(fig)


def _colour_panels(axes: Any, source: Source, hist: Histograms, sigma_ap: np.ndarray) -> None:
    """Colour-colour diagrams of the central fluxes: u-g vs g-r, and g-r vs r-i with four bands."""
    n_bands, bands = len(source.bands), source.bands
    mags = [luptitudes(hist.central[c], sigma_ap) for c in range(len(source.classes))]
    for row, (i, j, k) in enumerate([(0, 1, 2), (1, 2, 3)][: 1 + (n_bands >= 4)]):
        ax = axes[row]
        for c, name in enumerate(source.classes):
            m = mags[c]
            ax.scatter(m[:, j] - m[:, k], m[:, i] - m[:, j], s=2, alpha=0.5, color=f"C{c % 10}",
                       label=name, rasterized=True, linewidths=0)
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


# ---------------------------------------------------------------- the command


@dataclass
class Preview:
    """What `make_previews` drew: PNG bytes, where things sit, and a JSON-able summary."""

    grid_png: bytes
    layout: GridLayout
    hist_png: bytes | None
    summary: dict


def make_previews(
    paths: Sequence[Path],
    per_class: int = DEFAULT_PER_CLASS,
    split: str | None = None,
    seed: int = 0,
    hist: bool = False,
    hist_per_class: int = DEFAULT_HIST_PER_CLASS,
    read: ReadOptions | None = None,
    progress: ProgressFn = no_progress,
) -> Preview:
    """Draw the grid (and the histograms) in memory; nothing is written."""
    read = read or ReadOptions()
    if not 1 <= per_class <= MAX_PER_CLASS:
        raise UsageError(f"--per-class must be 1 to {MAX_PER_CLASS} (got {per_class})")
    if hist_per_class < 1:
        raise UsageError(f"--hist-per-class must be at least 1 (got {hist_per_class})")
    if seed < 0:
        raise UsageError(f"--seed must be >= 0 (got {seed})")
    _matplotlib()  # fail before reading anything
    with contextlib.ExitStack() as stack:
        source = open_source(paths, split, read, stack)
        picks = draw(source, per_class, seed)
        grid = read_grid(source, picks, read.chunk_rows, progress)
        soft = softening(source, grid.images)
        where = f"{source.name}" + (f", {source.split} split" if source.split else "")
        title = f"cutout-etl preview: {where}; {per_class} per class, seed {seed}"
        grid_png, layout = render_grid(source, grid, soft, title)
        histograms = None
        if hist:
            hist_picks = draw(source, hist_per_class, seed, salt=1)
            histograms = collect_histograms(source, soft, hist_picks, read.chunk_rows, progress)
            hist_png = render_histograms(source, soft, histograms, f"cutout-etl preview --hist: {where}")
        else:
            hist_png = None
        summary = {
            "input": source.kind,
            "name": source.name,
            "split": source.split,
            "seed": seed,
            "classes": source.classes,
            "bands": source.bands,
            "rows_per_class": source.rows_per_class(),
            "shown_per_class": {c: int((grid.codes == i).sum()) for i, c in enumerate(source.classes)},
            "objects": [
                {"class": source.classes[c], "id": i, "where": w}
                for c, i, w in zip(grid.codes, grid.ids, grid.where)
            ],
            "softening": soft.describe(source.bands),
            "composite": [source.bands[i] for i in rgb] if (rgb := composite_bands(source.bands)) else None,
            "histogram_objects_per_class": histograms.objects if histograms else None,
        }
    return Preview(grid_png, layout, hist_png, summary)


def write_output(target: Path, data: bytes, inputs: Sequence[Path] = ()) -> None:
    """Write `data` atomically; an existing image or page is replaced, an input or HDF5 file never."""
    check_output(target, inputs)
    with atomic.atomic_output(target, overwrite=True, may_replace=_replaceable_image, protected=inputs) as tmp:
        try:
            tmp.write_bytes(data)
        except OSError as exc:
            raise OutputWriteError(f"{target}: cannot write output ({exc.strerror or exc})") from exc


def check_output(target: Path, inputs: Sequence[Path] = ()) -> None:
    """Refuse to replace one of the inputs, or any HDF5 file, with an image or a page."""
    target = Path(target)
    for path in inputs:
        if Path(path) == target or readers.same_file(Path(path), target):
            raise UsageError(f"{target}: is also an input; choose another output path")
    atomic.check_target(target, overwrite=True, may_replace=_replaceable_image, protected=inputs)


def _replaceable_image(target: Path) -> None:
    """An existing image or page may be replaced; an HDF5 file (a dataset or class file) never."""
    if target.is_file() and h5py.is_hdf5(target):
        raise UsageError(f"{target}: is an HDF5 file; refusing to replace it with an image")


def preview(
    paths: Sequence[Path],
    output: Path,
    per_class: int = DEFAULT_PER_CLASS,
    split: str | None = None,
    seed: int = 0,
    hist: Path | None = None,
    hist_per_class: int = DEFAULT_HIST_PER_CLASS,
    read: ReadOptions | None = None,
    progress: ProgressFn = no_progress,
) -> dict:
    """`cutout-etl preview`: write the grid PNG (and the histogram PNG); return the summary."""
    paths = [Path(p) for p in paths]
    check_output(Path(output), paths)
    if hist is not None:
        check_output(Path(hist), paths)
        if Path(hist) == Path(output):
            raise UsageError(f"{hist}: --hist and --output name the same file")
    result = make_previews(paths, per_class, split, seed, hist is not None, hist_per_class, read, progress)
    write_output(Path(output), result.grid_png, paths)
    summary = {**result.summary, "output": str(output), "output_bytes": len(result.grid_png)}
    if hist is not None and result.hist_png is not None:
        write_output(Path(hist), result.hist_png, paths)
        summary.update(hist=str(hist), hist_bytes=len(result.hist_png))
    return summary
