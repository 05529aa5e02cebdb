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
"""

from __future__ import annotations

import ctypes
import ctypes.util

#: ``M_MMAP_THRESHOLD`` of glibc's ``malloc.h``.
M_MMAP_THRESHOLD = -3

#: Blocks of this size and larger get their own mapping: a 1024 x 1024 float32 array, a
#: 2048 x 2048 mask, the label image of a 1024 x 1024 tile. Smaller blocks (row bands, fit
#: batches) are reused from the heap without page faults.
DEFAULT_THRESHOLD = 4 * 1024 * 1024


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
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))
