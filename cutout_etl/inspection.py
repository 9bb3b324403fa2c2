"""`cutout-etl inspect`: what is in the class files, and what is wrong with them.

Unlike the other commands, inspect does not stop at the first bad file: every
file gets a report, and problems are listed as errors or warnings. An error is
whatever would make `build` with default options fail, named with the option
that resolves it; a warning is what build handles by itself but deserves a look.
The rules build applies (`merge.resolve_duplicates`, `validate`) are the ones
used here, on the same per-row facts, so inspect predicts build.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CutoutEtlError
from .inputs import readers
from .inputs.scan import ProgressFn, ReadOptions, no_progress
from .inputs.validate import empty_ids, invalid_positions
from .schema import DEFAULT_CLASSES, as_bytes, band_names
from .steps import sky
from .steps.merge import UNKNOWN, encode_labels, normalize_labels, parse_classes, resolve_duplicates
from .steps.split import parse_fractions
from .steps.stats import BandStats

MAX_EXAMPLES = 5
BUILD_SPLITS = sum(f > 0 for f in parse_fractions((0.7, 0.15, 0.15)))  # build's default fractions
# what an unreadable file may raise besides our own errors: h5py and astropy turn corruption into these
READ_FAILURES = (CutoutEtlError, OSError, RuntimeError, ValueError, KeyError, TypeError)


@dataclass
class FileRows:
    """The per-row facts of one file that build's rules look at (no images)."""

    name: str
    ids: np.ndarray  # stripped bytes
    labels: np.ndarray  # normalised bytes
    ra: np.ndarray
    dec: np.ndarray
    no_finite: np.ndarray  # bool
    invalid: np.ndarray  # bool: empty ID or invalid position


def _problem(level: str, file: str | None, message: str, count: int | None = None) -> dict:
    return {"level": level, "file": file, "message": message, "count": count}


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
    reports, problems, parts = [], [], []
    for path in map(Path, paths):
        report, file_problems, rows = _inspect_one(path, read, class_list, progress)
        reports.append(report)
        problems += file_problems
        if rows is not None:
            parts.append(rows)
    problems += _repeated_files([Path(p) for p in paths])
    problems += _across_files(reports, parts)
    build, duplicates, build_problems = _predict_build(parts, class_list, match_radius)
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


def _inspect_one(path: Path, read: ReadOptions, classes: list[str], progress: ProgressFn):
    report: dict = {"path": str(path), "name": path.name, "usable": False}
    try:
        with readers.open_h5(path) as f:
            report["tables"] = {t: int(f[t].shape[0]) for t in readers.find_tables(f)}
            info = readers.inspect_table(path, f, read.table_path, read.columns)
            report.update(_describe_table(info))
            problems, rows = _read_contents(report, info, f, read, classes, progress)
    except READ_FAILURES as exc:  # one bad file must not stop the others being inspected
        return report, [_problem("error", path.name, _one_line(path, exc))], None
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


def _read_contents(report, info, f, read: ReadOptions, classes, progress):
    labels: Counter = Counter()
    acc = BandStats(n_bands=info.image_shape[-1])
    id_parts, label_parts, ra_parts, dec_parts, no_finite_parts, no_finite, partly = [], [], [], [], [], 0, 0
    for start, chunk in readers.iter_chunks(info, f, read.chunk_rows):
        normalised = normalize_labels(chunk[info.columns.label])
        values, counts = np.unique(normalised, return_counts=True)
        labels.update({v.decode("utf-8", "replace"): int(c) for v, c in zip(values, counts)})
        images = chunk[info.columns.image]
        acc.update(images.astype(np.float32, copy=False))
        finite = np.isfinite(images)
        any_finite, all_finite = finite.any(axis=(1, 2, 3)), finite.all(axis=(1, 2, 3))
        no_finite += int((~any_finite).sum())
        partly += int((any_finite & ~all_finite).sum())
        no_finite_parts.append(~any_finite)
        id_parts.append(as_bytes(chunk[info.columns.id]))
        label_parts.append(normalised)
        ra_parts.append(chunk[info.columns.ra].astype(np.float64))
        dec_parts.append(chunk[info.columns.dec].astype(np.float64))
        progress(f"inspect {info.name}", start + len(chunk), info.rows)
    ids, row_labels = np.concatenate(id_parts), np.concatenate(label_parts)
    report["labels"] = dict(labels.most_common())
    report["pixels"] = _pixel_summary(acc, info)
    report["rows_no_finite_pixel"] = no_finite
    report["rows_partly_nonfinite"] = partly
    duplicates = _duplicated(ids)
    report["duplicate_ids"] = {"ids": len(duplicates), "examples": _examples(duplicates)}
    ra, dec = np.concatenate(ra_parts), np.concatenate(dec_parts)
    empty, bad_position = empty_ids(ids), invalid_positions(ra, dec)
    report["rows_empty_id"], report["rows_invalid_position"] = int(empty.sum()), int(bad_position.sum())
    rows = FileRows(info.name, ids, row_labels, ra, dec, np.concatenate(no_finite_parts), empty | bad_position)
    problems = _file_problems(report, info, classes, duplicates) + _invalid_rows(info.name, empty, bad_position)
    return problems, rows


