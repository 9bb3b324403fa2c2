"""The `cutout-etl` command line: parse options, call the library once, render the result.

`options` declares the shared flags and builds the library's option dataclasses from them, `usage` is how a
run fails (one line on stderr, an exit code), `render` shows the library's reports to people.
"""

from __future__ import annotations

import json
import math
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from .. import __version__, interrupts, pipeline
from ..demo_kids_sources import Preset
from ..errors import CutoutEtlError, Interrupted
from ..viz.preview import preview as draw_preview
from . import render
from .options import (
    CHUNKS,
    CLASSES,
    CLUSTER,
    COLUMNS,
    COMMON,
    FSYNC,
    MERGE,
    OUTPUT,
    SPLIT,
    argument_default,
    class_list,
    cluster_options,
    merge_options,
    output_options,
    read_options,
    split_options,
    with_options,
)
from .render import ProgressReporter, err
from .usage import OneLineUsageErrors, fail, one_line

__all__ = ["ProgressReporter", "app", "main", "one_line"]

app = typer.Typer(
    cls=OneLineUsageErrors,
    help="Turn astronomers' HDF5 cutout tables into machine-learning-ready datasets.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)

_OUTPUT_HELP = "Output: an HDF5 file, or a Parquet directory (a path ending in / or .parquet, or --format parquet)."
_HTML_HELP = (
    "Also write the report as one self-contained HTML page (tables plus example and histogram images), for sharing; "
    "replaced if it exists."
)
_HIST_HELP = "Also write this PNG: per band, pixel and central-flux distributions, one curve per class, and colours."


def _argument(help: str) -> Any:
    return typer.Argument(help=help, show_default=False)


Inputs = Annotated[list[Path], _argument("Class files (astropy HDF5 tables), one per class.")]
Output = Annotated[str, typer.Option("--output", "-o", help=_OUTPUT_HELP, show_default=False)]


def _print_version(value: bool) -> None:
    if value:
        print(f"cutout-etl {__version__}")
        raise typer.Exit(0)


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True)
    ] = False,
) -> None:
    """Turn astronomers' HDF5 cutout tables into machine-learning-ready datasets."""


def _run(call: Callable[[ProgressReporter], Any], opts: dict[str, Any], interrupted: str = "no output written") -> Any:
    """Call the library; turn its errors and stop signals into one line on stderr and an exit code."""
    progress = ProgressReporter(opts["quiet"])
    try:
        with interrupts.stop_on_signals():
            return call(progress)
    except CutoutEtlError as exc:
        progress.close()
        if opts["debug"]:
            raise
        fail(f"error: {exc}", exc.exit_code)
    except KeyboardInterrupt as exc:
        progress.close()
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        fail(f"interrupted by {signal.Signals(signum).name}: {interrupted}", 128 + signum)
    except Exception as exc:  # a failure we did not foresee: still one line
        progress.close()
        if opts["debug"]:
            raise
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        fail(f"error: unexpected {type(exc).__name__}: {first_line} (run with --debug for a traceback)", 1)
    finally:
        progress.close()


def _emit(
    result: dict, as_json: bool, quiet: bool, render_fn: Callable[[Console, dict], None], output: Any = None
) -> None:
    """The summary: rendered on stderr, or strict JSON on stdout (with the `output` written, if any)."""
    if output is not None:
        result = {**result, "output": str(output)}
    if as_json:
        print(json.dumps(_finite_json(result), indent=2, allow_nan=False))
    elif not quiet:
        render_fn(err, render.printable(result))


