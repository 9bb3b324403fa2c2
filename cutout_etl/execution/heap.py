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

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MAPPED_FROM_BYTES = 1 << 20


@functools.cache
def _glibc(name: str, argtypes: tuple):
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        function = getattr(libc, name)  # glibc only
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = list(argtypes), ctypes.c_int
    return function


def _malloc_trim():
    return _glibc("malloc_trim", (ctypes.c_size_t,))


def map_large_allocations() -> None:
    """Serve every allocation of 1 MiB or more by its own mapping, returned to the system when freed.

    glibc's default raises its mmap threshold (up to 32 MiB) each time such a
    block is freed, after which per-row arrays of a few MB come from the heap
    and their pages stay resident once freed: RSS then follows the heap's
    high-water mark and its holes, not the memory in use (the 3 x 10^5 rows per
    class build peaked ~25 MB higher). A fixed threshold (glibc `mallopt`)
    stops that; numpy's small arrays are unaffected. Elsewhere a no-op.
    """
    mallopt = _glibc("mallopt", (ctypes.c_int, ctypes.c_int))
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, MAPPED_FROM_BYTES)


def return_freed_memory() -> None:
    """Return the heap's free pages to the system (glibc `malloc_trim(0)`); a no-op without glibc."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
