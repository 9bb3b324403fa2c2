"""The streaming pass of `ingest`: chunks of catalogue rows to workers, their images to the class files, in order."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.table import Table

from ..execution.dask_cluster import ClusterOptions
from ..formats.class_file import ClassFileWriter
from ..inputs.scan import ProgressFn
from .catalogue import Catalogue
from .cutouts import ChunkResult, ObjectTask, Policies, read_chunk
from .matching import BandMatch
from .workers import workers

if TYPE_CHECKING:
    from .run import IngestOptions, _Tally


def stream(
    catalogue: Catalogue,
    classes: np.ndarray,
    matches: list[BandMatch],
    writers: dict[str, ClassFileWriter],
    options: IngestOptions,
    tally: _Tally,
    progress: ProgressFn,
    cluster: ClusterOptions,
) -> None:
    """Read every kept row's files in chunks (a bounded number in flight) and append the images in catalogue order."""
    policies, bands, shape = options.policies(), list(options.bands), (options.size, options.size)
    total, done = len(catalogue), 0
    progress("ingest", 0, total)
    with workers(cluster, -(-total // options.chunk_rows)) as (submit, depth):
        pending: deque[tuple[int, Any]] = deque()
        for first in range(0, total, options.chunk_rows):
            rows = range(first, min(first + options.chunk_rows, total))
            tasks = [task for task in (_task(row, matches, policies, tally) for row in rows) if task is not None]
            pending.append((len(rows), submit(read_chunk, tasks, bands, shape, policies)))
            while len(pending) >= depth:
                done += _finish(pending.popleft(), catalogue, classes, writers, tally)
                progress("ingest", done, total)
        while pending:
            done += _finish(pending.popleft(), catalogue, classes, writers, tally)
            progress("ingest", done, total)


def _task(row: int, matches: list[BandMatch], policies: Policies, tally: _Tally) -> ObjectTask | None:
    """The row's files, or None when a band has no file and the policy drops the row (counted)."""
    files: list[str | None] = []
    positions: list[tuple[float, float] | None] = []
    missing: list[str] = []
    for match in matches:
        index = int(match.file_of_row[row])
        if index < 0:
            files.append(None)
            positions.append(None)
            missing.append("no_overlap" if match.no_overlap[row] else "missing_band")
            continue
        files.append(str(match.files.directory / match.files.names[index]))
        positions.append((float(match.files.ra[index]), float(match.files.dec[index])))
    if len(missing) == len(matches):
        tally.drop("no_overlap" if "no_overlap" in missing else "no_cutout_in_any_band")
        return None
    if missing and policies.missing == "drop":
        tally.drop(missing[0])
        return None
    return ObjectTask(row, files, positions, [f"nan_filled_{reason}" for reason in dict.fromkeys(missing)])


def _finish(
    entry: tuple[int, Any],
    catalogue: Catalogue,
    classes: np.ndarray,
    writers: dict[str, ClassFileWriter],
    tally: _Tally,
) -> int:
    """Wait for one chunk, count what happened, append its kept rows to their class files; the chunk's row count."""
    n_rows, future = entry
    result: ChunkResult = future.result()
    tally.add(result)
    if not result.kept_rows:
        return n_rows
    kept = np.asarray(result.kept_rows)
    images = np.stack(result.images)
    names = classes[kept]
    for name in dict.fromkeys(names.tolist()):
        mine = names == name
        rows = kept[mine]
        block = Table(
            {
                "ID": catalogue.ids[rows],
                "RAJ2000": np.asarray(catalogue.ra[rows], dtype=np.float64),
                "DECJ2000": np.asarray(catalogue.dec[rows], dtype=np.float64),
                "SPECTYPE": catalogue.labels[rows],
                "image": images[mine],
            },
            copy=False,
        )
        writers[name].append(block)
        tally.rows_per_class[name] = tally.rows_per_class.get(name, 0) + len(rows)
    return n_rows