def _finite_json(value: Any) -> Any:
    """NaN and infinities as null: JSON has no spelling for them (Python's NaN/Infinity break strict parsers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(v) for v in value]
    return value


def _show(result: dict, opts: dict[str, Any], render_fn: Callable[[Console, dict], None], output: Any = None) -> None:
    _emit(result, opts["json_out"], opts["quiet"], render_fn, output)


@app.command()
@with_options(COLUMNS, CLASSES, CHUNKS, COMMON)
def inspect(
    files: Inputs,
    html: Annotated[Path | None, typer.Option("--html", help=_HTML_HELP, show_default=False)] = None,
    **opts: Any,
) -> None:
    """Report what is in the class files and what is wrong with them.

    Exit status 0 when every file is usable, 1 otherwise.

    Example: cutout-etl inspect image_table_*.hdf5 --json | jq .problems
    """
    read = read_options(opts)
    if html is not None:
        from ..viz.preview import check_output

        _run(lambda p: check_output(html, files), opts)
    from ..inspection import inspect_files  # imported by the command that needs it: start-up stays short

    report = _run(lambda p: inspect_files(files, read, class_list(opts), p), opts)
    if html is not None:
        from ..viz.report_html import write_inspect_html

        report["html"] = _run(lambda p: write_inspect_html(files, report, html, read, progress=p), opts)
    _show(report, opts, render.inspect_report, output=html)
    if html is not None and not (opts["quiet"] or opts["json_out"]):
        render.inspect_html_notes(err, render.printable(report), html)
    raise typer.Exit(0 if report["ok"] else 1)


@app.command()
@with_options(COLUMNS, MERGE, CHUNKS, CLUSTER, OUTPUT, COMMON)
def merge(files: Inputs, output: Output, **opts: Any) -> None:
    """Stack the class files into one table and label-encode the classes.

    Example: cutout-etl merge image_table_*.hdf5 -o merged.h5
    """
    read, options, out = read_options(opts), merge_options(opts), output_options(opts)
    result = _run(lambda p: pipeline.merge(files, output, read, options, out, p, cluster_options(opts)), opts)
    _show(result, opts, render.run_summary, output=output)


@app.command()
@with_options(SPLIT, CHUNKS, CLUSTER, OUTPUT, COMMON)
def split(
    merged: Annotated[Path, _argument("Output of `cutout-etl merge`.")],
    output: Output,
    **opts: Any,
) -> None:
    """Split a merged file into stratified, deterministic train/val/test tables.

    Example: cutout-etl split merged.h5 -o dataset.h5 --fractions 0.7,0.15,0.15 --seed 0
    """
    options, out, chunk_rows = split_options(opts), output_options(opts), opts["chunk_rows"]
    result = _run(lambda p: pipeline.split(merged, output, options, out, chunk_rows, p, cluster_options(opts)), opts)
    _show(result, opts, render.run_summary, output=output)


@app.command()
@with_options(CHUNKS, CLUSTER, FSYNC, COMMON)
def stats(
    dataset: Annotated[Path, _argument("A dataset from `build` or `split`.")],
    split: Annotated[str, typer.Option(help="The split to compute statistics on.")] = argument_default(
        pipeline.stats, "split"
    ),
    **opts: Any,
) -> None:
    """Compute per-band statistics of the training split and store them in the dataset.

    Other splits' statistics (--split val) are stored beside the training ones, never instead.

    Example: cutout-etl stats dataset.h5
    """
    cluster, chunk_rows = cluster_options(opts), opts["chunk_rows"]
    result = _run(lambda p: pipeline.stats(dataset, split, chunk_rows, p, cluster, opts["fsync"]), opts)
    _show(result, opts, lambda console, metadata: render.stats_table(console, metadata, split), output=dataset)


@app.command()
@with_options(COLUMNS, MERGE, SPLIT, CHUNKS, CLUSTER, OUTPUT, COMMON)
def build(files: Inputs, output: Output, **opts: Any) -> None:
    """Merge, split and compute statistics in one run: the main job.

    Example: cutout-etl build image_table_*.hdf5 -o dataset.h5 --seed 0

    On a Dask cluster: cutout-etl build image_table_*.hdf5 -o dataset.h5 --scheduler dask --workers 4
    """
    read, merging, splitting = read_options(opts), merge_options(opts), split_options(opts)
    out, cluster = output_options(opts), cluster_options(opts)
    result = _run(lambda p: pipeline.build(files, output, read, merging, splitting, out, p, cluster), opts)
    _show(result, opts, render.build_summary, output=output)


@app.command()
@with_options(OUTPUT, COMMON)
def convert(
    source: Annotated[Path, _argument("A dataset: HDF5 file or Parquet directory.")],
    output: Annotated[str, _argument("The converted dataset (format from the path, or --format).")],
    **opts: Any,
) -> None:
    """Convert a dataset between HDF5 and Parquet, losslessly (checked by the content digest).

    Example: cutout-etl convert dataset.h5 dataset_parquet/
    """
    options = output_options(opts)  # the format follows the output path, as for build
    result = _run(lambda p: pipeline.convert(source, output, options, p), opts)
    _show(result, opts, render.run_summary, output=output)


@app.command()
@with_options(COMMON)
def verify(
    dataset: Annotated[Path, _argument("A dataset (or merged file) written by cutout-etl.")],
    **opts: Any,
) -> None:
    """Check a dataset against its own checksums, counts, IDs and statistics.

    Exit status 0 only when everything holds; otherwise each failure is listed.

    Example: cutout-etl verify dataset.h5 --json
    """
    from ..verify import verify as verify_dataset

    report = _run(lambda p: verify_dataset(dataset, p), opts)
    _show(report, opts, render.verify_report)
    raise typer.Exit(0 if report["ok"] else 1)


@app.command()
@with_options(COMMON)
def info(
    dataset: Annotated[
        Path, _argument("A dataset from build, split, merge or convert: HDF5 file or Parquet directory.")
    ],
    **opts: Any,
) -> None:
    """Describe a dataset from its stored metadata: format, classes, splits, statistics, digest, inputs.

    Reads no rows (`verify` checks the content). The description goes to stdout; --json prints it as JSON.

    Example: cutout-etl info dataset.h5 --json | jq .splits
    """
    from ..info import describe_dataset

    result = _run(lambda p: describe_dataset(dataset), opts)
    _show(result, opts, lambda _console, described: render.info_report(render.out, described))


_PREVIEW = {name: argument_default(draw_preview, name) for name in ("per_class", "split", "seed", "hist_per_class")}
_SPLIT_HELP = "Dataset split to draw from [default: train, or a merged file's only table]."


@app.command()
@with_options(COLUMNS, CHUNKS, COMMON)
def preview(
    inputs: Annotated[list[Path], _argument("One dataset (from build, split or merge), or class files.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The grid PNG to write (replaced if it exists).")],
    per_class: Annotated[int, typer.Option(help="Examples per class, one grid row each.", min=1, max=50)] = (
        _PREVIEW["per_class"]
    ),
    split: Annotated[str | None, typer.Option(help=_SPLIT_HELP, show_default=False)] = _PREVIEW["split"],
    seed: Annotated[int, typer.Option(help="Seed of the random draw of examples.", min=0)] = _PREVIEW["seed"],
    hist: Annotated[Path | None, typer.Option(help=_HIST_HELP, show_default=False)] = None,
    hist_per_class: Annotated[int, typer.Option(help="Objects per class drawn for --hist.", min=1)] = (
        _PREVIEW["hist_per_class"]
    ),
    **opts: Any,
) -> None:
    """Draw example cutouts band by band, grouped by class, on one stretch for every object.

    Each band is shown as asinh((x - sky) / (3 sky sigma)) with the dataset's stored
    statistics (computed from the drawn cutouts for class files), so brightness and
    colour differences stay visible; a colour composite of i, r, g ends each row.
    Reads only the rows it draws. Needs the plot extra (matplotlib).

    Example: cutout-etl preview dataset.h5 -o preview.png --hist hist.png
    """
    read = read_options(opts)
    result = _run(lambda p: draw_preview(inputs, output, per_class, split, seed, hist, hist_per_class, read, p), opts)
    _show(result, opts, render.preview_summary)


@app.command("demo-data")
@with_options(COMMON)
def demo_data(
    directory: Annotated[Path, _argument("Where to write the three class files.")],
    rows: Annotated[int, typer.Option(help="Rows per class.", min=1)] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace demo files written earlier by demo-data (never other files).")
    ] = False,
    preset: Annotated[
        Preset,
        typer.Option(
            help="demo: easy, classes well apart, tiled beyond 2000 rows per class. kids: hard, KiDS-like "
            "(faint-heavy r 17-23, per-band PSF and sky noise, overlapping colours), every row its own object."
        ),
    ] = Preset.DEMO,
    **opts: Any,
) -> None:
    """Write three synthetic class files in the users' format (for demos and tests).

    Example: cutout-etl demo-data demo/ --rows 1000 --preset kids
    """
    from ..demo import write_demo_files

    write = lambda p: write_demo_files(directory, rows=rows, seed=seed, overwrite=overwrite, preset=preset.value)
    paths = _run(write, opts, interrupted="no partial file written")
    result = {"files": [str(p) for p in paths], "rows_per_class": rows, "seed": seed, "preset": preset.value}
    _show(result, opts, render.demo_summary, output=directory)


from . import ingest_command  # noqa: F401  (registers `ingest` on `app`)


def main() -> None:
    app()
