"""`cutout-etl ingest`: per-band FITS cutouts (as the MPI cutout generator writes them) to the users' class files.

`ingest` and `class_file_name` load astropy and scipy: they are imported on first use, so that
importing the options (as the CLI does at start-up) stays cheap.
"""

from __future__ import annotations

from typing import Any

from .options import IngestOptions, LargerPolicy, MissingPolicy, SmallerPolicy

__all__ = ["IngestOptions", "LargerPolicy", "MissingPolicy", "SmallerPolicy", "class_file_name", "ingest"]


def __getattr__(name: str) -> Any:
    if name in ("ingest", "class_file_name"):
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
