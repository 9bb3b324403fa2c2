"""Labels: normalisation, the class list and integer encoding. No I/O.

Pass 1 (`scan`) encodes every row's label with these; `merge` then decides
what to keep.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import UsageError
from ..schema import as_bytes

UNKNOWN = -1


def normalize_labels(values: np.ndarray) -> np.ndarray:
    """Bytes or str labels as stripped, upper-case bytes."""
    return np.char.upper(as_bytes(values))


def parse_classes(classes: Sequence[str] | None, default: Sequence[str]) -> list[str]:
    """The class list in code order: sorted by default, or as the user gave it."""
    if classes is None:
        return sorted(default)
    names = [c.strip().upper() for c in classes if c.strip()]
    if not names:
        raise UsageError("--classes: no class names given")
    if len(set(names)) != len(names):
        raise UsageError(f"--classes: a class is listed twice ({', '.join(names)})")
    odd = [n for n in names if not n.isascii()]
    if odd:  # labels are compared and stored as ASCII bytes, as the survey catalogues write them
        raise UsageError(f"--classes: class names must be ASCII (got {', '.join(odd)})")
    return names


def encode_labels(normalized: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Integer codes in class-list order; UNKNOWN (-1) for anything else."""
    values, inverse = np.unique(normalized, return_inverse=True)
    lookup = {c.encode(): i for i, c in enumerate(classes)}
    codes = np.array([lookup.get(v, UNKNOWN) for v in values], dtype=np.int16)
    return codes[inverse.reshape(-1)]
