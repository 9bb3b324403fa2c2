"""`cutout-etl ingest`: per-band FITS cutouts (as the MPI cutout generator writes them) to the users' class files."""

from __future__ import annotations

from .run import IngestOptions, LargerPolicy, MissingPolicy, SmallerPolicy, class_file_name, ingest

__all__ = ["IngestOptions", "LargerPolicy", "MissingPolicy", "SmallerPolicy", "class_file_name", "ingest"]
