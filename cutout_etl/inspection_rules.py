"""What `build` would refuse, predicted by `inspect` from the same per-row facts (no images).

Build's own rules (`merge.resolve_duplicates` for IDs and sky matches, the
class checks of the split) are applied in build's order, so an error here is
exactly a reason build with default options fails, named with the option that
resolves it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .steps import sky
from .steps.merge import UNKNOWN, encode_labels, resolve_duplicates
from .steps.split import parse_fractions

MAX_EXAMPLES = 5
BUILD_SPLITS = sum(f > 0 for f in parse_fractions((0.7, 0.15, 0.15)))  # build's default fractions


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
    image_digest: np.ndarray  # S16, `pixel_facts.image_digests`


def problem(level: str, file: str | None, message: str, count: int | None = None) -> dict:
    return {"level": level, "file": file, "message": message, "count": count}


def examples(ids: np.ndarray) -> list[str]:
    return [i.decode("utf-8", "replace") for i in ids[:MAX_EXAMPLES]]


def predict_build(parts: list[FileRows], classes: list[str], match_radius: float) -> tuple[dict, dict, list[dict]]:
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
    # IDs as integers in ID order, sorted once: the keys of the ID rule and the tie-break of the others
    # (the smallest ID is kept, as in merge), which then sort integers instead of strings
    rank = np.unique(ids, return_inverse=True)[1].reshape(-1) if len(ids) else np.zeros(0, np.int64)
    problems = _conflicting_ids(ids, rank, codes, classes, keep)
    files = np.concatenate([np.full(len(p.ids), p.name, dtype=object) for p in parts])
    digests = np.concatenate([p.image_digest for p in parts])
    images, image_problems = _duplicate_images(ids, rank, codes, digests, files, classes, keep)
    problems += image_problems
    positions, position_problems = _duplicate_positions(ids, rank, codes, ra, dec, classes, keep, match_radius)
    problems += position_problems
    counts = {c: int(n) for c, n in zip(classes, np.bincount(codes[keep], minlength=len(classes)))}
    read = np.bincount(codes[codes != UNKNOWN], minlength=len(classes))
    problems += _class_problems(counts, {c: int(n) for c, n in zip(classes, read)}, len(ids))
    build = {"rows_read": len(ids), "rows_kept": int(keep.sum()), "class_counts": counts, "duplicate_images": images}
    return build, positions, problems


def _conflicting_ids(ids: np.ndarray, rank: np.ndarray, codes, classes: list[str], keep: np.ndarray) -> list[dict]:
    """One ID with different labels, in one file or across files: build refuses it. Updates `keep` as build does."""
    candidates = np.flatnonzero(keep)
    extra, conflicting, report = resolve_duplicates(
        rank[candidates],
        codes[candidates],
        np.arange(len(candidates)),
        classes,
        "drop",
        lambda i: "",
        shown=ids[candidates],
    )
    keep[candidates[extra | conflicting]] = False
    if not report.conflict_groups:
        return []
    shown = examples(np.unique(ids[candidates[conflicting]]))
    message = f"IDs carry conflicting labels (within a file or across files), e.g. {', '.join(shown)}; build needs --on-conflict drop to drop every copy"
    return [problem("error", None, message, report.conflict_groups)]


def _duplicate_images(
    ids, rank, codes, digests, files, classes: list[str], keep: np.ndarray
) -> tuple[dict, list[dict]]:
    """Identical images under different IDs, within and across files: as `merge._resolve_images`. Updates `keep`."""
    candidates = np.flatnonzero(keep)
    kept_ids = ids[candidates]
    extra, conflicting, report = resolve_duplicates(
        digests[candidates],
        codes[candidates],
        rank[candidates],
        classes,
        "drop",
        lambda i: "",
        shown=kept_ids,
    )
    keep[candidates[extra | conflicting]] = False
    groups = _image_groups(digests[candidates])
    across = [g for g in groups if len(set(files[candidates[g]].tolist())) > 1]
    shown = [
        " = ".join(f"'{kept_ids[i].decode(errors='replace')}' ({files[candidates[i]]})" for i in g[:3])
        for g in groups[:MAX_EXAMPLES]
    ]
    summary = {
        "groups_same_label": report.same_label_groups,
        "groups_conflicting": report.conflict_groups,
        "groups_across_files": len(across),
        "rows_dropped_by_build": int(extra.sum() + conflicting.sum()),
        "examples": shown,
    }
    problems = []
    if report.same_label_groups:
        message = (
            f"identical images under different IDs, one label ({len(across)} groups across files; merge keeps the "
            f"smallest ID, --keep-duplicate-images keeps all in one split), e.g. {'; '.join(shown[:3])}"
        )
        problems.append(problem("warning", None, message, report.same_label_groups))
    if report.conflict_groups:
        listed = "; ".join(_image_groups_shown(conflicting, digests[candidates], kept_ids, files[candidates]))
        message = f"identical images under different IDs with different labels, e.g. {listed}; build needs --on-conflict drop to drop every copy"
        problems.append(problem("error", None, message, report.conflict_groups))
    return summary, problems


def _image_groups(digests: np.ndarray) -> list[np.ndarray]:
    """Index groups (in digest order) of rows sharing one image."""
    order = np.argsort(digests, kind="stable")
    starts: np.ndarray = (
        np.flatnonzero(np.r_[True, digests[order][1:] != digests[order][:-1]]) if len(order) else np.zeros(0, int)
    )
    groups = np.split(order, starts[1:]) if len(order) else []
    return [g for g in groups if len(g) > 1]


def _image_groups_shown(mask, digests, ids, files) -> list[str]:
    rows = np.flatnonzero(mask)
    return [
        " = ".join(f"'{ids[rows[i]].decode(errors='replace')}' ({files[rows[i]]})" for i in g[:3])
        for g in _image_groups(digests[rows])[:3]
    ]


def _duplicate_positions(
    ids, rank, codes, ra, dec, classes: list[str], keep: np.ndarray, match_radius: float
) -> tuple[dict, list[dict]]:
    """Objects within the match radius under different IDs are one object: as `merge._resolve_positions`."""
    candidates = np.flatnonzero(keep)
    pairs = sky.pairs_within(ra[candidates], dec[candidates], match_radius)
    summary = {"duplicate_groups_same_label": 0, "duplicate_groups_conflicting": 0}
    if len(pairs) == 0:
        return summary, []
    kept_ids = ids[candidates]
    extra, conflicting, report = resolve_duplicates(
        sky.components(len(candidates), pairs),
        codes[candidates],
        rank[candidates],
        classes,
        "drop",
        lambda i: "",
        shown=kept_ids,
    )
    keep[candidates[extra | conflicting]] = False
    summary = {
        "duplicate_groups_same_label": report.same_label_groups,
        "duplicate_groups_conflicting": report.conflict_groups,
    }
    problems = []
    if report.same_label_groups:
        shown = examples(kept_ids[extra])
        problems.append(
            problem(
                "warning",
                None,
                f"objects within {match_radius:g} arcsec of another under a different ID, one label (merge keeps the smallest ID), e.g. {', '.join(shown)}",
                report.same_label_groups,
            )
        )
    if report.conflict_groups:
        shown = examples(kept_ids[conflicting])
        problems.append(
            problem(
                "error",
                None,
                f"objects within {match_radius:g} arcsec of another with a different label, e.g. {', '.join(shown)}; build needs --on-conflict drop to drop them",
                report.conflict_groups,
            )
        )
    return summary, problems


def _class_problems(counts: dict[str, int], read: dict[str, int], rows_read: int) -> list[dict]:
    """No row left at all, a class of the class list without rows, or too few for the splits."""
    if not any(counts.values()):
        return [problem("error", None, f"all {rows_read} rows would be dropped; nothing to build", rows_read)]
    present = [c for c, n in counts.items() if n]
    kept = ", ".join(f"{c} {counts[c]}" for c in present)
    problems = []
    for name, n in counts.items():
        if n == 0:
            unknown = f", and --drop-unknown for the {read[name]} rows of {name} it drops" if read[name] else ""
            message = f"no rows of class {name} (kept: {kept}); build needs --classes {','.join(present)} naming the classes present{unknown}"
            problems.append(problem("error", None, message, 0))
        elif n < BUILD_SPLITS:
            message = f"class {name} keeps {n} rows, fewer than the {BUILD_SPLITS} splits build makes; add rows, or leave it out with --classes and --drop-unknown"
            problems.append(problem("error", None, message, n))
    return problems
