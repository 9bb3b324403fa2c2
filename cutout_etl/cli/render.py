"""Human-readable rendering of the library's reports, with Rich. Used by the CLI only."""

from __future__ import annotations

import sys
import unicodedata
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .. import interrupts
from ..schema import SPLIT_NAMES

# No Rich markup anywhere: IDs, class names and paths come from the user's files, and "[red]" in one must
# print as it is. Control characters in them are escaped (`printable`) so a report cannot be rewritten by
# a terminal escape sequence or a line break inside an ID.
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)  # every message and summary of the CLI
out = Console(highlight=False, soft_wrap=True, markup=False)  # what a command is asked for (`info`'s description)

_LINE_BREAKING = {"Cc", "Zl", "Zp"}  # control characters, line and paragraph separators


def one_line(text: str) -> str:
    """`text` with control characters (newline, tab, escape...) escaped, so a message stays on one line."""
    if not any(unicodedata.category(c) in _LINE_BREAKING for c in text):
        return text
    return "".join(repr(c)[1:-1] if unicodedata.category(c) in _LINE_BREAKING else c for c in text)


def printable(value: Any) -> Any:
    """A report with `one_line` applied to every string in it, keys included, before it is rendered."""
    if isinstance(value, str):
        return one_line(value)
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [printable(v) for v in value]
    return value