def _invalid_rows(name: str, empty: np.ndarray, bad_position: np.ndarray) -> list[dict]:
    """Rows build refuses (inputs/validate.py's definitions); build --drop-invalid drops and counts them."""
    problems = []
    for mask, what in ((bad_position, "an invalid sky position (RA/Dec NaN, infinite or out of range)"), (empty, "an empty ID")):
        if mask.any():
            n = int(mask.sum())
            message = f"{n} rows with {what}, e.g. row {int(np.argmax(mask))}; build needs --drop-invalid to drop them"
            problems.append(_problem("error", name, message, n))
    return problems


def _pixel_summary(acc: BandStats, info: readers.TableInfo) -> dict:
    summary = acc.summary(bands=band_names(info.image_shape[-1]))["bands"]
    keys = ("min", "max", "nan_pixels", "inf_pixels", "cutouts_no_finite")
    return {
        band: {**{k: values[k] for k in keys}, "median": values["quantiles"]["p50"]} for band, values in summary.items()
    }


def _duplicated(ids: np.ndarray) -> np.ndarray:
    values, counts = np.unique(ids, return_counts=True)
    return values[counts > 1]


def _examples(ids: np.ndarray) -> list[str]:
    return [i.decode("utf-8", "replace") for i in ids[:MAX_EXAMPLES]]


def _file_problems(report: dict, info, classes: list[str], duplicates: np.ndarray) -> list[dict]:
    name, problems = info.name, []
    unknown = {label: n for label, n in report["labels"].items() if label not in classes}
    if unknown:
        listed = ", ".join(f"'{k}' ({n})" for k, n in unknown.items())
        message = f"labels outside the classes {', '.join(classes)}: {listed}; build needs --classes to name them or --drop-unknown to drop them"
        problems.append(_problem("error", name, message, sum(unknown.values())))
    majority, majority_n = next(iter(report["labels"].items()))
    others = info.rows - majority_n
    if others:
        problems.append(_problem("warning", name, f"{others} rows are not labelled {majority}, the file's majority class", others))
    if report["rows_no_finite_pixel"]:
        problems.append(_problem("warning", name, "rows whose image has no finite pixel (merge drops them)", report["rows_no_finite_pixel"]))
    if report["rows_partly_nonfinite"]:
        problems.append(_problem("warning", name, "rows with some NaN/inf pixels (kept)", report["rows_partly_nonfinite"]))
    if len(duplicates):
        problems.append(_problem("warning", name, f"IDs appear more than once in the file, e.g. {', '.join(_examples(duplicates))}", len(duplicates)))
    if info.image_dtype != np.float32:
        problems.append(_problem("warning", name, f"image dtype {info.image_dtype} will be cast to float32", info.rows))
    problems += [_problem("warning", name, note) for note in info.notes]
    return problems


def _repeated_files(paths: list[Path]) -> list[dict]:
    """The same file twice, or two files with identical content: build refuses both.

    Only files of equal size are hashed.
    """
    sizes: dict[int, list[Path]] = {}
    for path in paths:
        try:
            sizes.setdefault(path.stat().st_size, []).append(path)
        except OSError:
            continue  # reported with the file
    problems = []
    for group in sizes.values():
        seen: dict[str, Path] = {}
        for path in group if len(group) > 1 else []:
            try:
                digest = _sha256(path)
            except OSError:
                continue
            if digest in seen:
                what = "the same file as" if readers.same_file(path, seen[digest]) else "identical content to"
                message = f"{path}: {what} {seen[digest]}, given twice; give each file once"
                problems.append(_problem("error", path.name, message))
            else:
                seen[digest] = path
    return problems


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _across_files(reports: list[dict], parts: list[FileRows]) -> list[dict]:
    problems = []
    usable = [r for r in reports if r["usable"]]
    shapes = {(r["image"]["height"], r["image"]["width"], r["image"]["bands"]) for r in usable}
    if len(shapes) > 1:
        listed = "; ".join(f"{r['name']} {(r['image']['height'], r['image']['width'], r['image']['bands'])}" for r in usable)
        problems.append(_problem("error", None, f"image shapes differ across files: {listed}", len(shapes)))
    dtypes = {r["image"]["dtype"] for r in usable}
    if len(dtypes) > 1:
        problems.append(_problem("warning", None, f"image dtypes differ across files ({', '.join(sorted(dtypes))}); output is float32", len(dtypes)))
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
    return [_problem("warning", None, f"IDs in more than one file with one label (merge keeps one), e.g. {', '.join(_examples(np.array(same)))}", len(same))]


def _positions(reports: list[dict], parts: list[FileRows], match_radius: float, pixel_scale: float, duplicates: dict) -> dict:
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


