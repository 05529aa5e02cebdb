"""Allocator setting for a process that runs the finder (glibc's ``mallopt``).

glibc serves a large allocation with its own memory mapping, given back to the system when it
is freed, but it raises that size threshold each time such a block is freed (up to 32 MiB).
After the first image-sized array is freed, the next ones come from the heap, whose freed pages
glibc keeps. The finder frees and allocates image-sized temporaries at every step, so the
process grows with pages it no longer uses: at 2048 x 2048 about 15 MiB above what is live.
A fixed threshold stops that. It costs some time (a fresh mapping is zeroed page by page on
first touch): see ``docs/benchmarks.md``.

The setting is process-wide, so the library never applies it by itself: the ``caesar`` app's
program calls :func:`release_large_blocks` at start-up (tile workers are forked from it and
inherit it), and so does ``benchmarks/finders.py`` for the caesar run.
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
