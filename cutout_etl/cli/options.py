"""The command line's shared options, each declared once, and the library options built from them.

A command takes the groups it needs (`@with_options(READ, MERGE, ...)`) and receives
their values in `**opts`; `read_options(opts)`, `merge_options(opts)`... turn them
into the library's option dataclasses. Every default is the dataclass field's own.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar

import typer

from ..execution.dask_cluster import ClusterOptions
from ..formats import FormatName
from ..inputs.scan import ReadOptions
from ..pipeline import MergeOptions, OutputOptions, SplitOptions
from ..schema import Columns
from ..steps.merge import OnConflict
from ..steps.split import GroupBy
from ..steps.split_methods import SplitMethod
from .usage import finite_float, finite_floats

Command = TypeVar("Command", bound=Callable[..., Any])
Opts = Mapping[str, Any]


def default(options: type, name: str) -> Any:
    """The default of field `name` of the option dataclass `options`."""
    field = next(f for f in dataclasses.fields(options) if f.name == name)
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise TypeError(f"{options.__name__}.{name} has no default")


def argument_default(function: Callable[..., Any], name: str) -> Any:
    """The default of argument `name` of a library function (for options that are no dataclass field)."""
    return inspect.signature(function).parameters[name].default


def _option(name: str, kind: Any, default: Any, *decls: str, **info: Any) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[kind, typer.Option(*decls, **info)], default=default
    )


def _finite(name: str, kind: Any, default: Any, help: str, minimum: float, **info: Any) -> inspect.Parameter:
    return _option(name, kind, default, help=f"{help} [finite, x>={minimum:g}]", parser=finite_float(minimum), **info)


def _flag(name: str, help: str, *short: str, default: bool = False) -> inspect.Parameter:
    return _option(name, bool, default, "--" + name.replace("_", "-"), *short, help=help)


_COLUMNS = Columns()
_CLASSES_HELP = "Class names in code order, e.g. GALAXY,QSO,STAR [default: GALAXY,QSO,STAR sorted]."

COLUMNS = (
    _option("image_column", str, _COLUMNS.image, help="Image column (H, W, bands)."),
    _option("label_column", str, _COLUMNS.label, help="Class-name column."),
    _option("id_column", str, _COLUMNS.id, help="Object ID column."),
    _option(
        "table_path",
        str | None,
        default(ReadOptions, "table_path"),
        help="Table inside each file, when a file holds several.",
    ),
)
CLASSES = (_option("classes", str | None, default(MergeOptions, "classes"), help=_CLASSES_HELP, show_default=False),)
MERGE = (
    *CLASSES,
    _flag(
        "drop_unknown",
        "Drop rows whose label is not a class (counted) instead of failing.",
        default=default(MergeOptions, "drop_unknown"),
    ),
    _flag(
        "drop_invalid",
        "Drop rows with an empty ID or an invalid RA/Dec (NaN, infinite, out of range; counted) instead of failing.",
        default=default(MergeOptions, "drop_invalid"),
    ),
    _flag(
        "keep_duplicate_images",
        "Keep identical images under different IDs (all copies, in one split) instead of keeping the smallest ID.",
        default=default(MergeOptions, "keep_duplicate_images"),
    ),
    _option(
        "on_conflict",
        OnConflict,
        OnConflict(default(MergeOptions, "on_conflict")),
        help="One ID with different labels: 'error' or 'drop' (all copies, counted).",
    ),
    _finite(
        "match_radius",
        float,
        default(MergeOptions, "match_radius"),
        "Objects closer than this (arcsec) are one object (0: off).",
        0,
    ),
)
SPLIT = (
    _option(
        "fractions",
        str,
        ",".join(f"{f:g}" for f in default(SplitOptions, "fractions")),
        help="Train,val,test fractions.",
    ),
    _option(
        "seed",
        int,
        default(SplitOptions, "seed"),
        help="Seed of the keyed hash that assigns splits.",
        min=0,
        max=2**63 - 1,
    ),
    _finite(
        "group_radius",
        float | None,
        default(SplitOptions, "group_radius"),
        "Objects closer than this (arcsec) share a split [default: the cutout's half-diagonal] (0: off).",
        0,
        show_default=False,
    ),
    _finite(
        "pixel_scale",
        float,
        default(SplitOptions, "pixel_scale"),
        "Arcsec per pixel, for the default group radius (KiDS: 0.2).",
        0,
    ),
    _option(
        "group_by",
        GroupBy,
        GroupBy(default(SplitOptions, "group_by")),
        help="'sky': whole sky cells go to one split; 'none'.",
    ),
    _finite(
        "cell_deg", float, default(SplitOptions, "cell_deg"), "Sky cell size in degrees, with --group-by sky.", 0.001
    ),
    _option(
        "split_method",
        SplitMethod,
        SplitMethod(default(SplitOptions, "method")),
        help="'exact': exact per-class counts; 'stable': each object's split from (seed, ID) alone, so adding "
        "rows never moves one (class fractions within binomial error, reported).",
    ),
    _finite(
        "faint_test",
        float,
        default(SplitOptions, "faint_test"),
        "Put this fraction of each class, faintest r-band central aperture flux first, in an extra table "
        "test_faint before splitting the rest (0: off).",
        0,
    ),
    _finite(
        "tolerance",
        float,
        default(SplitOptions, "tolerance"),
        "Allowed gap between a class's achieved and target split fraction (reported).",
        0,
    ),
)
CHUNKS = (
    _option(
        "chunk_rows",
        int,
        default(ReadOptions, "chunk_rows"),
        min=1,
        help="Rows read per chunk (bounds memory: ~21 KB a row); also the checksum block, so the digest depends on it.",
    ),
)
CLUSTER = (
    _option(
        "scheduler",
        str,
        default(ClusterOptions, "scheduler"),
        help="Where rows are written: local (this process), dask (a LocalCluster of --workers processes) or a "
        "Dask scheduler address, e.g. tcp://host:8786.",
    ),
    _option(
        "workers",
        int | None,
        default(ClusterOptions, "workers"),
        min=1,
        show_default=False,
        help="With --scheduler dask: worker processes [default: the CPUs this process may use, as SLURM or taskset allow]; "
        "with an address: wait for this many workers.",
    ),
    _option(
        "scheduler_file",
        str | None,
        default(ClusterOptions, "scheduler_file"),
        show_default=False,
        help="A Dask scheduler file (as dask-jobqueue or dask-mpi write it) instead of --scheduler.",
    ),
    _finite(
        "worker_timeout",
        float,
        default(ClusterOptions, "worker_timeout"),
        "Seconds to wait for the scheduler file, for the workers, or for any worker after all were lost; then exit 1.",
        0.1,
    ),
)
FSYNC = (
    _flag(
        "fsync",
        "Flush the output to disk before renaming it into place, and the directory entry after "
        "(survives a power cut; costs a full writeback).",
        default=default(OutputOptions, "fsync"),
    ),
)
OUTPUT = (
    _option(
        "output_format",
        FormatName | None,
        default(OutputOptions, "format"),
        "--format",
        show_default=False,
        help="hdf5 or parquet [default: from the output path].",
    ),
    _option(
        "rows_per_shard",
        int,
        default(OutputOptions, "rows_per_shard"),
        min=1,
        help="Parquet: rows per shard file (16384 = ~340 MB).",
    ),
    _flag(
        "overwrite",
        "Replace an output cutout-etl wrote earlier (never another file, nor a directory holding "
        "other files or an input).",
        default=default(OutputOptions, "overwrite"),
    ),
    *FSYNC,
)
COMMON = (
    _option("json_out", bool, False, "--json", help="Print a JSON summary on stdout (and nothing else there)."),
    _flag("quiet", "No progress or summary on stderr.", "-q"),
    _flag("debug", "Show tracebacks."),
)


def with_options(*groups: tuple[inspect.Parameter, ...]) -> Callable[[Command], Command]:
    """Add the option groups to a command's signature (what Typer reads); their values arrive in `**opts`."""

    def add(command: Command) -> Command:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        shared = [p for group in groups for p in group]
        command.__signature__ = signature.replace(parameters=[*own, *shared])  # type: ignore[attr-defined]
        return command

    return add


