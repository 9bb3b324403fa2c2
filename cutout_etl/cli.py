"""The `cutout-etl` command line: parse options, call the library once, render the result."""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import typer
from typer._click.exceptions import BadParameter, MissingParameter, NoArgsIsHelpError
from typer._click.exceptions import UsageError as ClickUsageError
from typer._click.globals import get_current_context
from typer.core import TyperGroup
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from . import interrupts, pipeline, render
from .distributed import ClusterOptions
from .errors import CutoutEtlError, Interrupted
from .inspect import inspect_files
from .readers import DEFAULT_CHUNK_ROWS
from .scan import ReadOptions
from .schema import DEFAULT_ROWS_PER_SHARD, Columns


def one_line(text: str) -> str:
    """`text` with control characters (newline, tab, escape...) escaped, so a message stays on one line."""
    if not any(unicodedata.category(c) in _LINE_BREAKING for c in text):
        return text
    return "".join(repr(c)[1:-1] if unicodedata.category(c) in _LINE_BREAKING else c for c in text)


_LINE_BREAKING = {"Cc", "Zl", "Zp"}  # control characters, line and paragraph separators


def _fail(line: str, exit_code: int) -> NoReturn:
    """The end of every failed command: one line on stderr, and with --json one document on stdout."""
    line = one_line(line)
    err.print(line, markup=False)
    ctx = get_current_context(silent=True)
    if ctx is not None and ctx.params.get("json_out"):
        _print_failure_json(line, exit_code)
    raise typer.Exit(exit_code)


def _print_failure_json(line: str, exit_code: int) -> None:
    print(json.dumps({"ok": False, "error": line.removeprefix("error: "), "exit_code": exit_code}, indent=2))


class OneLineUsageErrors(TyperGroup):
    """Click's usage errors (bad choice, bad number, missing argument) as one line, exit 2, like every other error."""

    _args: list[str] = []

    def main(self, args: Any = None, *rest: Any, **kwargs: Any) -> Any:
        self._args = list(sys.argv[1:] if args is None else args)
        return super().main(args, *rest, **kwargs)

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with self._one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with self._one_line():
            return super().invoke(ctx)

    @contextlib.contextmanager
    def _one_line(self) -> Iterator[None]:
        try:
            yield
        except NoArgsIsHelpError:
            raise  # shows the help
        except ClickUsageError as exc:
            line = one_line(f"error: {_usage_message(exc)}")
            err.print(line, markup=False)
            if "--json" in self._args:
                _print_failure_json(line, exc.exit_code)
            raise typer.Exit(exc.exit_code) from None


def _usage_message(exc: ClickUsageError) -> str:
    """`--format: 'csv' is not one of 'hdf5', 'parquet'`: the option, then the problem."""
    if isinstance(exc, BadParameter) and not isinstance(exc, MissingParameter) and (exc.param_hint or exc.param):
        hint = exc.param_hint or "/".join(exc.param.opts)  # type: ignore[union-attr]
        hint = hint if isinstance(hint, str) else "/".join(hint)
        return f"{hint}: {exc.message.removeprefix('Value error, ')}"
    return exc.format_message()


