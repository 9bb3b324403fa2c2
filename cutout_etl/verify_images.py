"""`verify`'s checks on the pixels' facts (`inputs.pixel_facts`): identical images across splits, the faint-end table.

An image in two splits is a failure, whatever the IDs: a model tested on an image it was trained on
is scored on memory. `build` never writes one (identical images are dropped, or kept in one split
with --keep-duplicate-images); a dataset built before the check, or edited, can hold them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .steps.split_methods import FAINT_TABLE

MAX_LISTED = 5


def shared_images(splits: Sequence[str], digests: Sequence[np.ndarray]) -> list[str]:
    """A failure naming the splits that share identical images, with counts."""
    if len(digests) < 2:
        return []
    every = np.concatenate(digests)
    split_of = np.concatenate([np.full(len(d), s) for s, d in enumerate(digests)])
    order = np.lexsort((split_of, every))
    every, split_of = every[order], split_of[order]
    starts = np.flatnonzero(np.r_[True, every[1:] != every[:-1]])
    across = np.minimum.reduceat(split_of, starts) != np.maximum.reduceat(split_of, starts) if len(every) else []
    if not np.any(across):
        return []
    pairs: dict[tuple[str, str], int] = {}
    for a, b in zip(np.minimum.reduceat(split_of, starts)[across], np.maximum.reduceat(split_of, starts)[across]):
        key = (splits[a], splits[b])
        pairs[key] = pairs.get(key, 0) + 1
    listed = ", ".join(f"{a}/{b} {n}" for (a, b), n in sorted(pairs.items())[:MAX_LISTED])
    return [f"{int(np.sum(across))} images appear in more than one split ({listed}): the test scores memory"]


def faintest_held(meta: dict, splits: Sequence[str], ids: Sequence[np.ndarray], pixels: Sequence[tuple]) -> list[str]:
    """No row of a class outside the faint table is fainter than that class's stored threshold."""
    faint = ((meta.get("split") or {}).get("faint_test") or {}).get("per_class") or {}
    classes = meta.get("classes") or []
    failures = []
    for name, entry in faint.items():
        threshold = entry.get("flux_threshold") if isinstance(entry, dict) else None
        if threshold is None or name not in classes:
            continue
        code = classes.index(name)
        fainter = 0
        for split, (_, facts) in zip(splits, pixels):
            if split == FAINT_TABLE or facts is None:
                continue
            flux, labels = facts
            fainter += int(np.count_nonzero((labels == code) & (flux < threshold)))
        if fainter:
            failures.append(f"{FAINT_TABLE}: {fainter} {name} rows in other splits are fainter than its threshold")
    if FAINT_TABLE in splits and not faint:
        failures.append(f"{FAINT_TABLE}: a table, but no faint_test description in the split metadata")
    return failures
