"""The output formats, and the one place that chooses among them.

`choose(target, name)` picks the format of an output (`--format`, else the
path); `detect(path)` the format of an existing dataset. Both try the formats
in registry order; the last one (HDF5) is the default that takes any path no
other format claims. Adding a format: one module with an `OutputFormat`
subclass (see `base.py`) and one line in `FORMATS` (`FormatName`, the CLI's choices, follows it).
`atomic.py` writes any of them safely: a temporary file beside the target, the overwrite
guards, then a rename. The formats receive blocks from `execution`; datasets are read back by `dataset`.
"""

from __future__ import annotations

from pathlib import Path

from ..choices import Choice
from ..errors import UsageError
from .base import OutputFormat, Sink, Table
from .hdf5 import HDF5Format
from .parquet import ParquetFormat

FORMATS: dict[str, OutputFormat] = {
    "parquet": ParquetFormat(),
    "hdf5": HDF5Format(),  # last: the default
}


# The --format choices follow the registry: a format is one module and one line in FORMATS.
# (mypy cannot type an Enum made from a list known at run time, hence the ignore.)
FormatName = Choice("FormatName", [(name.upper(), name) for name in sorted(FORMATS)])  # type: ignore[call-overload]


__all__ = ["FORMATS", "FormatName", "OutputFormat", "Sink", "Table", "by_name", "choose", "detect", "foreign_problem"]


def by_name(name: str) -> OutputFormat:
    """The format called `name`; UsageError listing the known ones otherwise."""
    try:
        return FORMATS[name]
    except KeyError:
        known = ", ".join(repr(n) for n in sorted(FORMATS))
        raise UsageError(f"--format: {name!r} is not one of {known}") from None


def choose(target: str | Path, name: str | None = None) -> OutputFormat:
    """The format of an output: `name` (--format) if given, else the first format the path asks for.

    Pass the path as the user typed it: pathlib drops a trailing slash, which asks for a directory format.
    """
    if name is not None:
        return by_name(name)
    return next(f for f in FORMATS.values() if f.wants_target(target))


def detect(path: Path) -> OutputFormat:
    """The format of an existing dataset (the default's reader names what is wrong with anything else)."""
    return next((f for f in FORMATS.values() if f.guess_can_open(path)), list(FORMATS.values())[-1])


def foreign_problem(target: Path) -> str | None:
    """None if `target` is a dataset some format wrote (and only that), else what --overwrite objects to."""
    problems = [f.foreign_problem(target) for f in FORMATS.values() if f.directory == target.is_dir()]
    if None in problems:
        return None
    return problems[0] if problems else "not a cutout-etl dataset"
