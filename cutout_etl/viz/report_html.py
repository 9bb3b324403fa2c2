"""`cutout-etl inspect --html`: the inspect report as one self-contained HTML page.

The page needs nothing beside it: styles are inline and the two preview
images (the example grid and the distributions, from `preview`) are embedded
as base64 PNG. Without matplotlib the page is written without the images and
says why.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import CutoutEtlError
from ..inputs.scan import ProgressFn, ReadOptions, no_progress
from .preview import DEFAULT_PER_CLASS, PlotUnavailableError, check_output, make_previews, write_output

# Objects per class behind the distributions: enough for smooth curves, and
# the HTML stays one quick read even on large files.
HTML_HIST_PER_CLASS = 1000

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
h3 { margin-bottom: .3em; }
table { border-collapse: collapse; margin: .5em 0 1em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th:first-child, td.text { text-align: left; }
th { background: #f3f3f3; } tr.total td { font-weight: bold; background: #fafafa; }
.meta { color: #666; } .ok { color: #17702a; font-weight: bold; } .bad { color: #b00020; font-weight: bold; }
.error { color: #b00020; } .warning { color: #8a5a00; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: .9em; max-width: 60em; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
code { font-size: .92em; }
"""


@dataclass
class Image:
    """One embedded picture."""

    title: str
    caption: str
    png: bytes


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return _e(value)


def _table(
    header: Sequence[str], rows: Sequence[Sequence[str]], total: Sequence[str] | None = None, text: int = 1
) -> str:
    """Cells are HTML already (escape them with _e or _num); the first `text` columns align left."""

    def row(cells: Sequence[str], css: str = "") -> str:
        tds = "".join(f'<td class="text">{c}</td>' if i < text else f"<td>{c}</td>" for i, c in enumerate(cells))
        return f"<tr{css}>{tds}</tr>"

    out = ["<table>", "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"]
    out += [row(r) for r in rows]
    if total is not None:
        out.append(row(total, ' class="total"'))
    out.append("</table>")
    return "\n".join(out)


def class_counts(report: dict) -> tuple[list[str], dict[str, dict[str, int]]]:
    """Labels in report order (the classes first, then any others) and the counts per file."""
    files = [f for f in report["files"] if f.get("usable")]
    found = {label for f in files for label in f.get("labels", {})}
    labels = [c for c in report.get("classes", []) if c in found] + sorted(found - set(report.get("classes", [])))
    return labels, {f["name"]: {label: int(f["labels"].get(label, 0)) for label in labels} for f in files}


def _counts_section(report: dict) -> str:
    labels, counts = class_counts(report)
    if not counts:
        return "<p>No usable file, so no class counts.</p>"
    rows = [[_e(name), *(_num(c[label]) for label in labels), _num(sum(c.values()))] for name, c in counts.items()]
    total = [
        "total",
        *(_num(sum(c[label] for c in counts.values())) for label in labels),
        _num(sum(sum(c.values()) for c in counts.values())),
    ]
    return _table(["file", *labels, "rows"], rows, total)


def _problems_section(report: dict) -> str:
    if not report["problems"]:
        return "<p>No problems found.</p>"
    rows = [
        [
            f'<span class="{_e(p["level"])}">{_e(p["level"])}</span>',
            _e(p["file"] or "(across files)"),
            _e(p["message"]),
            _num(p["count"]),
        ]
        for p in report["problems"]
    ]
    return _table(["level", "file", "problem", "count"], rows, text=3)


def _file_section(file: dict) -> str:
    out = [f"<h3>{_e(file['name'])}</h3>", f'<p class="meta">{_e(file["path"])}</p>']
    if not file.get("usable"):
        return "\n".join(out + ['<p class="bad">Not usable (see the problems above).</p>'])
    image = file["image"]
    out.append(
        f"<p>Table <code>{_e(file['table_path'])}</code> ({_e(', '.join(file['tables']))} in the file), "
        f"{_num(file['rows'])} rows, {_num(file['size'] / 1e6)} MB; image column <code>{_e(image['column'])}</code> "
        f"{image['height']} x {image['width']} x {image['bands']} {_e(image['dtype'])}; "
        f"label column <code>{_e(file['label_column'])}</code>.</p>"
    )
    columns = [[_e(c["name"]), _e(c["dtype"]), _e(" x ".join(map(str, c["shape"])) or "-")] for c in file["columns"]]
    out.append(_table(["column", "dtype", "shape"], columns, text=3))
    pixels = [
        [
            _e(band),
            _num(s["min"]),
            _num(s["median"]),
            _num(s["max"]),
            _num(s["nan_pixels"]),
            _num(s["inf_pixels"]),
            _num(s["cutouts_no_finite"]),
        ]
        for band, s in file["pixels"].items()
    ]
    out.append(
        _table(["band", "min", "≈ median", "max", "NaN pixels", "inf pixels", "cutouts with no finite pixel"], pixels)
    )
    dup = file.get("duplicate_ids", {})
    out.append(
        f"<p>Rows whose image has no finite pixel: {_num(file['rows_no_finite_pixel'])}; with some NaN/inf: "
        f"{_num(file['rows_partly_nonfinite'])}; IDs repeated in the file: {_num(dup.get('ids', 0))}"
        + (f" (e.g. {_e(', '.join(dup['examples']))})" if dup.get("examples") else "")
        + ". ≈ median: from a 65,536-bin histogram, within 2^-8 × |median| of the exact median.</p>"
    )
    return "\n".join(out)


