"""`cutout-etl inspect`: what is in the class files, and what is wrong with them.

Unlike the other commands, inspect does not stop at the first bad file: every
file gets a report, and problems are listed as errors (the file cannot be
used) or warnings (it can, but something needs a decision or a look).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import readers, sky
from .errors import CutoutEtlError
from .merge import normalize_labels, parse_classes
from .scan import ProgressFn, ReadOptions, no_progress
from .schema import DEFAULT_CLASSES, as_bytes, band_names
from .stats import BandStats

MAX_EXAMPLES = 5


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
    reports, problems, ids_by_file = [], [], {}
    for path in map(Path, paths):
        report, file_problems, ids = _inspect_one(path, read, class_list, progress)
        reports.append(report)
        problems += file_problems
        if ids is not None:
            ids_by_file[path.name if path.name not in ids_by_file else str(path)] = ids
    problems += _across_files(reports, ids_by_file)
    positions, position_problems = _positions(reports, ids_by_file, match_radius, pixel_scale)
    problems += position_problems
    return {
        "files": reports,
        "positions": positions,
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
            problems, ids = _read_contents(report, info, f, read, classes, progress)
    except CutoutEtlError as exc:
        return report, [_problem("error", path.name, str(exc))], None
    report["usable"] = True
    return report, problems, ids


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
    id_parts, label_parts, ra_parts, dec_parts, no_finite, partly = [], [], [], [], 0, 0
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
    positions = (np.concatenate(ra_parts), np.concatenate(dec_parts))
    return _file_problems(report, info, classes, duplicates), (ids, row_labels, *positions)


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
        problems.append(_problem("warning", name, f"labels outside the classes {', '.join(classes)}: {listed}; build needs --classes or --drop-unknown", sum(unknown.values())))
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


def _across_files(reports: list[dict], ids_by_file: dict) -> list[dict]:
    problems = []
    usable = [r for r in reports if r["usable"]]
    shapes = {(r["image"]["height"], r["image"]["width"], r["image"]["bands"]) for r in usable}
    if len(shapes) > 1:
        listed = "; ".join(f"{r['name']} {(r['image']['height'], r['image']['width'], r['image']['bands'])}" for r in usable)
        problems.append(_problem("error", None, f"image shapes differ across files: {listed}", len(shapes)))
    dtypes = {r["image"]["dtype"] for r in usable}
    if len(dtypes) > 1:
        problems.append(_problem("warning", None, f"image dtypes differ across files ({', '.join(sorted(dtypes))}); output is float32", len(dtypes)))
    problems += _shared_ids(ids_by_file)
    return problems


def _shared_ids(ids_by_file: dict) -> list[dict]:
    if len(ids_by_file) < 2:
        return []
    names = list(ids_by_file)
    ids = np.concatenate([ids_by_file[n][0] for n in names])
    labels = np.concatenate([ids_by_file[n][1] for n in names])
    source = np.concatenate([np.full(len(ids_by_file[n][0]), i) for i, n in enumerate(names)])
    order = np.lexsort((source, ids))
    ids, labels, source = ids[order], labels[order], source[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    stops = np.r_[starts[1:], len(ids)]
    multi = source[starts] != source[stops - 1]
    same, conflict = [], []
    for a, b in zip(starts[multi], stops[multi]):
        (conflict if len(set(labels[a:b].tolist())) > 1 else same).append(ids[a])
    problems = []
    if same:
        problems.append(_problem("warning", None, f"IDs in more than one file with one label (merge keeps one), e.g. {', '.join(_examples(np.array(same)))}", len(same)))
    if conflict:
        problems.append(_problem("warning", None, f"IDs in more than one file with conflicting labels (merge needs --on-conflict drop), e.g. {', '.join(_examples(np.array(conflict)))}", len(conflict)))
    return problems


def _positions(reports: list[dict], ids_by_file: dict, match_radius: float, pixel_scale: float) -> tuple[dict, list[dict]]:
    """Objects at one position under two IDs, and neighbours that share pixels."""
    usable = [r for r in reports if r["usable"]]
    if not ids_by_file or not usable:
        return {}, []
    image = usable[0]["image"]
    group_radius = sky.half_diagonal_arcsec((image["height"], image["width"]), pixel_scale)
    parts = list(ids_by_file.values())
    ids, labels, ra, dec = (np.concatenate([p[k] for p in parts]) for k in range(4))
    close = sky.pairs_within(ra, dec, match_radius)
    close = close[ids[close[:, 0]] != ids[close[:, 1]]]  # copies of one ID are reported as duplicate IDs
    duplicates = sky.components(len(ids), close)
    same, conflicting = _label_agreement(duplicates, labels)
    sizes = np.bincount(sky.components(len(ids), sky.pairs_within(ra, dec, group_radius)))
    summary = {
        "match_radius_arcsec": match_radius,
        "duplicate_groups_same_label": len(same),
        "duplicate_groups_conflicting": len(conflicting),
        "group_radius_arcsec": group_radius,
        "neighbour_groups": int((sizes > 1).sum()),
        "rows_in_neighbour_groups": int(sizes[sizes > 1].sum()),
        "largest_neighbour_group": int(sizes.max(initial=0)),
    }
    problems = []
    if same:
        problems.append(_problem("warning", None, f"objects within {match_radius:g} arcsec of another under a different ID, one label (merge keeps the smallest ID), e.g. {', '.join(_examples(ids[same]))}", len(same)))
    if conflicting:
        problems.append(_problem("warning", None, f"objects within {match_radius:g} arcsec of another with a different label (merge needs --on-conflict drop), e.g. {', '.join(_examples(ids[conflicting]))}", len(conflicting)))
    return summary, problems


def _label_agreement(groups: np.ndarray, labels: np.ndarray) -> tuple[list[int], list[int]]:
    """First rows of the groups of several rows: those with one label, those with several."""
    order = np.argsort(groups, kind="stable")
    starts = np.flatnonzero(np.r_[True, groups[order][1:] != groups[order][:-1]])
    stops = np.r_[starts[1:], len(order)]
    same, conflicting = [], []
    for a, b in zip(starts, stops):
        if b - a > 1:
            members = order[a:b]
            (same if len(set(labels[members].tolist())) == 1 else conflicting).append(int(members[0]))
    return same, conflicting
