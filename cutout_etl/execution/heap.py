"""Give memory freed by the process back to the operating system, where the C library allows it.

glibc's malloc keeps freed blocks for reuse: planning frees several per-row
arrays of a few MB each, and after the first such free glibc serves arrays of
that size from its heap (its mmap threshold rises) instead of mapping them,
so their pages stay in the process's RSS once freed. `malloc_trim(0)` returns
every whole free page of the heap. Elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def return_freed_memory() -> None:
    """Return the heap's free pages to the system (glibc `malloc_trim(0)`); a no-op without glibc."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
