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

The command lives here; the parts in `preview_source` (what is drawn and reading it), `softening` (the
stretch), `grid` and `histograms` (the two pictures) and `figure_png` (matplotlib, PNG bytes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py

from ..errors import OutputWriteError, UsageError
from ..formats import atomic
from ..inputs import readers
from ..inputs.scan import ProgressFn, ReadOptions, no_progress
from .figure_png import PlotUnavailableError, matplotlib_figure
from .grid import BAD_RGB, Grid, GridLayout, composite_bands, read_grid, render_grid
from .histograms import Histograms, collect_histograms, render_histograms
from .preview_source import Source, draw, is_dataset, open_source
from .softening import Softening, softening

__all__ = [  # the parts' public names too: callers and tests find them here
    "BAD_RGB",
    "DEFAULT_HIST_PER_CLASS",
    "DEFAULT_PER_CLASS",
    "MAX_PER_CLASS",
    "Grid",
    "GridLayout",
    "Histograms",
    "PlotUnavailableError",
    "Preview",
    "Softening",
    "Source",
    "check_output",
    "composite_bands",
    "draw",
    "is_dataset",
    "make_previews",
    "open_source",
    "preview",
    "read_grid",
    "softening",
    "write_output",
]

DEFAULT_PER_CLASS = 6
MAX_PER_CLASS = 50
DEFAULT_HIST_PER_CLASS = 2000


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
    matplotlib_figure()  # fail before reading anything
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
        summary = _summary(source, grid, soft, seed, histograms)
    return Preview(grid_png, layout, hist_png, summary)


def _summary(source: Source, grid: Grid, soft: Softening, seed: int, histograms: Histograms | None) -> dict:
    """What was drawn, JSON-able: `preview --json` prints it."""
    return {
        "input": source.kind,
        "name": source.name,
        "split": source.split,
        "seed": seed,
        "classes": source.classes,
        "bands": source.bands,
        "rows_per_class": source.rows_per_class(),
        "shown_per_class": {c: int((grid.codes == i).sum()) for i, c in enumerate(source.classes)},
        "objects": [
            {"class": source.classes[c], "id": i, "where": w} for c, i, w in zip(grid.codes, grid.ids, grid.where)
        ],
        "softening": soft.describe(source.bands),
        "composite": [source.bands[i] for i in rgb] if (rgb := composite_bands(source.bands)) else None,
        "histogram_objects_per_class": histograms.objects if histograms else None,
    }


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
