"""`cutout-etl ingest`: the thin command over `cutout_etl.ingest` (options in, library call, summary out)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ..ingest import IngestOptions, LargerPolicy, MissingPolicy, SmallerPolicy
from ..schema import Columns
from . import _run, _show, app
from .options import CLUSTER, COLUMNS, COMMON, _finite, _flag, _option, cluster_options, default, with_options

_COLS = Columns()
INGEST = (
    *(p for p in COLUMNS if p.name != "image_column"),
    _option("ra_column", str, _COLS.ra, help="Catalogue column of the right ascension (degrees)."),
    _option("dec_column", str, _COLS.dec, help="Catalogue column of the declination (degrees)."),
    _option("bands", str, ",".join(default(IngestOptions, "bands")), help="Bands in channel order (= subdirectories)."),
    _option("size", int, default(IngestOptions, "size"), min=1, help="Cutout side in pixels."),
    _finite(
        "match_tolerance",
        float,
        default(IngestOptions, "match_tolerance"),
        "A row without a file named by its exact RA/Dec takes the nearest file within this (arcsec).",
        0,
    ),
    _option(
        "smaller",
        SmallerPolicy,
        SmallerPolicy(default(IngestOptions, "smaller")),
        help="A cutout trimmed at a tile edge: 'pad' with NaN where the tile ended (placed by the WCS), or 'drop'.",
    ),
    _option(
        "larger",
        LargerPolicy,
        LargerPolicy(default(IngestOptions, "larger")),
        help="A cutout larger than --size: 'crop' the box around the object (by the WCS), or 'drop'.",
    ),
    _option(
        "missing_band",
        MissingPolicy,
        MissingPolicy(default(IngestOptions, "missing_band")),
        help="An object without a file in some band: 'drop' it, or fill that band with NaN and keep it ('nan').",
    ),
    _option("chunk_rows", int, default(IngestOptions, "chunk_rows"), min=1, help="Objects per task (bounds memory)."),
    _flag("overwrite", "Replace class files an earlier ingest wrote (never other files).", default=False),
)
_HELP = {  # the same options as the other commands', with what they mean here
    "scheduler": "Where files are read: local (a pool of --workers processes here), dask (a LocalCluster of "
    "--workers processes) or a Dask scheduler address, e.g. tcp://host:8786.",
    "workers": "Processes reading files [default: cores, at most 8; 1: this process]; with an address: wait for "
    "this many Dask workers.",
}
CLUSTER_HERE = tuple(
    p.replace(
        annotation=Annotated[
            p.annotation.__origin__, typer.Option(help=_HELP[p.name], show_default=p.name != "workers")
        ]
    )
    if p.name in _HELP
    else p
    for p in CLUSTER
)
_CATALOG = "Catalogue (FITS, HDF5 or CSV table) with ID, RA, Dec and class columns."


@app.command()
@with_options(INGEST, CLUSTER_HERE, COMMON)
def ingest(
    catalog: Annotated[Path, typer.Option("--catalog", help=_CATALOG, show_default=False)],
    cutouts: Annotated[Path, typer.Option("--cutouts", help="Directory of per-band subdirectories of FITS cutouts.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the class files.", show_default=False)],
    **opts: Any,
) -> None:
    """Stack per-band FITS cutouts into one class file per class (the users' HDF5 layout).

    Every dropped, padded or NaN-filled object is counted and reported, and so is every file no row takes.

    Example: cutout-etl ingest --catalog objects.fits --cutouts cutouts/ --bands u,g,r,i -o classes/
    """
    columns = Columns(id=opts["id_column"], label=opts["label_column"], ra=opts["ra_column"], dec=opts["dec_column"])
    options = IngestOptions(
        bands=opts["bands"].split(","),
        columns=columns,
        table_path=opts["table_path"],
        size=opts["size"],
        match_tolerance=opts["match_tolerance"],
        smaller=opts["smaller"],
        larger=opts["larger"],
        missing_band=opts["missing_band"],
        chunk_rows=opts["chunk_rows"],
        overwrite=opts["overwrite"],
    )
    from ..ingest import ingest as run_ingest

    report = _run(lambda p: run_ingest(catalog, cutouts, output, options, p, cluster_options(opts)), opts)
    _show(report, opts, summary, output=output)


def summary(console: Console, report: dict) -> None:
    """Rows kept per class file, every reason a row was dropped or changed, and files no row took."""
    for name, entry in report["class_files"].items():
        console.print(f"wrote {entry['path']}: {entry['rows']} rows of {name}", markup=False, highlight=False)
    for name in report["classes_without_rows"]:
        console.print(f"warning: no file for class {name}: every row was dropped", style="yellow", markup=False)
    console.print(f"read {report['rows_read']} catalogue rows, kept {report['rows_kept']}", highlight=False)
    for reason, count in report["dropped"].items():
        console.print(f"  dropped {count} rows: {reason.replace('_', ' ')}", highlight=False)
    for reason, count in report["kept_changed"].items():
        console.print(f"  kept {count} rows {reason.replace('_', ' ')}", highlight=False)
    for band, entry in report["bands_report"].items():
        if entry["matched_within_tolerance"]:
            console.print(
                f"  band {band}: {entry['matched_within_tolerance']} files matched by position", highlight=False
            )
        for kind in ("unmatched", "unrecognised"):
            if entry[f"{kind}_files"]:
                examples = ", ".join(entry[f"{kind}_examples"])
                line = (
                    f"warning: band {band}: {entry[f'{kind}_files']} {kind} files (no catalogue row), e.g. {examples}"
                )
                console.print(
                    line.replace(" (no catalogue row)", "") if kind == "unrecognised" else line,
                    style="yellow",
                    markup=False,
                )
    console.print(
        f"float64 -> float32: largest relative rounding {report['max_relative_rounding']:.3g}; "
        f"{report['files_read']} files in {report['seconds']:.1f} s",
        highlight=False,
    )
