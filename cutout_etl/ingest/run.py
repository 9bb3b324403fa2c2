"""`ingest`: per-band FITS cutouts and a catalogue in, one seed-format class file per class out.

1. read the catalogue (ID, RA, Dec, class of every row: small);
2. match every row to its file in each band (`matching`), from the directory listings alone;
3. in chunks of rows, in catalogue order: workers read the chunk's files (`cutouts.read_chunk`), and the
   kept images are appended to their class file (`formats.class_file`), each written to a temporary beside
   its target and renamed into place only when the whole run succeeded.
At most a few chunks of images are in memory at any time.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..errors import UsageError
from ..execution.dask_cluster import ClusterOptions
from ..formats import atomic
from ..formats.class_file import ClassFileWriter, replace_only_marked
from ..inputs.scan import ProgressFn, no_progress
from .catalogue import read_catalogue
from .cutouts import ChunkResult
from .matching import list_band, match_band
from .options import IngestOptions
from .stream import stream

INGEST_ATTR = "cutout_etl_ingest"  # root attribute of a class file ingest wrote (JSON): --overwrite replaces only these
CLASS_FILE_NAMES = {
    "GALAXY": "image_table_galaxies.hdf5",
    "QSO": "image_table_qso.hdf5",
    "STAR": "image_table_stars.hdf5",
}


def class_file_name(name: str) -> str:
    """The users' names for the three classes; image_table_<name>.hdf5 for any other."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._").lower() or "unnamed"
    return CLASS_FILE_NAMES.get(name.upper(), f"image_table_{safe}.hdf5")


def ingest(
    catalogue_path: Path,
    cutouts: Path,
    out_dir: Path,
    options: IngestOptions | None = None,
    progress: ProgressFn = no_progress,
    cluster: ClusterOptions | None = None,
) -> dict:
    """Write one class file per class into `out_dir`; return the report (counts per reason, files, rounding)."""
    options = options or IngestOptions()
    options.check()
    started = time.perf_counter()
    catalogue = read_catalogue(catalogue_path, options.columns, options.table_path)
    cols = options.columns
    matches = [
        match_band(catalogue, list_band(cutouts, b), options.match_tolerance, cols.ra, cols.dec) for b in options.bands
    ]
    classes = catalogue.class_names()
    targets = _targets(out_dir, classes, options.overwrite, [catalogue_path, cutouts])
    tally = _Tally()
    with _class_outputs(targets, options.overwrite, _mark(catalogue_path, options)) as writers:
        stream(catalogue, classes, matches, writers, options, tally, progress, cluster or ClusterOptions())
    rows = tally.rows_per_class
    return {
        "kind": "ingest",
        "catalogue": str(catalogue_path),
        "cutouts": str(cutouts),
        "bands": list(options.bands),
        "size": [options.size, options.size],
        "policies": vars(options.policies()),
        "rows_read": len(catalogue),
        "rows_kept": int(sum(rows.values())),
        "dropped": tally.dropped,
        "kept_changed": tally.kept_changed,
        "class_files": {n: {"path": str(targets[n]), "rows": rows.get(n, 0)} for n in sorted(targets) if rows.get(n)},
        "classes_without_rows": sorted(n for n in targets if not rows.get(n)),
        "bands_report": {m.files.band: m.report() for m in matches},
        "files_read": tally.files_read,
        "bytes_read": tally.bytes_read,
        "max_relative_rounding": tally.max_relative_rounding,
        "seconds": time.perf_counter() - started,
    }


@dataclass
class _Tally:
    dropped: dict[str, int] = field(default_factory=dict)
    kept_changed: dict[str, int] = field(default_factory=dict)
    rows_per_class: dict[str, int] = field(default_factory=dict)
    files_read: int = 0
    bytes_read: int = 0
    max_relative_rounding: float = 0.0

    def drop(self, reason: str, count: int = 1) -> None:
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + count

    def add(self, result: ChunkResult) -> None:
        for reason in result.dropped.values():
            self.drop(reason)
        for reason, count in result.kept_changed.items():
            self.kept_changed[reason] = self.kept_changed.get(reason, 0) + count
        self.files_read += result.files_read
        self.bytes_read += result.bytes_read
        self.max_relative_rounding = max(self.max_relative_rounding, result.max_relative_rounding)


def _targets(out_dir: Path, classes: np.ndarray, overwrite: bool, inputs: list[Path]) -> dict[str, Path]:
    """The class files' paths, checked before any work (exists without --overwrite, not ours, unwritable)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = {str(name): out_dir / class_file_name(str(name)) for name in sorted(set(classes.tolist()))}
    by_path: dict[Path, str] = {}
    for name, path in targets.items():
        if path in by_path:
            raise UsageError(f"{path}: classes '{by_path[path]}' and '{name}' would both be written here")
        by_path[path] = name
        atomic.check_target(path, overwrite, may_replace=_ingested_file, protected=inputs)
        atomic.check_writable(path)
    return targets


_ingested_file = replace_only_marked(INGEST_ATTR, "class file", "ingest")  # --overwrite replaces only ours


def _mark(catalogue_path: Path, options: IngestOptions) -> str:
    generator = f"cutout-etl {__version__} ingest"
    return json.dumps({"generator": generator, "catalogue": catalogue_path.name, "bands": list(options.bands)})


class _NoRows(Exception):
    """A class whose every row was dropped: its temporary is removed, no file is written."""


@contextlib.contextmanager
def _class_outputs(targets: dict[str, Path], overwrite: bool, mark: str) -> Iterator[dict[str, ClassFileWriter]]:
    """A streaming writer per class; every file is renamed into place only if the whole run succeeds."""
    with contextlib.ExitStack() as stack:
        writers = {name: stack.enter_context(_class_output(path, overwrite, mark)) for name, path in targets.items()}
        yield writers


@contextlib.contextmanager
def _class_output(target: Path, overwrite: bool, mark: str) -> Iterator[ClassFileWriter]:
    try:
        with atomic.atomic_output(target, overwrite, may_replace=_ingested_file) as tmp:
            writer = ClassFileWriter(tmp)
            try:
                yield writer
            finally:
                writer.close()
            if writer.rows == 0:
                raise _NoRows
            with h5py.File(tmp, "r+") as f:
                f.attrs[INGEST_ATTR] = mark
    except _NoRows:
        pass
