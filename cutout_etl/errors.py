"""Every user-facing failure, one class per kind.

The library raises these; only the CLI turns them into a message and an exit
code. Each message is one line and names the file it is about.
"""

from __future__ import annotations


class CutoutEtlError(Exception):
    """Base class: the CLI catches this, prints one line and exits."""

    exit_code = 1


class UsageError(CutoutEtlError):
    """The command line asks for something impossible (exit status 2)."""

    exit_code = 2


class OutputExistsError(UsageError):
    """The output path exists and --overwrite was not given."""


class InputFileError(CutoutEtlError):
    """A path is missing, a directory, not HDF5, truncated or unreadable."""


class DuplicateInputError(CutoutEtlError):
    """The same file (or identical content) was given twice."""


class NoTableError(CutoutEtlError):
    """A file holds no cutout table, or several and no --table-path."""


class EmptyTableError(CutoutEtlError):
    """A table has zero rows."""


class ColumnError(CutoutEtlError):
    """A required column is missing or has the wrong type."""


class ImageShapeError(CutoutEtlError):
    """The image column is not (H, W, bands), or shapes differ across files."""


class UnknownLabelError(CutoutEtlError):
    """Labels outside the class list (and --drop-unknown not given)."""


class LabelConflictError(CutoutEtlError):
    """One ID carries different labels (and --on-conflict drop not given)."""


class SplitError(CutoutEtlError):
    """A class has too few rows for the requested splits."""


class DatasetError(CutoutEtlError):
    """A file is not a cutout-etl dataset, or its metadata is unreadable."""


class OutputWriteError(CutoutEtlError):
    """The output cannot be written (permissions, disk full)."""


class InvalidRowError(CutoutEtlError):
    """Rows with an empty ID or an impossible sky position (and --drop-invalid not given)."""


class MissingClassError(CutoutEtlError):
    """A class of the class list has no rows to write."""


class InputChangedError(CutoutEtlError):
    """An input file was replaced or rewritten while the run read it."""


class ClusterError(CutoutEtlError):
    """The Dask cluster failed the run: no scheduler file, too few workers, workers or scheduler lost."""


class ChecksumError(DatasetError):
    """A block of a dataset read as input does not match its stored checksum."""


class OutputAppearedError(OutputExistsError):
    """The output path appeared while the run was writing (another run aimed at it)."""


class ForeignOutputError(UsageError):
    """--overwrite aimed at something cutout-etl did not write, or that holds an input."""


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP stopped the run (exit status 128 + the signal number).

    A KeyboardInterrupt, so every cleanup written for Ctrl-C (`finally`,
    `except KeyboardInterrupt`) also runs for `timeout`, `scancel` or `docker stop`.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class CutoutFileError(CutoutEtlError):
    """A cutout FITS file is unreadable, or contradicts its name (another band, another position)."""
