"""`cutout-etl inspect`: what is in the class files, and what is wrong with them.

Unlike the other commands, inspect does not stop at the first bad file: every
file gets a report, and problems are listed as errors or warnings. An error is
whatever would make `build` with default options fail, named with the option
that resolves it; a warning is what build handles by itself but deserves a look.
The rules build applies (`merge.resolve_duplicates`, `validate`) are the ones
used here, on the same per-row facts, so inspect predicts build.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import CutoutEtlError
from .inputs import readers
from .inputs.pixel_facts import image_digests
from .inputs.scan import ProgressFn, ReadOptions, no_progress
from .inputs.validate import empty_ids, invalid_positions
from .inspection_rules import FileRows, examples, predict_build, problem
from .schema import DEFAULT_CLASSES, as_bytes, band_names
from .steps import sky
from .steps.merge import normalize_labels, parse_classes
from .steps.stats import BandStats

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
    reports, problems, parts = [], [], []
    for path in map(Path, paths):
        report, file_problems, rows = _inspect_one(path, read, class_list, progress)
        reports.append(report)
        problems += file_problems
        if rows is not None:
            parts.append(rows)
    problems += _repeated_files([Path(p) for p in paths])
    problems += _across_files(reports, parts)
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


def _inspect_one(path: Path, read: ReadOptions, classes: list[str], progress: ProgressFn):
    report: dict = {"path": str(path), "name": path.name, "usable": False}
    try:
        with readers.open_h5(path) as f:
            report["tables"] = {t: int(f[t].shape[0]) for t in readers.find_tables(f)}
            info = readers.inspect_table(path, f, read.table_path, read.columns)
            report.update(_describe_table(info))
            problems, rows = _read_contents(report, info, f, read, classes, progress)
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


def _read_contents(report, info, f, read: ReadOptions, classes, progress):
    labels: Counter = Counter()
    acc = BandStats(n_bands=info.image_shape[-1])
    id_parts, label_parts, ra_parts, dec_parts, no_finite_parts, no_finite, partly = [], [], [], [], [], 0, 0
    digest_parts = []
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
        digest_parts.append(image_digests(images))
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
    report["duplicate_ids"] = {"ids": len(duplicates), "examples": examples(duplicates)}
    ra, dec = np.concatenate(ra_parts), np.concatenate(dec_parts)
    empty, bad_position = empty_ids(ids), invalid_positions(ra, dec)
    report["rows_empty_id"], report["rows_invalid_position"] = int(empty.sum()), int(bad_position.sum())
    digests, no_finite_rows = np.concatenate(digest_parts), np.concatenate(no_finite_parts)
    identical = _duplicated(digests[~no_finite_rows])  # images with no finite pixel are dropped anyway
    report["identical_images"] = {"groups": len(identical), "rows_in_groups": int(np.isin(digests, identical).sum())}
    rows = FileRows(info.name, ids, row_labels, ra, dec, no_finite_rows, empty | bad_position, digests)
    problems = _file_problems(report, info, classes, duplicates) + _invalid_rows(info.name, empty, bad_position)
    return problems, rows


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


def _pixel_summary(acc: BandStats, info: readers.TableInfo) -> dict:
    summary = acc.summary(bands=band_names(info.image_shape[-1]))["bands"]
    keys = ("min", "max", "nan_pixels", "inf_pixels", "cutouts_no_finite")
    return {
        band: {**{k: values[k] for k in keys}, "median": values["quantiles"]["p50"]} for band, values in summary.items()
    }


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
                digest, _ = readers.sha256_file(path)
            except OSError:
                continue
            if digest in seen:
                what = "the same file as" if readers.same_file(path, seen[digest]) else "identical content to"
                message = f"{path}: {what} {seen[digest]}, given twice; give each file once"
                problems.append(problem("error", path.name, message))
            else:
                seen[digest] = path
    return problems


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
