"""The optional ways of splitting: stable (hash-threshold) assignment, and the faint-end test table. No I/O.

- `SplitMethod.EXACT` (the default, `split.assign_splits`): exact per-class counts; adding rows
  to a catalogue can move existing objects between splits (the ranks shift).
- `SplitMethod.STABLE`: each object's split is fixed by its keyed hash alone, u = hash / 2^64
  compared with the cumulative fractions, so adding rows never moves an existing object; per-class
  fractions then hold within binomial error (`binomial_report`). A group (neighbours, sky cells)
  takes the split of its member with the smallest hash.
- `faint_rows`: the faintest fraction of each class by central aperture flux (`inputs.pixel_facts`)
  goes to an extra table, `FAINT_TABLE`, before the rest is split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..choices import Choice
from ..errors import UsageError
from ..inputs.pixel_facts import APERTURE_BAND, APERTURE_RADIUS_PX

FAINT_TABLE = "test_faint"


class SplitMethod(Choice):
    """How rows are assigned to train/val/test: exact per-class counts, or stable under added rows."""

    EXACT = "exact"
    STABLE = "stable"


def stable_assignment(hashes: np.ndarray, fractions: Sequence[float], groups: np.ndarray | None = None) -> np.ndarray:
    """Split index of each row from its keyed hash alone (its group's smallest hash with `groups`)."""
    key = hashes if groups is None else _group_min(hashes, groups)
    u = key.astype(np.float64) / 2.0**64  # in [0, 1]; float rounding may give exactly 1.0
    bounds = np.cumsum(fractions)
    last_open = max(i for i, f in enumerate(fractions) if f > 0)
    bounds[last_open:] = np.inf  # u == 1.0 and the fractions' rounding land in the last non-empty split
    return np.searchsorted(bounds, u, side="right").astype(np.int8)


def _group_min(hashes: np.ndarray, groups: np.ndarray) -> np.ndarray:
    smallest = np.full(int(groups.max(initial=-1)) + 1, np.iinfo(np.uint64).max, dtype=np.uint64)
    np.minimum.at(smallest, groups, hashes)
    return smallest[groups]


def binomial_report(counts: dict, classes: Sequence[str], fractions: Sequence[float], splits: Sequence[str]) -> dict:
    """For the stable method: each class's expected binomial sd per split, and the worst deviation in sd units."""
    expected_sd: dict[str, dict[str, float]] = {}
    worst = 0.0
    for name in classes:
        total = sum(counts[s][name] for s in splits)
        expected_sd[name] = {}
        for split, fraction in zip(splits, fractions):
            sd = math.sqrt(fraction * (1 - fraction) / total) if total else 0.0
            expected_sd[name][split] = sd
            if sd > 0:
                worst = max(worst, abs(counts[split][name] / total - fraction) / sd)
    return {"expected_binomial_sd": expected_sd, "max_deviation_in_sd": worst}


def check_faint_fraction(fraction: float) -> float:
    if not (math.isfinite(fraction) and 0 <= fraction < 1):
        raise UsageError(f"--faint-test: expected a fraction from 0 to below 1 (got {fraction})")
    return float(fraction)


def faint_rows(
    flux: np.ndarray, ids: np.ndarray, codes: np.ndarray, classes: Sequence[str], fraction: float, groups: np.ndarray
) -> tuple[np.ndarray, dict]:
    """Rows of the faint-end test table, and its description.

    Per class, the round(fraction * rows) rows of lowest aperture flux (ties by ID; rows whose
    aperture has no finite pixel are never chosen); then every member of a group holding a chosen
    row, so neighbours never straddle it and the table (counted in `rows_pulled_in_by_groups`).
    """
    chosen = np.zeros(len(ids), dtype=bool)
    per_class = {}
    for code, name in enumerate(classes):
        mine = np.flatnonzero((codes == code) & np.isfinite(flux))
        n = min(math.floor(fraction * np.count_nonzero(codes == code) + 0.5), len(mine))
        faintest = mine[np.lexsort((ids[mine], flux[mine]))[:n]]
        chosen[faintest] = True
        per_class[name] = {"chosen": n, "flux_threshold": float(flux[faintest].max()) if n else None}
    pulled = np.isin(groups, groups[chosen]) & ~chosen
    description = {
        "fraction": fraction,
        "band": APERTURE_BAND,
        "aperture_radius_px": APERTURE_RADIUS_PX,
        "ranked_by": "sum of the band's finite pixels within the radius of the cutout centre; ties by ID",
        "per_class": per_class,
        "rows_pulled_in_by_groups": int(pulled.sum()),
    }
    return chosen | pulled, description