def class_list(opts: Opts) -> list[str] | None:
    return opts["classes"].split(",") if opts["classes"] is not None else None  # "" is no class: a usage error


def read_options(opts: Opts) -> ReadOptions:
    columns = Columns(id=opts["id_column"], label=opts["label_column"], image=opts["image_column"])
    return ReadOptions(columns, opts["table_path"], opts["chunk_rows"])


def merge_options(opts: Opts) -> MergeOptions:
    on_conflict = OnConflict(opts["on_conflict"]).value
    return MergeOptions(
        class_list(opts),
        opts["drop_unknown"],
        on_conflict,
        opts["match_radius"],
        opts["drop_invalid"],
        opts["keep_duplicate_images"],
    )


def split_options(opts: Opts) -> SplitOptions:
    fractions = finite_floats(opts["fractions"], "--fractions")
    return SplitOptions(
        fractions,
        opts["seed"],
        opts["group_radius"],
        opts["pixel_scale"],
        GroupBy(opts["group_by"]).value,
        opts["cell_deg"],
        opts["tolerance"],
        SplitMethod(opts["split_method"]).value,
        opts["faint_test"],
    )


def output_options(opts: Opts) -> OutputOptions:
    fmt = FormatName(opts["output_format"]).value if opts["output_format"] is not None else None
    return OutputOptions(fmt, opts["overwrite"], opts["fsync"], opts["rows_per_shard"])


def cluster_options(opts: Opts) -> ClusterOptions:
    return ClusterOptions(
        scheduler=opts["scheduler"],
        workers=opts["workers"],
        scheduler_file=opts["scheduler_file"],
        worker_timeout=opts["worker_timeout"],
        show_logs=opts["debug"],
    )
