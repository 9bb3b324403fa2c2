"""`cutout-etl inspect`: what is in the class files, and what is wrong with them.

Unlike the other commands, inspect does not stop at the first bad file: every
file gets a report, and problems are listed as errors or warnings. An error is
whatever would make `build` with default options fail, named with the option
that resolves it; a warning is what build handles by itself but deserves a look.
The rules build applies (`merge.resolve_duplicates`, `validate`) are the ones
used here, on the same per-row facts (`scan.scan_chunk`, build's pass 1), so
inspect predicts build. The per-band pixel summary (`steps/pixel_summary`)
runs on a second thread beside the scan; its median is a sketch median.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import xxhash

from .errors import CutoutEtlError
from .inputs import readers
from .inputs.scan import InputFile, ProgressFn, ReadOptions, no_progress, scan_chunk
from .inputs.validate import empty_ids, invalid_positions
from .inspection_rules import FileRows, examples, predict_build, problem
from .schema import DEFAULT_CLASSES, band_names
from .steps import sky
from .steps.merge import normalize_labels, parse_classes
from .steps.pixel_summary import PixelSummary

# what an unreadable file may raise besides our own errors: h5py and astropy turn corruption into these
READ_FAILURES = (CutoutEtlError, OSError, RuntimeError, ValueError, KeyError, TypeError)


def inspect_files(
    paths: Sequence[Path],
    read: ReadOptions | None = None,
    classes: Sequence[str] | None = None,
    progress: ProgressFn = no_progress,
    match_radius: float = 1.0,
    pixel_scale: float = 0.2,
) -> dict:
    """Report on each file and across files; never raises for bad input."""
    read = read or ReadOptions()
    class_list = parse_classes(classes, DEFAULT_CLASSES)
    paths = [Path(p) for p in paths]
    reports, problems, rows_of = [], [], []
    preload = threading.Thread(target=_import_sky_matching, name="import-scipy")
    preload.start()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="inspect-pixels") as pool:
        for path in paths:
            report, file_problems, rows = _inspect_one(path, read, class_list, progress, pool)
            reports.append(report)
            problems += file_problems
            rows_of.append(rows)
    parts = [rows for rows in rows_of if rows is not None]
    problems += _repeated_files(paths, rows_of)
    problems += _across_files(reports, parts)
    preload.join()
    build, duplicates, build_problems = predict_build(parts, class_list, match_radius)
    problems += build_problems
    positions = _positions(reports, parts, match_radius, pixel_scale, duplicates)
    return {
        "files": reports,
        "positions": positions,
        "build": build,
        "classes": class_list,
        "problems": problems,
        "errors": sum(p["level"] == "error" for p in problems),
        "warnings": sum(p["level"] == "warning" for p in problems),
        "ok": not any(p["level"] == "error" for p in problems),
    }


def _import_sky_matching() -> None:
    """scipy takes 0.3-0.5 s to import: on its own thread it loads while the files are read, not after."""
    try:
        import scipy.sparse.csgraph
        import scipy.spatial  # noqa: F401
    except ImportError:  # raised where sky matching needs it
        pass


def _inspect_one(path: Path, read: ReadOptions, classes: list[str], progress: ProgressFn, pool: ThreadPoolExecutor):
    report: dict = {"path": str(path), "name": path.name, "usable": False}
    try:
        with readers.open_h5(path) as f:
            report["tables"] = {t: int(f[t].shape[0]) for t in readers.find_tables(f)}
            info = readers.inspect_table(path, f, read.table_path, read.columns)
            report.update(_describe_table(info))
            problems, rows = _read_contents(report, info, f, read, classes, progress, pool)
    except READ_FAILURES as exc:  # one bad file must not stop the others being inspected
        return report, [problem("error", path.name, _one_line(path, exc))], None
    report["usable"] = True
    return report, problems, rows


def _one_line(path: Path, exc: Exception) -> str:
    if isinstance(exc, CutoutEtlError):
        return str(exc)
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{path}: cannot read, corrupt or truncated ({type(exc).__name__}: {text[:200]})"


def _describe_table(info: readers.TableInfo) -> dict:
    h, w, b = info.image_shape
    return {
        "table_path": info.table_path,
        "rows": info.rows,
        "size": info.size,
        "columns": info.column_list,
        "image": {
            "column": info.columns.image,
            "height": h,
            "width": w,
            "bands": b,
            "band_names": band_names(b),
            "dtype": str(info.image_dtype),
        },
        "label_column": info.columns.label,
    }


def _read_contents(report, info, f, read: ReadOptions, classes, progress, pool: ThreadPoolExecutor):
    entry, pixels = InputFile(info=info), PixelSummary(n_bands=info.image_shape[-1])
    facts, row_labels = _scan_file(entry, pixels, f, read, classes, progress, pool)
    report["labels"] = dict(entry.label_counts.most_common())
    report["pixels"] = pixels.summary(band_names(info.image_shape[-1]))
    report["rows_no_finite_pixel"] = entry.rows_no_finite
    report["rows_partly_nonfinite"] = entry.rows_partly_nonfinite
    ids, ra, dec = facts["ids"], facts["ra"], facts["dec"]
    duplicates = _duplicated(ids)
    report["duplicate_ids"] = {"ids": len(duplicates), "examples": examples(duplicates)}
    empty, bad_position = empty_ids(ids), invalid_positions(ra, dec)
    report["rows_empty_id"], report["rows_invalid_position"] = int(empty.sum()), int(bad_position.sum())
    digests, no_finite_rows = facts["image_digest"], facts["no_finite"]
    _, copies = np.unique(digests[~no_finite_rows], return_counts=True)  # images with no finite pixel are dropped
    report["identical_images"] = {"groups": int((copies > 1).sum()), "rows_in_groups": int(copies[copies > 1].sum())}
    rows = FileRows(info.name, ids, row_labels, ra, dec, no_finite_rows, empty | bad_position, digests)
    problems = _file_problems(report, info, classes, duplicates) + _invalid_rows(info.name, empty, bad_position)
    return problems, rows


def _scan_file(entry: InputFile, pixels: PixelSummary, f, read: ReadOptions, classes, progress, pool):
    """Build's pass 1 over one file (`scan_chunk`, the same per-row facts) and the normalised labels.

    The pixel summary of a chunk runs on `pool`'s thread while the next chunk is read and scanned;
    one chunk is in flight at a time, so memory stays bounded.
    """
    info, parts, labels, pending = entry.info, [], [], None
    try:
        for start, chunk in readers.iter_chunks(info, f, read.chunk_rows):
            part = scan_chunk(entry, 0, start, chunk, classes, info.columns)
            labels.append(normalize_labels(chunk[info.columns.label]))
            parts.append({k: part[k] for k in ("ids", "no_finite", "ra", "dec", "image_digest")})
            if pending is not None:
                pending.result()
            all_finite = ~(part["no_finite"] | part["partly_nonfinite"])
            pending = pool.submit(pixels.update, chunk[info.columns.image], all_finite)
            progress(f"inspect {info.name}", start + len(chunk), info.rows)
        if pending is not None:
            pending.result()
    finally:
        if pending is not None:
            futures.wait([pending])  # a failed file leaves no work behind for the next one
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, np.concatenate(labels)


def _invalid_rows(name: str, empty: np.ndarray, bad_position: np.ndarray) -> list[dict]:
    """Rows build refuses (inputs/validate.py's definitions); build --drop-invalid drops and counts them."""
    problems = []
    for mask, what in (
        (bad_position, "an invalid sky position (RA/Dec NaN, infinite or out of range)"),
        (empty, "an empty ID"),
    ):
        if mask.any():
            n = int(mask.sum())
            message = f"{n} rows with {what}, e.g. row {int(np.argmax(mask))}; build needs --drop-invalid to drop them"
            problems.append(problem("error", name, message, n))
    return problems


def _duplicated(ids: np.ndarray) -> np.ndarray:
    values, counts = np.unique(ids, return_counts=True)
    return values[counts > 1]


def _file_problems(report: dict, info, classes: list[str], duplicates: np.ndarray) -> list[dict]:
    name, problems = info.name, []
    unknown = {label: n for label, n in report["labels"].items() if label not in classes}
    if unknown:
        listed = ", ".join(f"'{k}' ({n})" for k, n in unknown.items())
        message = f"labels outside the classes {', '.join(classes)}: {listed}; build needs --classes to name them or --drop-unknown to drop them"
        problems.append(problem("error", name, message, sum(unknown.values())))
    majority, majority_n = next(iter(report["labels"].items()))
    others = info.rows - majority_n
    if others:
        problems.append(
            problem("warning", name, f"{others} rows are not labelled {majority}, the file's majority class", others)
        )
    if report["rows_no_finite_pixel"]:
        problems.append(
            problem(
                "warning",
                name,
                "rows whose image has no finite pixel (merge drops them)",
                report["rows_no_finite_pixel"],
            )
        )
    if report["rows_partly_nonfinite"]:
        problems.append(
            problem("warning", name, "rows with some NaN/inf pixels (kept)", report["rows_partly_nonfinite"])
        )
    if len(duplicates):
        problems.append(
            problem(
                "warning",
                name,
                f"IDs appear more than once in the file, e.g. {', '.join(examples(duplicates))}",
                len(duplicates),
            )
        )
    if info.image_dtype != np.float32:
        problems.append(problem("warning", name, f"image dtype {info.image_dtype} will be cast to float32", info.rows))
    problems += [problem("warning", name, note) for note in info.notes]
    return problems


def _repeated_files(paths: list[Path], rows_of: list[FileRows | None]) -> list[dict]:
    """The same file twice, or two files with identical content: build refuses both.

    Only files that can be identical are hashed: of equal size, and with equal per-row facts
    (IDs, labels, positions, image digests) or both unreadable.
    """
    groups: dict[tuple, list[tuple[int, Path]]] = {}
    for position, (path, rows) in enumerate(zip(paths, rows_of)):
        try:
            size = path.stat().st_size
        except OSError:
            continue  # reported with the file
        groups.setdefault((size, _facts_key(rows)), []).append((position, path))
    found = []
    for group in groups.values():
        seen: dict[str, Path] = {}
        for position, path in group if len(group) > 1 else []:
            try:
                digest, _ = readers.sha256_file(path)
            except OSError:
                continue
            if digest in seen:
                what = "the same file as" if readers.same_file(path, seen[digest]) else "identical content to"
                message = f"{path}: {what} {seen[digest]}, given twice; give each file once"
                found.append((position, problem("error", path.name, message)))
            else:
                seen[digest] = path
    return [p for _, p in sorted(found, key=lambda item: item[0])]


def _facts_key(rows: FileRows | None) -> bytes | None:
    """Equal for files with identical content (None for an unreadable file)."""
    if rows is None:
        return None
    digest = xxhash.xxh3_128()
    for values in (rows.ids, rows.labels, rows.ra, rows.dec, rows.image_digest):
        digest.update(np.ascontiguousarray(values).tobytes())
    return digest.digest()


def _across_files(reports: list[dict], parts: list[FileRows]) -> list[dict]:
    problems = []
    usable = [r for r in reports if r["usable"]]
    shapes = {(r["image"]["height"], r["image"]["width"], r["image"]["bands"]) for r in usable}
    if len(shapes) > 1:
        listed = "; ".join(
            f"{r['name']} {(r['image']['height'], r['image']['width'], r['image']['bands'])}" for r in usable
        )
        problems.append(problem("error", None, f"image shapes differ across files: {listed}", len(shapes)))
    dtypes = {r["image"]["dtype"] for r in usable}
    if len(dtypes) > 1:
        problems.append(
            problem(
                "warning",
                None,
                f"image dtypes differ across files ({', '.join(sorted(dtypes))}); output is float32",
                len(dtypes),
            )
        )
    problems += _shared_ids(parts)
    return problems


def _shared_ids(parts: list[FileRows]) -> list[dict]:
    """IDs in several files with one label: build keeps one copy (differing labels: `_predict_build`)."""
    if len(parts) < 2:
        return []
    ids = np.concatenate([p.ids for p in parts])
    labels = np.concatenate([p.labels for p in parts])
    source = np.concatenate([np.full(len(p.ids), i) for i, p in enumerate(parts)])
    order = np.lexsort((source, ids))
    ids, labels, source = ids[order], labels[order], source[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    stops = np.r_[starts[1:], len(ids)]
    multi = source[starts] != source[stops - 1]
    same = [ids[a] for a, b in zip(starts[multi], stops[multi]) if len(set(labels[a:b].tolist())) == 1]
    if not same:
        return []
    return [
        problem(
            "warning",
            None,
            f"IDs in more than one file with one label (merge keeps one), e.g. {', '.join(examples(np.array(same)))}",
            len(same),
        )
    ]


def _positions(
    reports: list[dict], parts: list[FileRows], match_radius: float, pixel_scale: float, duplicates: dict
) -> dict:
    """Duplicate positions (found by `_predict_build`), and neighbours that share pixels (split keeps them together)."""
    usable = [r for r in reports if r["usable"]]
    if not parts or not usable:
        return {}
    image = usable[0]["image"]
    group_radius = sky.half_diagonal_arcsec((image["height"], image["width"]), pixel_scale)
    valid = np.concatenate([~p.invalid for p in parts])
    ra, dec = (np.concatenate([getattr(p, k) for p in parts])[valid] for k in ("ra", "dec"))
    sizes = np.bincount(sky.components(len(ra), sky.pairs_within(ra, dec, group_radius)))
    return {
        "match_radius_arcsec": match_radius,
        **duplicates,
        "group_radius_arcsec": group_radius,
        "neighbour_groups": int((sizes > 1).sum()),
        "rows_in_neighbour_groups": int(sizes[sizes > 1].sum()),
        "largest_neighbour_group": int(sizes.max(initial=0)),
    }