def _image_section(images: Sequence[Image], notes: Sequence[str]) -> str:
    out = [f'<p class="warning">{_e(n)}</p>' for n in notes]
    for image in images:
        data = base64.b64encode(image.png).decode("ascii")
        out.append(
            f'<figure><img alt="{_e(image.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption><b>{_e(image.title)}.</b> {_e(image.caption)}</figcaption></figure>"
        )
    return "\n".join(out)


def render_inspect_html(report: dict, images: Sequence[Image] = (), notes: Sequence[str] = ()) -> str:
    """The whole page as a string (no I/O)."""
    verdict_class = "ok" if report["ok"] else "bad"
    verdict = "files usable" if report["ok"] else "files NOT usable"
    names = ", ".join(f["name"] for f in report["files"])
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>cutout-etl inspect: {_e(names)}</title><style>{_STYLE}</style></head><body>",
        "<h1>cutout-etl inspect report</h1>",
        f'<p class="meta">{len(report["files"])} files: {_e(names)}. Written by cutout-etl {_e(__version__)}.</p>',
        f'<p class="{verdict_class}">{report["errors"]} errors, {report["warnings"]} warnings: {verdict}.</p>',
        "<h2>Class counts</h2>",
        _counts_section(report),
        "<h2>Problems</h2>",
        _problems_section(report),
        "<h2>Images</h2>",
        _image_section(images, notes),
        "<h2>Files</h2>",
        *(_file_section(f) for f in report["files"]),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def preview_images(
    paths: Sequence[Path],
    read: ReadOptions | None = None,
    per_class: int = DEFAULT_PER_CLASS,
    seed: int = 0,
    progress: ProgressFn = no_progress,
) -> tuple[list[Image], list[str]]:
    """The grid and the distributions of the usable files, or notes saying why there are none."""
    if not paths:
        return [], ["No preview images: no usable file."]
    try:
        result = make_previews(paths, per_class, None, seed, True, HTML_HIST_PER_CLASS, read, progress)
    except PlotUnavailableError as exc:
        return [], [f"No preview images: {exc}"]
    except CutoutEtlError as exc:
        return [], [f"No preview images: {exc}"]
    summary = result.summary
    grid = Image(
        "Examples",
        f"{per_class} random objects per class (seed {seed}), one row each: each band on one asinh stretch "
        f"for every object, then a colour composite. Softening: {summary['softening']['source']}.",
        result.grid_png,
    )
    images = [grid]
    if result.hist_png is not None:
        images.append(
            Image(
                "Distributions",
                f"Per band, pixel values and each object's central flux, one curve per class "
                f"(up to {HTML_HIST_PER_CLASS} objects per class); right: colours of the central flux.",
                result.hist_png,
            )
        )
    return images, []


def write_inspect_html(
    paths: Sequence[Path],
    report: dict,
    target: Path,
    read: ReadOptions | None = None,
    per_class: int = DEFAULT_PER_CLASS,
    seed: int = 0,
    progress: ProgressFn = no_progress,
) -> dict:
    """Write the page for an `inspect_files` report; an existing page is replaced."""
    target = Path(target)
    paths = [Path(p) for p in paths]
    check_output(target, paths)
    usable = [Path(f["path"]) for f in report["files"] if f.get("usable")]
    images, notes = preview_images(usable, read, per_class, seed, progress)
    page = render_inspect_html(report, images, notes).encode("utf-8")
    write_output(target, page, paths)
    return {"path": str(target), "bytes": len(page), "images": [i.title for i in images], "notes": notes}
