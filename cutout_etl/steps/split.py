"""Stratified, order-independent train/val/test assignment. No I/O.

Within a class, rows are ranked by a keyed hash of (seed, ID): the first
n_train go to train, the next n_val to val, the rest to test. Inside each
split the classes are interleaved in proportion: a row ranked r among the
n rows of its class in that split sorts at (r + 1/2) / n, so any block of
consecutive rows holds each class within one row of its share, and the
order within a class is the hash order (a seeded shuffle). Nothing depends
on the order of files or rows.

`--split-method stable` and the faint-end table are in `split_methods`.
The layout of the output tables lives here too: `split_layout` (the three
splits of the kept rows, and their description for the metadata) and
`merged_layout` (the one table of `merge`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..choices import Choice
from ..errors import SplitError, UsageError
from ..inputs.pixel_facts import require_aperture_band
from ..inputs.scan import Scan
from ..schema import MERGED_TABLE, SPLIT_NAMES, band_names
from . import repeats, sky
from .merge import Plan
from .split_methods import (
    FAINT_TABLE,
    SplitMethod,
    binomial_report,
    check_faint_fraction,
    faint_rows,
    stable_assignment,
)


class GroupBy(Choice):
    """What else must stay in one split besides neighbours: nothing, or whole sky cells."""

    NONE = "none"
    SKY = "sky"


class SplitPolicy(Protocol):
    """What `split_layout` reads of `pipeline.SplitOptions`."""

    @property
    def fractions(self) -> Sequence[float]: ...

    @property
    def seed(self) -> int: ...

    @property
    def group_radius(self) -> float | None: ...  # arcsec; None: the cutout's half-diagonal; 0: no groups

    @property
    def pixel_scale(self) -> float: ...  # arcsec per pixel, for the default group radius

    @property
    def group_by(self) -> GroupBy | str: ...

    @property
    def cell_deg(self) -> float: ...

    @property
    def tolerance(self) -> float: ...  # allowed |achieved - target| class fraction per split, reported

    @property
    def method(self) -> SplitMethod | str: ...

    @property
    def faint_test(self) -> float: ...  # fraction of each class, faintest first, for the faint-end table; 0: none


def parse_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != len(SPLIT_NAMES):
        raise UsageError(f"--fractions: expected 3 values for train,val,test (got {len(values)})")
    if any(not np.isfinite(v) or v < 0 for v in values):
        raise UsageError(f"--fractions: values must be >= 0 (got {values})")
    if values[0] == 0:
        raise UsageError("--fractions: the train fraction must be > 0")
    if abs(sum(values) - 1) > 1e-6:
        raise UsageError(f"--fractions: values must sum to 1 (got {sum(values):.6g})")
    return values  # type: ignore[return-value]


def keyed_hash(ids: np.ndarray, seed: int, rows: np.ndarray | None = None) -> np.ndarray:
    """A 64-bit BLAKE2b of each ID (of `ids[rows]`, taken a slice at a time) keyed by the seed."""
    if not 0 <= int(seed) < 2**63:
        raise UsageError(f"--seed: expected an integer from 0 to 2**63 - 1 (got {seed})")
    key = int(seed).to_bytes(16, "little", signed=True)
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(i, digest_size=8, key=key).digest(), "little") for i in _id_bytes(ids, rows)),
        dtype=np.uint64,
        count=len(ids) if rows is None else len(rows),
    )


def _id_bytes(ids: np.ndarray, rows: np.ndarray | None) -> Iterator[bytes]:
    """Each ID as a bytes object, a slice at a time: `ids.tolist()` would hold ~70 bytes a row at once."""
    for part in repeats.key_slices(ids, rows):
        yield from part.tolist()


def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Exact counts by largest remainder, each non-empty split given >= 1 row."""
    quotas = np.asarray(fractions, dtype=float) * n
    counts = np.floor(quotas).astype(int)
    remainders = quotas - counts
    for i in np.argsort(-remainders, kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    for i in np.flatnonzero((counts == 0) & (np.asarray(fractions) > 0)):
        donor = int(np.argmax(counts))
        if counts[donor] > 1:
            counts[donor] -= 1
            counts[i] += 1
    return counts.tolist()


@dataclass
class SplitPlan:
    """Which split each row goes to and where in it."""

    split: np.ndarray  # int8, index into SPLIT_NAMES
    position: np.ndarray  # int64, row index inside its split
    counts: dict[str, dict[str, int]]  # split -> class -> rows

    def rows(self, split_index: int) -> int:
        return int(np.count_nonzero(self.split == split_index))


def assign_splits(
    ids: np.ndarray,
    codes: np.ndarray,
    classes: Sequence[str],
    fractions: Sequence[float],
    seed: int,
    groups: np.ndarray | None = None,
) -> SplitPlan:
    """Stratified assignment of unique IDs with class codes to the splits (`exact_split`), and positions."""
    hashes = keyed_hash(ids, seed)
    split = exact_split(ids, codes, hashes, classes, fractions, groups)
    return _plan(split, codes, classes, repeats.order_by_hash_then_key(hashes, ids))


def exact_split(
    ids: np.ndarray,
    codes: np.ndarray,
    hashes: np.ndarray,
    classes: Sequence[str],
    fractions: Sequence[float],
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Split index of each row, with exact per-class counts.

    Rows with the same `groups` value always land in one split. Groups of
    several rows are placed first, largest first (ties in hash order), each
    in the first split where it fits every class's quota, else where the
    quotas lack the most; single rows then fill what is left of each class's
    quotas in hash order. Without groups of several rows the per-class counts
    are exact.
    """
    targets = _targets(codes, classes, fractions)  # (classes, splits)
    split = np.full(len(ids), -1, dtype=np.int8)
    taken = np.zeros_like(targets)
    if groups is not None:
        _place_groups(groups, codes, hashes, targets, taken, split, len(classes))
    _fill_quotas(ids, codes, hashes, targets, taken, split, fractions)
    return split


def _targets(codes: np.ndarray, classes: Sequence[str], fractions: Sequence[float]) -> np.ndarray:
    non_empty = sum(f > 0 for f in fractions)
    sizes = np.bincount(codes, minlength=len(classes))
    for name, size in zip(classes, sizes):
        if 0 < size < non_empty:
            raise SplitError(f"class {name} has {size} rows, fewer than the {non_empty} non-empty splits")
    return np.array([split_counts(int(n), fractions) for n in sizes], dtype=np.int64).reshape(len(classes), -1)


def _place_groups(groups, codes, hashes, targets, taken, split, n_classes) -> None:
    """Put each group of several rows whole into one split (first fit, largest first).

    Only the rows of such groups are sorted: almost every row is a group of its own.
    """
    grouped = np.flatnonzero(repeats.group_sizes(groups) > 1)
    order = grouped[np.lexsort((hashes[grouped], groups[grouped]))]
    sorted_groups = groups[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    multi = np.flatnonzero(sizes > 1)
    if len(multi) == 0:
        return
    first_hash = hashes[order[starts[multi]]]  # the group's smallest hash: its place in the queue
    open_splits = np.flatnonzero(targets.sum(axis=0) > 0)
    for g in multi[np.lexsort((first_hash, -sizes[multi]))]:
        members = order[starts[g] : starts[g] + sizes[g]]
        need = np.bincount(codes[members], minlength=n_classes)
        room = targets - taken
        fits = [s for s in open_splits if np.all(need <= room[:, s])]
        chosen = fits[0] if fits else open_splits[np.argmax((room[:, open_splits] * (need > 0)[:, None]).sum(axis=0))]
        split[members] = chosen
        taken[:, chosen] += need


def _fill_quotas(ids, codes, hashes, targets, taken, split, fractions) -> None:
    """Single rows, class by class in hash order, into what is left of each split's quota."""
    last_open = max(i for i, f in enumerate(fractions) if f > 0)
    for code in range(targets.shape[0]):
        free = np.flatnonzero((codes == code) & (split < 0))
        ranked = free[np.lexsort((ids[free], hashes[free]))]
        room = np.maximum(targets[code] - taken[code], 0)
        room[last_open] = max(len(ranked) - room[:last_open].sum(), 0)
        bounds = np.minimum(np.cumsum([0, *room]), len(ranked))
        for s in range(len(SPLIT_NAMES)):
            split[ranked[bounds[s] : bounds[s + 1]]] = s


def _plan(
    split: np.ndarray,
    codes: np.ndarray,
    classes: Sequence[str],
    hash_order: np.ndarray,
    names: Sequence[str] = SPLIT_NAMES,
) -> SplitPlan:
    """Counts, and positions with the classes interleaved in proportion inside each split (table `names[s]`).

    Within a class, rows keep their hash order (`hash_order` lists all rows in it).
    """
    counts: dict[str, dict[str, int]] = {}
    position = np.empty(len(split), dtype=np.int64)
    for s, split_name in enumerate(names):
        members = hash_order[split[hash_order] == s]
        interleave = np.empty(len(members))
        counts[split_name] = {}
        for code, name in enumerate(classes):
            mine = np.flatnonzero(codes[members] == code)
            interleave[mine] = (np.arange(len(mine)) + 0.5) / max(len(mine), 1)
            counts[split_name][name] = len(mine)
        ordered = members[np.lexsort((codes[members], interleave))]
        position[ordered] = np.arange(len(ordered))
    return SplitPlan(split=split, position=position, counts=counts)


# ---------------------------------------------------------------- output layout


@dataclass
class Layout:
    """Where each kept row goes: a table and a position inside it."""

    tables: list[str]
    table_of_row: np.ndarray  # int8 index into tables, -1 for dropped rows
    position: np.ndarray  # int64
    tables_rows: dict[str, dict]  # table -> {"rows": n, "class_counts": {...}}

    def rows(self) -> dict[str, int]:
        return {name: self.tables_rows[name]["rows"] for name in self.tables}


def _class_counts(scan: Scan, mask: np.ndarray) -> dict[str, int]:
    counts = np.bincount(scan.codes[mask], minlength=len(scan.classes))
    return {c: int(n) for c, n in zip(scan.classes, counts)}


def merged_layout(plan: Plan) -> Layout:
    """One table, rows sorted by class code then ID."""
    scan = plan.scan
    kept = np.flatnonzero(plan.keep)
    order = kept[np.lexsort((scan.ids[kept], scan.codes[kept]))]
    position = np.zeros(len(scan.ids), dtype=np.int64)
    position[order] = np.arange(len(order))
    table_of_row = np.where(plan.keep, 0, -1).astype(np.int8)
    rows = {MERGED_TABLE: {"rows": len(order), "class_counts": _class_counts(scan, plan.keep)}}
    return Layout([MERGED_TABLE], table_of_row, position, rows)


def split_layout(plan: Plan, options: SplitPolicy) -> tuple[Layout, dict]:
    """The split of the kept rows (and the faint-end table, if asked for), and its description for the metadata."""
    scan = plan.scan
    kept = None if plan.keep.all() else np.flatnonzero(plan.keep)  # None: every row (the usual case), no index
    n_kept = len(plan.keep) if kept is None else len(kept)
    fractions = parse_fractions(options.fractions)
    method = SplitMethod.parse(options.method, "--split-method")
    groups, grouping = _groups(scan, kept, n_kept, options)
    codes = repeats.of_rows(scan.codes, kept)
    hashes = keyed_hash(scan.ids, options.seed, kept)
    # IDs only break ties between equal hashes: their rank in (hash, ID) order does that without copying them
    id_rank = repeats.inverse_permutation(repeats.order_by_hash_then_key(hashes, scan.ids, kept))
    faint, faint_description = _faint(scan, kept, n_kept, groups, options)
    split = np.full(n_kept, len(SPLIT_NAMES), dtype=np.int8)  # rows of the faint table keep the last index
    rest = np.flatnonzero(~faint) if faint.any() else slice(None)  # a slice: no copies of the columns below
    if method == SplitMethod.STABLE:
        split[rest] = stable_assignment(hashes[rest], fractions, groups[rest])
    else:
        split[rest] = exact_split(id_rank[rest], codes[rest], hashes[rest], scan.classes, fractions, groups[rest])
    del hashes, groups  # the split is made: what follows needs only the (hash, ID) order, held once at a time
    hash_order = repeats.inverse_permutation(id_rank)
    del id_rank
    names = [*SPLIT_NAMES, FAINT_TABLE] if faint_description else list(SPLIT_NAMES)
    assignment = _plan(split, codes, scan.classes, hash_order, names)
    table_of_row, position = assignment.split, assignment.position
    if kept is not None:
        table_of_row, position = np.full(len(scan.ids), -1, dtype=np.int8), np.zeros(len(scan.ids), dtype=np.int64)
        table_of_row[kept], position[kept] = assignment.split, assignment.position
    rows = {
        name: {"rows": sum(assignment.counts[name].values()), "class_counts": assignment.counts[name]} for name in names
    }
    achieved = _achieved(assignment.counts, scan.classes, fractions, options.tolerance)
    if method == SplitMethod.STABLE:
        achieved.update(binomial_report(assignment.counts, scan.classes, fractions, SPLIT_NAMES))
    description = {
        "fractions": list(fractions),
        "seed": options.seed,
        "split_method": method.value,
        "method": _METHODS[method],
        "order": "classes interleaved in proportion inside each split; keyed-hash order within a class",
        **grouping,
        "faint_test": faint_description,
        **achieved,
    }
    return Layout(names, table_of_row, position, rows), description


_METHODS = {
    SplitMethod.EXACT: "stratified by class; rows ranked by BLAKE2b-64 of the ID keyed by the seed; "
    "groups of rows placed whole, largest first",
    SplitMethod.STABLE: "stable: each row's split from BLAKE2b-64 of the ID keyed by the seed, over 2^64, against "
    "the cumulative fractions; a group takes its smallest hash's split; per-class fractions within binomial error",
}


def _faint(
    scan: Scan, kept: np.ndarray | None, n_kept: int, groups: np.ndarray, options: SplitPolicy
) -> tuple[np.ndarray, dict | None]:
    """Rows of the faint-end test table among the kept rows (none without --faint-test)."""
    fraction = check_faint_fraction(options.faint_test)
    if fraction == 0:
        return np.zeros(n_kept, dtype=bool), None
    if GroupBy.parse(options.group_by, "--group-by") == GroupBy.SKY:
        raise UsageError("--faint-test: not with --group-by sky (each faint object would pull its whole sky cell)")
    require_aperture_band(band_names(scan.image_shape[-1]), "--faint-test")
    flux, ids, codes = (repeats.of_rows(column, kept) for column in (scan.aperture_flux, scan.ids, scan.codes))
    return faint_rows(flux, ids, codes, scan.classes, fraction, groups)


def _groups(scan: Scan, kept: np.ndarray | None, n_kept: int, options: SplitPolicy) -> tuple[np.ndarray, dict]:
    """Rows that must share a split: neighbours within the group radius, identical images, and sky cells."""
    radius = options.group_radius
    if radius is None:
        radius = sky.half_diagonal_arcsec(scan.image_shape, options.pixel_scale)
    pairs = sky.pairs_within(scan.ra, scan.dec, radius, kept)
    identical = repeats.chained_pairs(scan.image_digest, kept)  # kept only with --keep-duplicate-images
    pairs = np.concatenate([pairs, identical]) if len(identical) else pairs
    group_by = GroupBy.parse(options.group_by, "--group-by")
    if group_by == GroupBy.SKY:
        cells = sky.sky_cells(repeats.of_rows(scan.ra, kept), repeats.of_rows(scan.dec, kept), options.cell_deg)
        _, first, cell = np.unique(cells, return_index=True, return_inverse=True)
        pairs = np.concatenate([pairs, np.column_stack([first[cell], np.arange(n_kept)])])
    groups = sky.components(n_kept, pairs)
    sizes = np.bincount(groups)
    description = {
        "group_radius_arcsec": radius,
        "pixel_scale_arcsec": options.pixel_scale,
        "group_by": group_by.value,
        "cell_deg": options.cell_deg if group_by == GroupBy.SKY else None,
        "groups_of_several_rows": int((sizes > 1).sum()),
        "rows_in_groups": int(sizes[sizes > 1].sum()),
        "largest_group": int(sizes.max(initial=0)),
    }
    if len(identical):
        description["rows_sharing_an_image"] = len(np.unique(identical))
    return groups, description


def _achieved(counts: dict, classes: Sequence[str], fractions: Sequence[float], tolerance: float) -> dict:
    """Each class's share in each split, and how far it is from the target."""
    achieved, worst = {}, 0.0
    for name in classes:
        total = sum(counts[s][name] for s in SPLIT_NAMES)
        shares = [counts[s][name] / total if total else 0.0 for s in SPLIT_NAMES]
        achieved[name] = dict(zip(SPLIT_NAMES, shares))
        worst = max([worst, *(abs(a - f) for a, f in zip(shares, fractions))] if total else [worst])
    return {
        "achieved_fractions": achieved,
        "max_fraction_deviation": worst,
        "tolerance": tolerance,
        "within_tolerance": worst <= tolerance,
    }