def finite_float(minimum: float) -> Callable[[str], float]:
    """An option parser: a finite number >= minimum (NaN or inf would reach the metadata, which is JSON)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise BadParameter(f"expected a number (got {text!r})") from None
        if not math.isfinite(value):
            raise BadParameter(f"expected a finite number (got {text!r})")
        if value < minimum:
            raise BadParameter(f"expected a number >= {minimum:g} (got {text!r})")
        return value

    return parse


def _finite_option(help: str, minimum: float, **kwargs: Any) -> Any:
    return typer.Option(help=f"{help} [finite, x>={minimum:g}]", parser=finite_float(minimum), **kwargs)


app = typer.Typer(
    cls=OneLineUsageErrors,
    help="Turn astronomers' HDF5 cutout tables into machine-learning-ready datasets.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)

Inputs = Annotated[list[Path], typer.Argument(help="Class files (astropy HDF5 tables), one per class.", show_default=False)]
Output = Annotated[str, typer.Option("--output", "-o", help="Output: an HDF5 file, or a Parquet directory (a path ending in / or .parquet, or --format parquet).", show_default=False)]
Format = Annotated[Literal["hdf5", "parquet"] | None, typer.Option("--format", help="hdf5 or parquet [default: from the output path].", show_default=False)]
RowsPerShard = Annotated[int, typer.Option(help="Parquet: rows per shard file (16384 = ~340 MB).", min=1)]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an output cutout-etl wrote earlier (never another file, nor a directory holding other files or an input).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary on stderr.")]
Json = Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout (and nothing else there).")]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks.")]
ImageColumn = Annotated[str, typer.Option(help="Image column (H, W, bands).")]
LabelColumn = Annotated[str, typer.Option(help="Class-name column.")]
IdColumn = Annotated[str, typer.Option(help="Object ID column.")]
TablePath = Annotated[str | None, typer.Option(help="Table inside each file, when a file holds several.")]
Classes = Annotated[str | None, typer.Option(help="Class names in code order, e.g. GALAXY,QSO,STAR [default: GALAXY,QSO,STAR sorted].", show_default=False)]
DropUnknown = Annotated[bool, typer.Option("--drop-unknown", help="Drop rows whose label is not a class (counted) instead of failing.")]
DropInvalid = Annotated[bool, typer.Option("--drop-invalid", help="Drop rows with an empty ID or an invalid RA/Dec (NaN, infinite, out of range; counted) instead of failing.")]
OnConflict = Annotated[Literal["error", "drop"], typer.Option(help="One ID with different labels: 'error' or 'drop' (all copies, counted).")]
Fractions = Annotated[str, typer.Option(help="Train,val,test fractions.")]
MatchRadius = Annotated[float, _finite_option("Objects closer than this (arcsec) are one object (0: off).", 0)]
GroupRadius = Annotated[float | None, _finite_option("Objects closer than this (arcsec) share a split [default: the cutout's half-diagonal] (0: off).", 0, show_default=False)]
PixelScale = Annotated[float, _finite_option("Arcsec per pixel, for the default group radius (KiDS: 0.2).", 0)]
GroupBy = Annotated[Literal["none", "sky"], typer.Option(help="'sky': whole sky cells go to one split; 'none'.")]
CellDeg = Annotated[float, _finite_option("Sky cell size in degrees, with --group-by sky.", 0.001)]
Tolerance = Annotated[float, _finite_option("Allowed gap between a class's achieved and target split fraction (reported).", 0)]
Seed = Annotated[int, typer.Option(help="Seed of the keyed hash that assigns splits.", min=0, max=2**63 - 1)]
Fsync = Annotated[bool, typer.Option("--fsync", help="Flush the output to disk before renaming it into place, and the directory entry after (survives a power cut; costs a full writeback).")]
ChunkRows = Annotated[int, typer.Option(help="Rows read per chunk (bounds memory: ~21 KB a row); also the checksum block, so the digest depends on it.", min=1)]
Scheduler = Annotated[str, typer.Option(help="Where rows are written: local (this process), dask (a LocalCluster of --workers processes) or a Dask scheduler address, e.g. tcp://host:8786.")]
Workers = Annotated[int | None, typer.Option(help="With --scheduler dask: worker processes [default: cores]; with an address: wait for this many workers.", min=1, show_default=False)]
SchedulerFile = Annotated[str | None, typer.Option(help="A Dask scheduler file (as dask-jobqueue or dask-mpi write it) instead of --scheduler.", show_default=False)]


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
            self.bar = Progress(TextColumn("{task.description:>12}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err, transient=True)
            self.bar.start()
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(stage, total=total)
        self.bar.update(self.tasks[stage], completed=done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _run(
    call: Callable[[ProgressReporter], Any], quiet: bool, debug: bool, interrupted: str = "no output written"
) -> Any:
    """Call the library; turn its errors and stop signals into one line on stderr and an exit code."""
    progress = ProgressReporter(quiet)
    try:
        with interrupts.stop_on_signals():
            return call(progress)
    except CutoutEtlError as exc:
        progress.close()
        if debug:
            raise
        _fail(f"error: {exc}", exc.exit_code)
    except KeyboardInterrupt as exc:
        progress.close()
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        _fail(f"interrupted by {signal.Signals(signum).name}: {interrupted}", 128 + signum)
    except Exception as exc:  # a failure we did not foresee: still one line
        progress.close()
        if debug:
            raise
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        _fail(f"error: unexpected {type(exc).__name__}: {first_line} (run with --debug for a traceback)", 1)
    finally:
        progress.close()


def _emit(
    result: dict, as_json: bool, quiet: bool, render_fn: Callable[[Console, dict], None], output: str | Path | None = None
) -> None:
    """The summary: rendered on stderr, or strict JSON on stdout (with the `output` written, if any)."""
    if output is not None:
        result = {**result, "output": str(output)}
    if as_json:
        print(json.dumps(_finite_json(result), indent=2, allow_nan=False))
    elif not quiet:
        render_fn(err, result)


def _finite_json(value: Any) -> Any:
    """NaN and infinities as null: JSON has no spelling for them (Python's NaN/Infinity break strict parsers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(v) for v in value]
    return value


def _cluster(scheduler: str, workers: int | None, scheduler_file: str | None) -> ClusterOptions:
    return ClusterOptions(scheduler=scheduler, workers=workers, scheduler_file=scheduler_file)


def _read_options(image_column: str, label_column: str, id_column: str, table_path: str | None, chunk_rows: int) -> ReadOptions:
    return ReadOptions(Columns(id=id_column, label=label_column, image=image_column), table_path, chunk_rows)


def _merge_options(
    classes: str | None, drop_unknown: bool, on_conflict: str, match_radius: float, drop_invalid: bool = False
) -> pipeline.MergeOptions:
    class_list = classes.split(",") if classes else None
    return pipeline.MergeOptions(class_list, drop_unknown, on_conflict, match_radius, drop_invalid)


def _output(fmt: str | None, overwrite: bool, fsync: bool, rows_per_shard: int) -> pipeline.OutputOptions:
    return pipeline.OutputOptions(fmt, overwrite, fsync, rows_per_shard)


def _split_options(
    fractions: str, seed: int, group_radius: float | None, pixel_scale: float, group_by: str, cell_deg: float, tolerance: float
) -> pipeline.SplitOptions:
    parse = finite_float(0)
    try:
        values = [parse(v) for v in fractions.split(",")]
    except BadParameter as exc:
        raise BadParameter(f"{exc.message} in {fractions!r}", param_hint="--fractions") from None
    return pipeline.SplitOptions(values, seed, group_radius, pixel_scale, group_by, cell_deg, tolerance)


@app.command()
def inspect(
    files: Inputs,
    image_column: ImageColumn = "image",
    label_column: LabelColumn = "SPECTYPE",
    id_column: IdColumn = "ID",
    table_path: TablePath = None,
    classes: Classes = None,
    chunk_rows: ChunkRows = DEFAULT_CHUNK_ROWS,
    html: Annotated[Path | None, typer.Option("--html", help="Also write the report as one self-contained HTML page (tables plus example and histogram images), for sharing; replaced if it exists.", show_default=False)] = None,
    json_out: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Report what is in the class files and what is wrong with them.

    Exit status 0 when every file is usable, 1 otherwise.

    Example: cutout-etl inspect image_table_*.hdf5 --json | jq .problems
    """
    read = _read_options(image_column, label_column, id_column, table_path, chunk_rows)
    class_list = classes.split(",") if classes else None
    if html is not None:
        from .preview import check_output

        _run(lambda p: check_output(html, files), quiet, debug)
    report = _run(lambda p: inspect_files(files, read, class_list, p), quiet, debug)
    if html is not None:
        from .report_html import write_inspect_html

        report["html"] = _run(lambda p: write_inspect_html(files, report, html, read, progress=p), quiet, debug)
    _emit(report, json_out, quiet, render.inspect_report, output=html)
    if html is not None and not (quiet or json_out):
        for note in report["html"]["notes"]:
            err.print(f"note: {note}", markup=False)
        err.print(f"wrote {html}", markup=False)
    raise typer.Exit(0 if report["ok"] else 1)


@app.command()
def merge(
    files: Inputs,
    output: Output,
    image_column: ImageColumn = "image",
    label_column: LabelColumn = "SPECTYPE",
    id_column: IdColumn = "ID",
    table_path: TablePath = None,
    classes: Classes = None,
    drop_unknown: DropUnknown = False,
    drop_invalid: DropInvalid = False,
    on_conflict: OnConflict = "error",
    match_radius: MatchRadius = 1.0,
    chunk_rows: ChunkRows = DEFAULT_CHUNK_ROWS,
    scheduler: Scheduler = "local",
    workers: Workers = None,
    scheduler_file: SchedulerFile = None,
    output_format: Format = None,
    rows_per_shard: RowsPerShard = DEFAULT_ROWS_PER_SHARD,
    overwrite: Overwrite = False,
    fsync: Fsync = False,
    json_out: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Stack the class files into one table and label-encode the classes.

    Example: cutout-etl merge image_table_*.hdf5 -o merged.h5
    """
    read = _read_options(image_column, label_column, id_column, table_path, chunk_rows)
    options = _merge_options(classes, drop_unknown, on_conflict, match_radius, drop_invalid)
    cluster = _cluster(scheduler, workers, scheduler_file)
    result = _run(lambda p: pipeline.merge(files, output, read, options, _output(output_format, overwrite, fsync, rows_per_shard), p, cluster), quiet, debug)
    _emit(result, json_out, quiet, render.run_summary, output=output)


@app.command()
def split(
    merged: Annotated[Path, typer.Argument(help="Output of `cutout-etl merge`.", show_default=False)],
    output: Output,
    fractions: Fractions = "0.7,0.15,0.15",
    seed: Seed = 0,
    group_radius: GroupRadius = None,
    pixel_scale: PixelScale = 0.2,
    group_by: GroupBy = "none",
    cell_deg: CellDeg = 1.0,
    tolerance: Tolerance = 0.02,
    chunk_rows: ChunkRows = DEFAULT_CHUNK_ROWS,
    scheduler: Scheduler = "local",
    workers: Workers = None,
    scheduler_file: SchedulerFile = None,
    output_format: Format = None,
    rows_per_shard: RowsPerShard = DEFAULT_ROWS_PER_SHARD,
    overwrite: Overwrite = False,
    fsync: Fsync = False,
    json_out: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Split a merged file into stratified, deterministic train/val/test tables.

    Example: cutout-etl split merged.h5 -o dataset.h5 --fractions 0.7,0.15,0.15 --seed 0
    """
    options = _split_options(fractions, seed, group_radius, pixel_scale, group_by, cell_deg, tolerance)
    cluster = _cluster(scheduler, workers, scheduler_file)
    result = _run(lambda p: pipeline.split(merged, output, options, _output(output_format, overwrite, fsync, rows_per_shard), chunk_rows, p, cluster), quiet, debug)
    _emit(result, json_out, quiet, render.run_summary, output=output)


@app.command()
def stats(
    dataset: Annotated[Path, typer.Argument(help="A dataset from `build` or `split`.", show_default=False)],
    split: Annotated[str, typer.Option(help="The split to compute statistics on.")] = "train",
    chunk_rows: ChunkRows = DEFAULT_CHUNK_ROWS,
    scheduler: Scheduler = "local",
    workers: Workers = None,
    scheduler_file: SchedulerFile = None,
    fsync: Fsync = False,
    json_out: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Compute per-band statistics of the training split and store them in the dataset.

    Other splits' statistics (--split val) are stored beside the training ones, never instead.

    Example: cutout-etl stats dataset.h5
    """
    cluster = _cluster(scheduler, workers, scheduler_file)
    result = _run(lambda p: pipeline.stats(dataset, split, chunk_rows, p, cluster, fsync), quiet, debug)
    _emit(result, json_out, quiet, lambda console, metadata: render.stats_table(console, metadata, split), output=dataset)


@app.command()
def build(
    files: Inputs,
    output: Output,
    image_column: ImageColumn = "image",
    label_column: LabelColumn = "SPECTYPE",
    id_column: IdColumn = "ID",
    table_path: TablePath = None,
    classes: Classes = None,
    drop_unknown: DropUnknown = False,
    drop_invalid: DropInvalid = False,
    on_conflict: OnConflict = "error",
    match_radius: MatchRadius = 1.0,
    fractions: Fractions = "0.7,0.15,0.15",
    seed: Seed = 0,
    group_radius: GroupRadius = None,
    pixel_scale: PixelScale = 0.2,
    group_by: GroupBy = "none",
    cell_deg: CellDeg = 1.0,
    tolerance: Tolerance = 0.02,
    chunk_rows: ChunkRows = DEFAULT_CHUNK_ROWS,
    scheduler: Scheduler = "local",
    workers: Workers = None,
    scheduler_file: SchedulerFile = None,
    output_format: Format = None,
    rows_per_shard: RowsPerShard = DEFAULT_ROWS_PER_SHARD,
    overwrite: Overwrite = False,
    fsync: Fsync = False,
    json_out: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Merge, split and compute statistics in one run: the main job.

    Example: cutout-etl build image_table_*.hdf5 -o dataset.h5 --seed 0

    On a Dask cluster: cutout-etl build image_table_*.hdf5 -o dataset.h5 --scheduler dask --workers 4
    """
    read = _read_options(image_column, label_column, id_column, table_path, chunk_rows)
    merge_options = _merge_options(classes, drop_unknown, on_conflict, match_radius, drop_invalid)
    split_options = _split_options(fractions, seed, group_radius, pixel_scale, group_by, cell_deg, tolerance)
    cluster = _cluster(scheduler, workers, scheduler_file)
    result = _run(lambda p: pipeline.build(files, output, read, merge_options, split_options, _output(output_format, overwrite, fsync, rows_per_shard), p, cluster), quiet, debug)

    def show(console: Console, metadata: dict) -> None:
        render.run_summary(console, metadata)
        render.stats_table(console, metadata)

    _emit(result, json_out, quiet, show, output=output)


@app.command()
def convert(
    source: Annotated[Path, typer.Argument(help="A dataset: HDF5 file or Parquet directory.", show_default=False)],
    output: Annotated[str, typer.Argument(help="The converted dataset (format from the path, or --format).", show_default=False)],
    output_format: Format = None,
    rows_per_shard: RowsPerShard = DEFAULT_ROWS_PER_SHARD,
    overwrite: Overwrite = False,
    fsync: Fsync = False,
    json_out: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Convert a dataset between HDF5 and Parquet, losslessly (checked by the content digest).

    Example: cutout-etl convert dataset.h5 dataset_parquet/
    """
    options = _output(output_format, overwrite, fsync, rows_per_shard)  # the format follows the output path, as for build
    result = _run(lambda p: pipeline.convert(source, output, options, p), quiet, debug)
    _emit(result, json_out, quiet, render.run_summary, output=output)


@app.command()
def verify(
    dataset: Annotated[Path, typer.Argument(help="A dataset (or merged file) written by cutout-etl.", show_default=False)],
    json_out: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Check a dataset against its own checksums, counts, IDs and statistics.

    Exit status 0 only when everything holds; otherwise each failure is listed.

    Example: cutout-etl verify dataset.h5 --json
    """
    from .verify import verify as verify_dataset

    report = _run(lambda p: verify_dataset(dataset, p), quiet, debug)
    _emit(report, json_out, quiet, render.verify_report)
    raise typer.Exit(0 if report["ok"] else 1)


@app.command()
def preview(
    inputs: Annotated[list[Path], typer.Argument(help="One dataset (from build, split or merge), or class files.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The grid PNG to write (replaced if it exists).", show_default=False)],
    per_class: Annotated[int, typer.Option(help="Examples per class, one grid row each.", min=1, max=50)] = 6,
    split: Annotated[str | None, typer.Option(help="Dataset split to draw from [default: train, or a merged file's only table].", show_default=False)] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random draw of examples.", min=0)] = 0,
    hist: Annotated[Path | None, typer.Option(help="Also write this PNG: per band, pixel and central-flux distributions, one curve per class, and colours.", show_default=False)] = None,
    hist_per_class: Annotated[int, typer.Option(help="Objects per class drawn for --hist.", min=1)] = 2000,
    image_column: ImageColumn = "image",
    label_column: LabelColumn = "SPECTYPE",
    id_column: IdColumn = "ID",
    table_path: TablePath = None,
    chunk_rows: ChunkRows = DEFAULT_CHUNK_ROWS,
    json_out: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Draw example cutouts band by band, grouped by class, on one stretch for every object.

    Each band is shown as asinh((x - sky) / (3 sky sigma)) with the dataset's stored
    statistics (computed from the drawn cutouts for class files), so brightness and
    colour differences stay visible; a colour composite of i, r, g ends each row.
    Reads only the rows it draws. Needs the plot extra (matplotlib).

    Example: cutout-etl preview dataset.h5 -o preview.png --hist hist.png
    """
    from .preview import preview as draw_preview

    read = _read_options(image_column, label_column, id_column, table_path, chunk_rows)
    result = _run(lambda p: draw_preview(inputs, output, per_class, split, seed, hist, hist_per_class, read, p), quiet, debug)

    def show(console: Console, summary: dict) -> None:
        shown = ", ".join(f"{c} {n}" for c, n in summary["shown_per_class"].items())
        where = summary["name"] + (f", {summary['split']} split" if summary["split"] else "")
        console.print(f"wrote {summary['output']}: {shown} from {where}", highlight=False, markup=False)
        console.print(f"softening: {summary['softening']['source']}", highlight=False, markup=False)
        if summary.get("hist"):
            counts = ", ".join(f"{c} {n}" for c, n in summary["histogram_objects_per_class"].items())
            console.print(f"wrote {summary['hist']}: distributions of {counts} objects", highlight=False, markup=False)

    _emit(result, json_out, quiet, show)


@app.command("demo-data")
def demo_data(
    directory: Annotated[Path, typer.Argument(help="Where to write the three class files.", show_default=False)],
    rows: Annotated[int, typer.Option(help="Rows per class.", min=1)] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace demo files written earlier by demo-data (never other files).")] = False,
    json_out: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Write three synthetic class files in the users' format (for demos and tests).

    Example: cutout-etl demo-data demo/ --rows 1000
    """
    from .demo import write_demo_files

    paths = _run(
        lambda p: write_demo_files(directory, rows=rows, seed=seed, overwrite=overwrite),
        quiet,
        debug,
        interrupted="no partial file written",
    )
    result = {"files": [str(p) for p in paths], "rows_per_class": rows, "seed": seed}
    _emit(result, json_out, quiet, lambda console, r: console.print("wrote " + ", ".join(r["files"])), output=directory)


def main() -> None:
    app()
