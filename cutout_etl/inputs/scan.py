"""Pass 1: open every input, check it, and read the per-row facts the plan needs.

Reads IDs, labels and pixel finiteness chunk by chunk (images are never held
beyond one chunk). What it keeps per row is small: ID, class code, source
file and row, position, two flags, and two facts of the pixels (`pixel_facts`):
a 16-byte digest of the image and the central aperture flux. Files are hashed by `FileHasher` in a background
thread while the passes run.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from ..errors import DuplicateInputError, ImageShapeError, UnknownLabelError
from ..schema import Columns, as_bytes, band_names
from . import readers
from .labels import UNKNOWN, encode_labels, normalize_labels
from .pixel_facts import DIGEST_DTYPE, aperture_band_index, aperture_flux, image_digests
from .readers import TableInfo

if TYPE_CHECKING:
    from typing_extensions import Self

ProgressFn = Callable[[str, int, int], None]


def no_progress(stage: str, done: int, total: int) -> None:
    """The default progress callback: report nothing."""


@dataclass
class ReadOptions:
    """How to find and read the input tables."""

    columns: Columns = field(default_factory=Columns)
    table_path: str | None = None
    chunk_rows: int = readers.DEFAULT_CHUNK_ROWS


@dataclass
class InputFile:
    """One input after pass 1."""

    info: TableInfo
    sha256: str = ""
    label_counts: Counter = field(default_factory=Counter)
    unknown_labels: Counter = field(default_factory=Counter)
    rows_no_finite: int = 0
    rows_partly_nonfinite: int = 0

    def describe(self) -> dict:
        return {
            "name": self.info.name,
            "path": str(self.info.path),
            "table_path": self.info.table_path,
            "size": self.info.size,
            "sha256": self.sha256,
            "rows": self.info.rows,
        }


@dataclass
class Scan:
    """Per-row facts of all inputs, files in canonical (name) order."""

    files: list[InputFile]
    classes: list[str]
    file_index: np.ndarray  # int16, index into files
    row: np.ndarray  # int64, row in that file
    ids: np.ndarray  # bytes, stripped
    codes: np.ndarray  # int16, UNKNOWN for labels outside classes
    no_finite: np.ndarray  # bool: the image has no finite pixel
    partly_nonfinite: np.ndarray  # bool: some pixels are NaN or inf, not all
    ra: np.ndarray  # float64, degrees
    dec: np.ndarray  # float64, degrees
    image_shape: tuple[int, int, int]
    read_order: list[int]  # files (canonical indices) in the order their rows appear above
    image_digest: np.ndarray = field(default_factory=lambda: np.zeros(0, DIGEST_DTYPE))  # S16 (pixel_facts)
    aperture_flux: np.ndarray = field(default_factory=lambda: np.zeros(0))  # float64, NaN if not measurable

    @property
    def id_len(self) -> int:
        return max(self.ids.dtype.itemsize, max(f.info.id_len for f in self.files))

    def describe_row(self, i: int) -> str:
        return f"{self.files[self.file_index[i]].info.name} row {self.row[i]}"


def open_inputs(
    paths: Sequence[Path], options: ReadOptions, stack: contextlib.ExitStack
) -> list[tuple[TableInfo, h5py.File]]:
    """Open and check every input; the files stay open until `stack` closes."""
    _refuse_repeated_paths(paths)
    opened = []
    for path in paths:
        f = stack.enter_context(readers.open_h5(path))
        opened.append((readers.inspect_table(path, f, options.table_path, options.columns), f))
    _check_shapes_agree([info for info, _ in opened])
    return opened


def _refuse_repeated_paths(paths: Sequence[Path]) -> None:
    for i, a in enumerate(paths):
        for b in paths[:i]:
            if a == b or readers.same_file(a, b):
                raise DuplicateInputError(f"{a}: the same file is given twice")


def _check_shapes_agree(infos: Sequence[TableInfo]) -> None:
    first = infos[0]
    for info in infos[1:]:
        if info.image_shape != first.image_shape:
            raise ImageShapeError(
                f"{info.path}: image shape {info.image_shape} differs from {first.path} {first.image_shape}"
            )


def scan_inputs(
    paths: Sequence[Path],
    classes: Sequence[str],
    options: ReadOptions,
    drop_unknown: bool = False,
    progress: ProgressFn = no_progress,
    on_chunk: Callable[[int, int, np.ndarray], None] | None = None,
) -> Scan:
    """Pass 1 over all inputs. Raises on the first unusable file.

    `on_chunk(file index, first row, records)` sees every chunk as it is read (split checks checksums there).
    """
    with contextlib.ExitStack() as stack:
        opened = open_inputs(paths, options, stack)
        total = sum(info.rows for info, _ in opened)
        facts, done, inputs = _FactColumns(total), 0, []
        for index, (info, f) in enumerate(opened):
            entry = InputFile(info=info)
            for start, chunk in readers.iter_chunks(info, f, options.chunk_rows):
                if on_chunk is not None:
                    on_chunk(index, start, chunk)
                facts.put(done, scan_chunk(entry, index, start, chunk, classes, options.columns))
                done += len(chunk)
                progress("scan", done, total)
            inputs.append(entry)
    if not drop_unknown:
        _refuse_unknown_labels(inputs, classes)
    return _canonical(inputs, facts.columns, list(classes), opened[0][0].image_shape)


class _FactColumns:
    """Pass 1's per-row facts, each chunk's written into arrays sized for all rows.

    Concatenating the chunks' parts at the end would hold every fact twice at
    that moment. A column is widened (IDs: the widest chunk's width) to the
    dtype concatenation would give, so the result is the same.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.columns: dict[str, np.ndarray] = {}

    def put(self, first: int, part: dict[str, np.ndarray]) -> None:
        for name, values in part.items():
            column = self.columns.get(name)
            if column is None:
                column = self.columns[name] = np.empty(self.total, dtype=values.dtype)
            elif np.result_type(column.dtype, values.dtype) != column.dtype:
                column = self.columns[name] = column.astype(np.result_type(column.dtype, values.dtype))
            column[first : first + len(values)] = values


def scan_chunk(entry: InputFile, index: int, start: int, chunk: np.ndarray, classes, columns: Columns) -> dict:
    """The per-row facts of one chunk (pass 1 of build, and `inspect`); adds the chunk's counts to `entry`."""
    labels = normalize_labels(chunk[columns.label])
    codes = encode_labels(labels, classes)
    entry.label_counts.update(_count(labels))
    if (codes == UNKNOWN).any():
        entry.unknown_labels.update(_count(labels[codes == UNKNOWN]))
    images = np.ascontiguousarray(chunk[columns.image])  # one copy out of the records, shared by the facts below
    all_finite, no_finite = _finiteness(images)
    entry.rows_no_finite += int(no_finite.sum())
    entry.rows_partly_nonfinite += int((~all_finite & ~no_finite).sum())
    n = len(chunk)
    return {
        "file_index": np.full(n, index, dtype=np.int16),
        "row": np.arange(start, start + n, dtype=np.int64),
        "ids": as_bytes(chunk[columns.id]),
        "codes": codes,
        "no_finite": no_finite,
        "partly_nonfinite": ~all_finite & ~no_finite,
        "ra": chunk[columns.ra].astype(np.float64),
        "dec": chunk[columns.dec].astype(np.float64),
        "image_digest": image_digests(images),
        "aperture_flux": aperture_flux(images, aperture_band_index(band_names(images.shape[-1]))),
    }


def _finiteness(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: are all pixels finite, is none finite.

    A row whose pixel sum is finite has only finite pixels, so the full
    per-pixel test runs only on the few rows whose sum is not.
    """
    flat = images.reshape(len(images), -1)
    all_finite = np.isfinite(flat.sum(axis=1))
    no_finite = np.zeros(len(images), dtype=bool)
    suspect = np.flatnonzero(~all_finite)
    if len(suspect):
        finite = np.isfinite(flat[suspect])
        all_finite[suspect] = finite.all(axis=1)
        no_finite[suspect] = ~finite.any(axis=1)
    return all_finite, no_finite


def _count(labels: np.ndarray) -> Counter:
    values, counts = np.unique(labels, return_counts=True)
    return Counter({v.decode("utf-8", "replace"): int(c) for v, c in zip(values, counts)})


class FileHasher:
    """SHA-256 of the input files, computed in a background thread.

    Hashing a file costs about as much as reading it, so it runs beside the
    passes on the second core; `finish` waits for it, stores the digests,
    refuses a digest of another file than the one pass 1 read (the hasher
    opens the path on its own) and two inputs with identical content.
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
        self._stop = threading.Event()
        self._futures = {Path(p): self._pool.submit(readers.sha256_file, Path(p), stop=self._stop) for p in paths}

    def finish(self, files: Sequence[InputFile], progress: ProgressFn = no_progress) -> None:
        seen: dict[str, Path] = {}
        for done, entry in enumerate(files, 1):
            entry.sha256, hashed = self._futures[entry.info.path].result()
            if entry.info.identity is not None:
                entry.info.identity.check(entry.info.path, hashed)
            progress("hash", done, len(files))
            if entry.sha256 in seen:
                raise DuplicateInputError(
                    f"{entry.info.path}: identical content to {seen[entry.sha256]} (the same file given twice)"
                )
            seen[entry.sha256] = entry.info.path

    def close(self) -> None:
        self._stop.set()  # results already taken are kept; a failed run stops hashing at once
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _refuse_unknown_labels(inputs: Sequence[InputFile], classes: Sequence[str]) -> None:
    for entry in inputs:
        if entry.unknown_labels:
            listed = ", ".join(f"'{v}' ({n} rows)" for v, n in entry.unknown_labels.most_common(5))
            raise UnknownLabelError(
                f"{entry.info.path}: unknown labels {listed} (classes: {', '.join(classes)}); "
                "use --classes to name them or --drop-unknown to drop them"
            )


def _canonical(inputs: list[InputFile], joined: dict[str, np.ndarray], classes: list[str], shape) -> Scan:
    """Order files by name so nothing depends on the order they were given in."""
    order = sorted(range(len(inputs)), key=lambda i: (inputs[i].info.name, str(inputs[i].info.path)))
    remap = np.empty(len(inputs), dtype=np.int16)
    remap[order] = np.arange(len(inputs), dtype=np.int16)
    return Scan(
        files=[inputs[i] for i in order],
        classes=classes,
        file_index=remap[joined["file_index"]],
        row=joined["row"],
        ids=joined["ids"],
        codes=joined["codes"],
        no_finite=joined["no_finite"],
        partly_nonfinite=joined["partly_nonfinite"],
        ra=joined["ra"],
        dec=joined["dec"],
        image_shape=shape,
        read_order=remap.tolist(),
        image_digest=joined["image_digest"],
        aperture_flux=joined["aperture_flux"],
    )
