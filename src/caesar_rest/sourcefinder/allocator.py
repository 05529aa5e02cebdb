"""Allocator setting for a process that runs the finder on a small image (glibc's
``mallopt``), off by default.

glibc serves a large allocation with its own memory mapping, given back to the system when it
is freed, but it raises that size threshold each time such a block is freed (up to 32 MiB,
with a trim threshold of twice that); the heap's freed pages are kept and reused without a
page fault. The finder allocates image-sized temporaries at every step, so the opposite
setting, a fixed low threshold (every such block a fresh mapping, zeroed page by page on
first touch), cost more than the memory it saved: at 2048 x 2048 16 MiB less maximum RSS for
5.4-5.8 CPU s against 3.3-3.6 s and 516k minor page faults against 20k (issue 19; the
finder stopped setting it, and its function was removed once nothing called it). The pages
glibc keeps are bounded by the dynamic threshold's cap, so they do not grow with the image.
See ``docs/benchmarks.md``.

:func:`keep_freed_blocks` goes further for a small image: glibc's dynamic threshold starts
at 128 KiB and rises only as mapped blocks are freed, so a job forked warm from a server (whose
threshold its own imports set) still maps, faults in and unmaps many of its image-sized
temporaries. A fixed threshold of 32 MiB (glibc's largest) with a trim threshold above the
job's heap serves them from the heap, whose freed pages are reused without a fault: one warm
caesar job on a 1000 x 1000 image faulted 11.5k times instead of 31.9k and used about 50 ms
less CPU (most of it system time). The setting is process-wide, so the library never applies
it by itself: the program does, for the image it loaded (forked tile workers inherit it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from typing import cast

#: ``M_TRIM_THRESHOLD`` and ``M_MMAP_THRESHOLD`` of glibc's ``malloc.h``.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3

#: :func:`keep_freed_blocks`: blocks below this size come from the heap (glibc's largest
#: mmap threshold on 64-bit systems)...
KEEP_MMAP_THRESHOLD = 32 * 1024 * 1024
#: ... and the heap gives its top back to the system only when this much of it is free.
KEEP_TRIM_THRESHOLD = 128 * 1024 * 1024


def _mallopt() -> Callable[[int, int], int] | None:
    """glibc's ``mallopt``, or None where the C library has none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return cast(Callable[[int, int], int], mallopt)


def keep_freed_blocks() -> bool:
    """Serve blocks up to :data:`KEEP_MMAP_THRESHOLD` from the heap and keep freed heap memory
    up to :data:`KEEP_TRIM_THRESHOLD` (for a process working on a small image: its
    temporaries are then reused without page faults; process-wide, inherited by forks).

    Returns
    -------
    bool
        True if the C library accepted both settings; False where it has no ``mallopt``.
    """
    mallopt = _mallopt()
    if mallopt is None:
        return False
    trim = mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD)
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_MMAP_THRESHOLD)) and bool(trim)