class ProgressReporter:
    """A Rich bar per stage on a terminal, one plain line per stage otherwise.

    It is also where a stop signal (Ctrl-C, SIGTERM, SIGHUP) lands: Python may
    swallow the interrupt raised inside a garbage-collector callback, so the
    signal handler also sets a flag, and the next progress call (every chunk,
    and once per input hash) raises again; so does the check just before an
    output is renamed into place (`interrupts.check`).
    """

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.bar: Progress | None = None
        self.tasks: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        interrupts.check()
        if self.quiet:
            return
        if not self.tty:
            if stage not in self.tasks:
                self.tasks[stage] = None
                err.print(f"{stage}: {total} {'files' if stage == 'hash' else 'rows'}")
            return
        if self.bar is None:
            columns = (TextColumn("{task.description:>12}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            self.bar = Progress(*columns, console=err, transient=True)
            self.bar.start()
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(stage, total=total)
        self.bar.update(self.tasks[stage], completed=done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def run_summary(console: Console, metadata: dict) -> None:
    """Rows per table and class, and every dropped row with its reason."""
    tables = metadata.get("tables_rows", {})
    grid = Table(title=f"{metadata['kind']}: rows per class", title_justify="left")
    grid.add_column("table")
    for name in metadata["classes"]:
        grid.add_column(name, justify="right")
    grid.add_column("total", justify="right")
    for table, entry in tables.items():
        counts = entry["class_counts"]
        grid.add_row(table, *(str(counts.get(c, 0)) for c in metadata["classes"]), str(entry["rows"]))
    console.print(grid)
    report = metadata["report"]
    for file in report.get("files", []):
        for note in file.get("notes", []):
            console.print(f"warning: {file['path']}: {note}", style="yellow", highlight=False, markup=False)
    dropped = {k: v for k, v in report["dropped"].items() if v}
    console.print(f"read {report['rows_read']} rows, kept {report['rows_kept']}", highlight=False)
    for reason, count in dropped.items():
        console.print(f"  dropped {count} rows: {reason.replace('_', ' ')}", highlight=False)
    if report.get("rows_partly_nonfinite"):
        console.print(f"  kept {report['rows_partly_nonfinite']} rows with some NaN/inf pixels", highlight=False)
    if report.get("rows_cast_to_float32"):
        console.print(f"  cast {report['rows_cast_to_float32']} float64 images to float32", highlight=False)
    split = metadata.get("split")
    if split and "group_radius_arcsec" in split:
        cells = f" and {split['cell_deg']:g} deg sky cells" if split.get("group_by") == "sky" else ""
        console.print(
            f"kept whole: {split['groups_of_several_rows']} groups of neighbours within "
            f"{split['group_radius_arcsec']:.2f} arcsec{cells} ({split['rows_in_groups']} rows, largest {split['largest_group']})",
            highlight=False,
        )
        style = None if split["within_tolerance"] else "yellow"
        console.print(
            f"class fractions within {split['max_fraction_deviation']:.4f} of the targets (tolerance {split['tolerance']:g})",
            style=style,
            highlight=False,
        )


def stats_table(console: Console, metadata: dict, split: str = "train") -> None:
    """The statistics of `split`: `stats` for train, `split_stats[split]` for the others."""
    stats = metadata["stats"] if split == "train" else metadata["split_stats"][split]
    bands = stats["bands"]
    grid = Table(title=f"statistics of the {stats['split']} split ({stats['n_cutouts']} cutouts)", title_justify="left")
    grid.add_column("")
    for band in bands:
        grid.add_column(band, justify="right")
    rows = [
        ("finite pixels", lambda b: b["finite_pixels"]),
        ("NaN / inf", lambda b: f"{b['nan_pixels']} / {b['inf_pixels']}"),
        ("mean", lambda b: b["mean"]),
        ("std", lambda b: b["std"]),
        ("min", lambda b: b["min"]),
        ("p1", lambda b: b["quantiles"]["p1"]),
        ("median", lambda b: b["quantiles"]["p50"]),
        ("p99", lambda b: b["quantiles"]["p99"]),
        ("max", lambda b: b["max"]),
        ("MAD sigma", lambda b: b["mad_sigma"]),
        ("sky median", lambda b: b["sky_median"]["p50"]),
        ("sky sigma", lambda b: b["sky_sigma"]["p50"]),
        ("asinh softening", lambda b: b["asinh_softening"]),
    ]
    for label, get in rows:
        grid.add_row(label, *(_fmt(get(bands[band])) for band in bands))
    console.print(grid)
    split_counts(console, metadata)


def split_counts(console: Console, metadata: dict) -> None:
    tables = metadata.get("tables_rows", {})
    names = [name for name in SPLIT_NAMES if name in tables] + [name for name in tables if name not in SPLIT_NAMES]
    parts = [f"{name} {tables[name]['rows']}" for name in names]
    if parts:
        console.print("rows per split: " + ", ".join(parts), highlight=False)


# inspect's median comes from the 65,536-bin sketch (steps/pixel_summary.py); min and max are exact
APPROXIMATE_MEDIAN = "≈ median: from a 65,536-bin histogram, within 2^-8 × |median| of the exact median"


def inspect_report(console: Console, report: dict) -> None:
    for file in report["files"]:
        console.rule(file["name"])
        if not file["usable"]:
            continue
        image = file["image"]
        console.print(
            f"table '{file['table_path']}' ({', '.join(file['tables'])} in file), {file['rows']} rows, "
            f"image '{image['column']}' {image['height']}x{image['width']}x{image['bands']} {image['dtype']}",
            highlight=False,
        )
        console.print(
            "columns: "
            + ", ".join(f"{c['name']} {c['dtype']}{tuple(c['shape']) if c['shape'] else ''}" for c in file["columns"]),
            highlight=False,
        )
        console.print("labels: " + ", ".join(f"{k} {v}" for k, v in file["labels"].items()), highlight=False)
        grid = Table(show_edge=False)
        for col in ("band", "min", "≈ median", "max", "NaN", "inf", "no finite"):
            grid.add_column(col, justify="right")
        for band, s in file["pixels"].items():
            grid.add_row(
                band,
                _fmt(s["min"]),
                _fmt(s["median"]),
                _fmt(s["max"]),
                str(s["nan_pixels"]),
                str(s["inf_pixels"]),
                str(s["cutouts_no_finite"]),
            )
        console.print(grid)
        console.print(APPROXIMATE_MEDIAN, highlight=False)
    positions = report.get("positions") or {}
    if positions:
        console.rule("positions")
        console.print(
            f"within {positions['match_radius_arcsec']:g} arcsec (one object): {positions['duplicate_groups_same_label']} with one label, "
            f"{positions['duplicate_groups_conflicting']} with conflicting labels; neighbours within "
            f"{positions['group_radius_arcsec']:.2f} arcsec (shared pixels): {positions['neighbour_groups']} groups, "
            f"{positions['rows_in_neighbour_groups']} rows, largest {positions['largest_neighbour_group']}",
            highlight=False,
        )
    console.rule("problems")
    for p in report["problems"]:
        where = f"{p['file']}: " if p["file"] else ""
        count = f" [{p['count']}]" if p["count"] is not None else ""
        style = "red" if p["level"] == "error" else "yellow"
        console.print(f"{p['level']}: {where}{p['message']}{count}", style=style, highlight=False, markup=False)
    verdict = "usable" if report["ok"] else "NOT usable"
    console.print(f"{report['errors']} errors, {report['warnings']} warnings: files {verdict}", highlight=False)


def verify_report(console: Console, report: dict) -> None:
    for failure in report["failures"]:
        console.print(f"FAIL {failure}", style="red", highlight=False, markup=False)
    verdict = "verified" if report["ok"] else f"{len(report['failures'])} failures"
    console.print(f"{verdict}: {', '.join(report['checks'])}", highlight=False, markup=False)


def build_summary(console: Console, metadata: dict) -> None:
    run_summary(console, metadata)
    stats_table(console, metadata)


def preview_summary(console: Console, summary: dict) -> None:
    shown = ", ".join(f"{c} {n}" for c, n in summary["shown_per_class"].items())
    where = summary["name"] + (f", {summary['split']} split" if summary["split"] else "")
    console.print(f"wrote {summary['output']}: {shown} from {where}", highlight=False, markup=False)
    console.print(f"softening: {summary['softening']['source']}", highlight=False, markup=False)
    if summary.get("hist"):
        counts = ", ".join(f"{c} {n}" for c, n in summary["histogram_objects_per_class"].items())
        console.print(f"wrote {summary['hist']}: distributions of {counts} objects", highlight=False, markup=False)


def demo_summary(console: Console, result: dict) -> None:
    console.print("wrote " + ", ".join(result["files"]))


def inspect_html_notes(console: Console, report: dict, html: object) -> None:
    for note in report["html"]["notes"]:
        console.print(f"note: {note}", markup=False)
    console.print(f"wrote {html}", markup=False)


def info_report(console: Console, info: dict) -> None:
    """`cutout-etl info`: what the dataset holds, from its metadata."""
    shape = "x".join(str(n) for n in info["image_shape"])
    console.print(
        f"{info['path']}: {info['format']} dataset (format version {info['format_version']}, {info['kind']}), "
        f"{info['bytes'] / 1e6:,.1f} MB; images {shape} float32, bands {', '.join(info['bands'])} ({info['pixel_unit']})",
        highlight=False,
        markup=False,
    )
    grid = Table(title="rows per split and class", title_justify="left")
    grid.add_column("split")
    for name in info["classes"]:
        grid.add_column(name, justify="right")
    grid.add_column("total", justify="right")
    for split, entry in info["splits"].items():
        counts = entry["class_counts"]
        grid.add_row(split, *(str(counts.get(c, 0)) for c in info["classes"]), str(entry["rows"]))
    console.print(grid)
    method = info["split_method"]
    if method:
        fractions = "/".join(f"{f:g}" for f in method["fractions"])
        how = f"{method.get('split_method') or 'exact'} split {fractions}, seed {method['seed']}"
        faint = (
            f", faintest {method['faint_test']['fraction']:g} of each class by {method['faint_test']['band']} flux in test_faint"
            if method.get("faint_test")
            else ""
        )
        console.print(f"{how}, grouped by {method['group_by']}{faint}", highlight=False)
    for split, stats in info["stats"].items():
        _info_stats(console, split, stats)
    dropped = ", ".join(f"{reason.replace('_', ' ')} {n}" for reason, n in info["dropped"].items()) or "none"
    console.print(f"rows read {info['rows_read']}, kept {info['rows_kept']}; dropped: {dropped}", highlight=False)
    parent = [("parent", info["parent"])] if info["parent"] else []
    for role, entry in [("input", entry) for entry in info["inputs"]] + parent:
        console.print(
            f"{role} {entry['path']}: {entry['rows']} rows, sha256 {entry['sha256']}", highlight=False, markup=False
        )
    console.print(
        f"content digest {info['digest']} (block checksums: {info['checksum_algorithm']})",
        highlight=False,
        markup=False,
    )
    console.print(f"created by {info['created_by']}; check the content with `cutout-etl verify`", highlight=False)


def _info_stats(console: Console, split: str, stats: dict) -> None:
    bands = stats["bands"]
    grid = Table(title=f"statistics of {split} ({stats['cutouts']} cutouts)", title_justify="left")
    grid.add_column("")
    for band in bands:
        grid.add_column(band, justify="right")
    for figure in next(iter(bands.values()), {}):
        grid.add_row(figure.replace("_", " "), *(_fmt(bands[band][figure]) for band in bands))
    console.print(grid)
