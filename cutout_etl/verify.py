"""`cutout-etl verify`: prove a dataset is what its metadata claims.

Recomputes every block checksum and the content digest, recounts rows and
classes, checks labels and IDs (no ID twice, so none in two splits), that no
image sits in two splits (`verify_images`), that a faint-end table holds the
faintest rows, that the inputs' provenance is there, and recomputes the
stored statistics.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .dataset import Dataset, open_dataset
from .inputs.pixel_facts import aperture_band_index, aperture_flux, image_digests
from .inputs.scan import ProgressFn, no_progress
from .steps import sky
from .steps.checksums import TableChecksums, dataset_digest
from .steps.sky_level import LEGACY_SKY_METHOD
from .steps.split_methods import FAINT_TABLE
from .steps.stats import BandStats
from .verify_images import faintest_held, shared_images

MOMENTS = ("sum", "mean", "m2", "variance", "std")
MOMENT_RTOL = 1e-9  # moments depend on the order of float64 additions only


def verify(path: str | Path, progress: ProgressFn = no_progress) -> dict:
    """Check a dataset; returns {"ok", "checks", "failures"}, never raises for bad content."""
    failures: list[str] = []
    with open_dataset(path) as ds:
        meta = ds.metadata
        stored = (meta.get("checksums") or {}).get("tables")
        if not stored:
            return _result(["no checksums in the metadata: written by an older cutout-etl or altered"], [])
        entries, failures = _stats_entries(meta, ds.splits)
        recomputed, ids, accs, positions, pixels = _scan_tables(ds, stored, entries, failures, progress)
    checks = [
        "block checksums",
        "row and class counts",
        "labels",
        "IDs unique across splits",
        "content digest",
        "provenance",
    ]
    failures += _unique_ids(ds.splits, ids)
    failures += _neighbours(meta, positions)
    checks.append("no neighbours or duplicate positions across splits")
    failures += shared_images(ds.splits, [digests for digests, _ in pixels])
    checks.append("no identical images in two splits")
    if FAINT_TABLE in ds.splits:
        failures += faintest_held(meta, ds.splits, ids, pixels)
        checks.append(f"{FAINT_TABLE} holds the faintest rows of each class")
    format_checks, format_failures = ds.engine.format_checks(ds.path, meta)
    checks += format_checks
    failures += format_failures
    if dataset_digest(meta, recomputed) != meta.get("digest"):
        failures.append("content digest differs from the stored one")
    failures += _provenance(meta)
    pixel_count = math.prod((meta.get("image_shape") or [0, 0])[:2])
    for label, table, entry in entries:
        checks.append(f"statistics of {table}")
        failures += _compare_stats(label, entry, accs[table].summary(bands=meta["bands"]), pixel_count)
    return _result(failures, checks)


def _scan_tables(
    ds: Dataset, stored: dict, entries: list[tuple[str, str, dict]], failures: list[str], progress: ProgressFn
) -> tuple[dict, list, dict, list, list]:
    """One pass over every table: block checksums, IDs, positions, pixel facts and the statistics to compare."""
    stats_tables = {table for _, table, _ in entries}
    # Statistics written before sky_method was recorded used the legacy estimator: recompute them with it.
    sky_methods = {table: entry.get("sky_method", LEGACY_SKY_METHOD) for _, table, entry in entries}
    recomputed, ids, accs, positions, pixels = {}, [], {}, [], []
    for name in ds.splits:
        block_rows = stored[name]["block_rows"]
        table_acc = BandStats(n_bands=len(ds.bands), sky_method=sky_methods[name]) if name in stats_tables else None
        recomputed[name], table_ids, table_positions, table_pixels = _scan_table(
            ds, name, block_rows, table_acc, failures, progress
        )
        pixels.append(table_pixels)
        ids.append(table_ids)
        positions.append(table_positions)
        if table_acc is not None:
            accs[name] = table_acc
        failures += _compare_blocks(name, stored[name], recomputed[name], block_rows)
    return recomputed, ids, accs, positions, pixels


def _stats_entries(meta: dict, splits: list[str]) -> tuple[list[tuple[str, str, dict]], list[str]]:
    """Every stored statistics entry as (label for messages, table, entry), and what is wrong with them.

    A dataset (not a merged file) must hold the train split's statistics in
    `stats`: models take their preprocessing constants from there.
    """
    entries: list[tuple[str, str | None, dict]] = []
    failures: list[str] = []
    stats = meta.get("stats")
    if isinstance(stats, dict):
        entries.append(("statistics", stats.get("split"), stats))
    elif stats is not None:
        failures.append("stats: not a statistics entry")
    if meta.get("kind") == "dataset" and (not isinstance(stats, dict) or stats.get("split") != "train"):
        found = "none" if not isinstance(stats, dict) else f"those of split {stats.get('split')!r}"
        failures.append(f"no statistics of the train split in stats (found {found}); run cutout-etl stats")
    for name, entry in (meta.get("split_stats") or {}).items():
        if isinstance(entry, dict) and entry.get("split") == name:
            entries.append((f"split_stats {name}", name, entry))
        else:
            failures.append(f"split_stats {name}: not the statistics of split {name}")
    missing = [e for e in entries if e[1] not in splits]
    failures += [f"{label}: of split {table!r}, which the dataset does not have" for label, table, _ in missing]
    return [(label, table, entry) for label, table, entry in entries if table in splits], failures


def _result(failures: list[str], checks: list[str]) -> dict:
    return {"ok": not failures, "checks": checks, "failures": failures}


def _blocks(ds: Dataset, name: str, block_rows: int) -> Iterator[np.ndarray]:
    split = ds[name]
    for start in range(0, len(split), block_rows):
        yield split.read(start, start + block_rows)


def _scan_table(
    ds: Dataset, name: str, block_rows: int, acc: BandStats | None, failures: list[str], progress: ProgressFn
):
    """One pass over a table: checksums, counts, label checks, IDs, statistics."""
    checksums = TableChecksums(block_rows)
    n_classes = len(ds.classes)
    class_names = np.array([c.encode() for c in ds.classes])
    counts = np.zeros(n_classes, dtype=np.int64)
    ids, ra, dec, bad_labels, bad_names, done = [], [], [], 0, 0, 0
    digests, flux, labels_seen = [], [], []
    band = aperture_band_index(ds.bands)
    for rows in _blocks(ds, name, block_rows):
        checksums.add(rows)
        digests.append(image_digests(rows["image"]))
        flux.append(aperture_flux(rows["image"], band))
        labels_seen.append(rows["label"].copy())
        labels = rows["label"]
        valid = (labels >= 0) & (labels < n_classes)
        bad_labels += int((~valid).sum())
        counts += np.bincount(labels[valid], minlength=n_classes)
        bad_names += int((class_names[labels[valid]] != rows["SPECTYPE"][valid]).sum())
        # copies: a field of a block is a view that would keep the whole block, images and all, alive
        ids.append(rows["ID"].copy())
        ra.append(rows["RAJ2000"].copy())
        dec.append(rows["DECJ2000"].copy())
        if acc is not None:
            acc.update(rows["image"])
        done += len(rows)
        progress(f"verify {name}", done, len(ds[name]))
    expected = ds.metadata["tables_rows"][name]
    if done != expected["rows"]:
        failures.append(f"{name}: {done} rows, the metadata says {expected['rows']}")
    found = {c: int(n) for c, n in zip(ds.classes, counts)}
    if found != expected["class_counts"]:
        failures.append(f"{name}: class counts {found}, the metadata says {expected['class_counts']}")
    if bad_labels:
        failures.append(f"{name}: {bad_labels} labels outside 0..{n_classes - 1}")
    if bad_names:
        failures.append(f"{name}: {bad_names} rows whose SPECTYPE is not classes[label]")
    if not ids:
        return checksums.to_dict(), np.zeros(0, "S1"), (np.zeros(0), np.zeros(0)), (np.zeros(0, "S16"), None)
    pixels = (np.concatenate(digests), (np.concatenate(flux), np.concatenate(labels_seen)))
    return checksums.to_dict(), np.concatenate(ids), (np.concatenate(ra), np.concatenate(dec)), pixels


def _compare_blocks(name: str, stored: dict, recomputed: dict, block_rows: int) -> list[str]:
    failures = []
    for kind, expected in stored["blocks"].items():
        found = recomputed["blocks"].get(kind, [])
        if len(found) != len(expected):
            failures.append(f"{name}: {len(found)} {kind} blocks, the metadata lists {len(expected)}")
        for i, (a, b) in enumerate(zip(expected, found)):
            if a != b:
                first = i * block_rows
                failures.append(f"{name} block {i} (rows {first}-{first + block_rows - 1}): {kind} checksum mismatch")
    return failures


def _unique_ids(splits: list[str], ids: list[np.ndarray]) -> list[str]:
    if not ids:
        return []
    every = np.concatenate(ids)
    split_of = np.concatenate([np.full(len(i), s) for s, i in enumerate(ids)])
    order = np.argsort(every, kind="stable")
    every, split_of = every[order], split_of[order]
    starts = np.flatnonzero(np.r_[True, every[1:] != every[:-1]])
    repeated = np.diff(np.r_[starts, len(every)]) > 1
    if not repeated.any():
        return []
    across = np.minimum.reduceat(split_of, starts) != np.maximum.reduceat(split_of, starts)
    names = ", ".join(v.decode(errors="replace") for v in every[starts[repeated]][:5])
    return [
        f"{int(repeated.sum())} IDs appear more than once ({int(across.sum())} of them in two splits), e.g. {names}"
    ]


def _neighbours(meta: dict, positions: list[tuple[np.ndarray, np.ndarray]]) -> list[str]:
    """No two objects within the match radius at all; none within the group radius in two splits."""
    ra = np.concatenate([p[0] for p in positions]) if positions else np.zeros(0)
    dec = np.concatenate([p[1] for p in positions]) if positions else np.zeros(0)
    split_of = np.concatenate([np.full(len(p[0]), s) for s, p in enumerate(positions)]) if positions else np.zeros(0)
    failures = []
    match = ((meta.get("report") or {}).get("duplicate_positions") or {}).get("match_radius_arcsec") or 0
    close = sky.pairs_within(ra, dec, match)
    if len(close):
        failures.append(f"{len(close)} pairs of objects within the match radius ({match:g} arcsec) remain")
    radius = (meta.get("split") or {}).get("group_radius_arcsec") or 0
    pairs = sky.pairs_within(ra, dec, radius)
    apart = int((split_of[pairs[:, 0]] != split_of[pairs[:, 1]]).sum()) if len(pairs) else 0
    if apart:
        failures.append(f"{apart} pairs of neighbours within {radius:.2f} arcsec are in different splits")
    return failures


def _provenance(meta: dict) -> list[str]:
    inputs = meta.get("inputs") or []
    if not inputs:
        return ["no input provenance (inputs) in the metadata"]
    incomplete = [i.get("name", "?") for i in inputs if len(i.get("sha256", "")) != 64 or not i.get("size")]
    return [f"inputs without size or SHA-256: {', '.join(incomplete)}"] if incomplete else []


def _compare_stats(label: str, stored: dict, found: dict, pixels_per_cutout: int) -> list[str]:
    failures = []
    if stored.get("n_cutouts") != found["n_cutouts"]:
        failures.append(f"{label}: {stored.get('n_cutouts')} cutouts stored, {found['n_cutouts']} recomputed")
    for band, values in found["bands"].items():
        kept = stored.get("bands", {}).get(band, {})
        floors = _moment_floors(values, found["n_cutouts"], pixels_per_cutout)
        for key, value in values.items():
            if not _same(kept.get(key), value, floors.get(key)):
                failures.append(f"{label}: band {band} {key} stored {kept.get(key)!r}, recomputed {value!r}")
    return failures


def _moment_floors(band: dict, n_cutouts: int, pixels_per_cutout: int) -> dict[str, float]:
    """Absolute tolerances of the float64 moments, from the data's own size and range.

    Each pixel x of a band reaches the sum through at most
    d = 2 * cutouts + pixels per cutout + 2 float64 additions (rows within a
    block, blocks, positions within a cutout, the chunk merge), each adding
    at most u = 2^-53 times the partial sum, which is at most sum|x - shift|
    <= 2 n max|x| (the chunk median shift lies within the data's range). So
    each computation is off by at most 2 d u n max|x|, and two computations
    of the same data (stored, recomputed: different chunkings) differ by at
    most twice that. The mean's bound is that over n; M2 sums squares,
    (2 max|x|)^2 each, so its bound carries 4 max|x|^2 for 2 max|x|; the
    variance's is M2's over n; sqrt is 1/2-Hölder, so std within
    sqrt(variance bound). Relative rel_tol still governs large values; these
    floors only matter where a moment cancels to about zero.
    """
    n = band.get("finite_pixels") or 0
    low, high = band.get("min"), band.get("max")
    if not n or low is None or high is None:
        return {}
    scale = max(abs(low), abs(high))
    unit = (2 * n_cutouts + pixels_per_cutout + 2) * 2.0**-53
    mean = 4 * unit * scale
    variance = 16 * unit * scale * scale
    return {"sum": mean * n, "mean": mean, "m2": variance * n, "variance": variance, "std": math.sqrt(variance)}


def _same(a: object, b: object, floor: float | None) -> bool:
    if floor is not None and isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=MOMENT_RTOL, abs_tol=floor)
    return a == b
