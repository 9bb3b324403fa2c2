"""Row checks on arrays already read: no I/O. One place for what makes a row unusable.

`scan` (pass 1 of merge and build) and `inspect` ask the same questions here,
so what inspect calls an error is what build refuses.
"""

from __future__ import annotations

import numpy as np

RA_RANGE = (0.0, 360.0)  # degrees, [0, 360)
DEC_RANGE = (-90.0, 90.0)  # degrees, [-90, 90]


def invalid_positions(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Rows whose RA/Dec is NaN, infinite, RA outside [0, 360) or Dec outside [-90, 90]."""
    ra, dec = np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ok = (ra >= RA_RANGE[0]) & (ra < RA_RANGE[1]) & (dec >= DEC_RANGE[0]) & (dec <= DEC_RANGE[1])
    return ~ok  # NaN compares False, so NaN and inf are invalid too


def empty_ids(ids: np.ndarray) -> np.ndarray:
    """Rows whose ID (stripped bytes) is empty or blank."""
    return np.char.str_len(np.char.strip(np.asarray(ids, dtype=bytes))) == 0