def _predict_build(parts: list[FileRows], classes: list[str], match_radius: float) -> tuple[dict, dict, list[dict]]:
    """Apply build's row rules (plan_rows, then the split's class check) to the readable files.

    Rows build refuses or drops (unknown labels, invalid rows, no finite pixel)
    leave before duplicate IDs are resolved, and rows dropped for duplicate IDs
    before sky matching, as in build once the options named in the errors are given.
    """
    if not parts:
        return {}, {}, []
    ids, labels, ra, dec = (np.concatenate([getattr(p, k) for p in parts]) for k in ("ids", "labels", "ra", "dec"))
    codes = encode_labels(labels, classes) if len(labels) else np.zeros(0, np.int16)
    keep = (codes != UNKNOWN) & ~np.concatenate([p.no_finite | p.invalid for p in parts])
    problems = _conflicting_ids(ids, codes, classes, keep)
    positions, position_problems = _duplicate_positions(ids, codes, ra, dec, classes, keep, match_radius)
    problems += position_problems
    counts = {c: int(n) for c, n in zip(classes, np.bincount(codes[keep], minlength=len(classes)))}
    read = np.bincount(codes[codes != UNKNOWN], minlength=len(classes))
    problems += _class_problems(counts, {c: int(n) for c, n in zip(classes, read)}, len(ids))
    return {"rows_read": len(ids), "rows_kept": int(keep.sum()), "class_counts": counts}, positions, problems


def _conflicting_ids(ids: np.ndarray, codes: np.ndarray, classes: list[str], keep: np.ndarray) -> list[dict]:
    """One ID with different labels, in one file or across files: build refuses it. Updates `keep` as build does."""
    candidates = np.flatnonzero(keep)
    extra, conflicting, report = resolve_duplicates(
        ids[candidates], codes[candidates], np.arange(len(candidates)), classes, "drop", lambda i: ""
    )
    keep[candidates[extra | conflicting]] = False
    if not report.conflict_groups:
        return []
    shown = _examples(np.unique(ids[candidates[conflicting]]))
    message = f"IDs carry conflicting labels (within a file or across files), e.g. {', '.join(shown)}; build needs --on-conflict drop to drop every copy"
    return [_problem("error", None, message, report.conflict_groups)]


def _duplicate_positions(ids, codes, ra, dec, classes: list[str], keep: np.ndarray, match_radius: float) -> tuple[dict, list[dict]]:
    """Objects within the match radius under different IDs are one object: as `merge._resolve_positions`."""
    candidates = np.flatnonzero(keep)
    pairs = sky.pairs_within(ra[candidates], dec[candidates], match_radius)
    summary = {"duplicate_groups_same_label": 0, "duplicate_groups_conflicting": 0}
    if len(pairs) == 0:
        return summary, []
    kept_ids = ids[candidates]
    extra, conflicting, report = resolve_duplicates(
        sky.components(len(candidates), pairs), codes[candidates], np.argsort(np.argsort(kept_ids, kind="stable")),
        classes, "drop", lambda i: "", shown=kept_ids,
    )
    keep[candidates[extra | conflicting]] = False
    summary = {"duplicate_groups_same_label": report.same_label_groups, "duplicate_groups_conflicting": report.conflict_groups}
    problems = []
    if report.same_label_groups:
        shown = _examples(kept_ids[extra])
        problems.append(_problem("warning", None, f"objects within {match_radius:g} arcsec of another under a different ID, one label (merge keeps the smallest ID), e.g. {', '.join(shown)}", report.same_label_groups))
    if report.conflict_groups:
        shown = _examples(kept_ids[conflicting])
        problems.append(_problem("error", None, f"objects within {match_radius:g} arcsec of another with a different label, e.g. {', '.join(shown)}; build needs --on-conflict drop to drop them", report.conflict_groups))
    return summary, problems


def _class_problems(counts: dict[str, int], read: dict[str, int], rows_read: int) -> list[dict]:
    """No row left at all, a class of the class list without rows, or too few for the splits."""
    if not any(counts.values()):
        return [_problem("error", None, f"all {rows_read} rows would be dropped; nothing to build", rows_read)]
    present = [c for c, n in counts.items() if n]
    kept = ", ".join(f"{c} {counts[c]}" for c in present)
    problems = []
    for name, n in counts.items():
        if n == 0:
            unknown = f", and --drop-unknown for the {read[name]} rows of {name} it drops" if read[name] else ""
            message = f"no rows of class {name} (kept: {kept}); build needs --classes {','.join(present)} naming the classes present{unknown}"
            problems.append(_problem("error", None, message, 0))
        elif n < BUILD_SPLITS:
            message = f"class {name} keeps {n} rows, fewer than the {BUILD_SPLITS} splits build makes; add rows, or leave it out with --classes and --drop-unknown"
            problems.append(_problem("error", None, message, n))
    return problems
