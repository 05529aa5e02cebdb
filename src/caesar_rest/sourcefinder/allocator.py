"""Allocator setting for a process that runs the finder (glibc's ``mallopt``), off by default.

glibc serves a large allocation with its own memory mapping, given back to the system when it
is freed, but it raises that size threshold each time such a block is freed (up to 32 MiB,
with a trim threshold of twice that). After the first image-sized array is freed, the next
ones come from the heap, whose freed pages glibc keeps. A fixed threshold
(:func:`release_large_blocks`) stops that: at 2048 x 2048 the finder's maximum RSS is about
16 MiB lower (194 vs 210 MB).

It costs more than it saves, so nothing calls it any more (issue 19): every block above the
threshold is then a fresh mapping, zeroed page by page on first touch, and the finder
allocates such temporaries at every step. At 2048 x 2048 (defaults, one process) it took 5.4-5.8
CPU s against 3.3-3.6 s, with 516k minor page faults against 20k; a 32 MiB threshold still
faulted 297k times. The pages glibc keeps are bounded by the dynamic threshold's cap (blocks
of 32 MiB and more always get their own mapping), so they do not grow with the image: the
tiles of a 16384 x 16384 or 32768 x 32768 image are the same size as smaller ones, and the
few tens of MiB a worker keeps are a few percent of a 1-4 GiB image. See
``docs/benchmarks.md``.

The setting is process-wide, so the library never applies it by itself; a program that wants
the smaller footprint at that cost can call :func:`release_large_blocks` at start-up (forked
tile workers inherit it).

:func:`keep_freed_blocks` goes the other way for a small image: glibc's dynamic threshold starts
at 128 KiB and rises only as mapped blocks are freed, so a job forked warm from a server (whose
threshold its own imports set) still maps, faults in and unmaps many of its image-sized
temporaries. A fixed threshold of 32 MiB (glibc's largest) with a trim threshold above the
job's heap serves them from the heap, whose freed pages are reused without a fault: one warm
caesar job on a 1000 x 1000 image faulted 11.5k times instead of 31.9k and used about 50 ms
less CPU (most of it system time).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from typing import cast

#: ``M_TRIM_THRESHOLD`` and ``M_MMAP_THRESHOLD`` of glibc's ``malloc.h``.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3

#: Blocks of this size and larger get their own mapping: a 1024 x 1024 float32 array, a
#: 2048 x 2048 mask, the label image of a 1024 x 1024 tile. Smaller blocks (row bands, fit
#: batches) are reused from the heap without page faults.
DEFAULT_THRESHOLD = 4 * 1024 * 1024


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


def release_large_blocks(threshold: int = DEFAULT_THRESHOLD) -> bool:
    """Give blocks of ``threshold`` bytes and more back to the system when they are freed.

    Parameters
    ----------
    threshold
        Size in bytes from which an allocation gets its own mapping.

    Returns
    -------
    bool
        True if the C library accepted the setting; False where it has no ``mallopt`` (not
        glibc), which changes nothing else.
    """
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(M_MMAP_THRESHOLD, threshold))
