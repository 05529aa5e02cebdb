"""The garbage collector in a process that starts cold, runs one job and ends (standard library
only, so that it can be used before the science stack is imported).

Importing NumPy, SciPy and astropy creates some 90,000 objects the collector tracks, all of them
alive until the process ends. Left to itself, the collector walks them again and again: during
the imports (each full collection walks everything loaded so far), during the job (its full
collections) and at the interpreter's exit. On a 1024 x 1024 run (``caesar-rest find``) that
was about 0.1-0.2 CPU s of 1.5, finding a handful of garbage objects. The forked job processes
(:mod:`caesar_rest.backends.forkserver`) start from a server that has frozen its preloaded
objects already; these helpers do the same for a cold start.
"""

from __future__ import annotations

import atexit
import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def loading() -> Iterator[None]:
    """Import inside this block without the collector, then freeze what is alive.

    The collector is off while the block runs (imports make next to no garbage: 5 objects of
    the caesar program's 90,000) and :func:`gc.freeze` at its end moves every object alive to
    the permanent generation, which later collections skip; objects created afterwards are
    collected as usual. It is turned back on only if it was on.

    Yields
    ------
    None
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def freeze_loaded() -> None:
    """Freeze the objects alive now (the imported modules), once per process.

    For a program whose modules were imported before it could call :func:`loading` (``python
    -m caesar_rest.apps.caesar_run``); nothing happens where something has frozen objects
    already (:func:`loading`, the fork server).
    """
    if gc.get_freeze_count() == 0:
        gc.freeze()


def skip_exit_collection() -> None:
    """Have this process's exit skip the interpreter's final garbage collections.

    With the science stack loaded the interpreter's exit spends about 0.08 s walking its objects
    in these collections, for objects the process is about to drop anyway: 8 % of a 1024 x 1024
    run. :func:`gc.freeze` in an :mod:`atexit` handler (run before those collections, after the
    program has closed its products) leaves them out. The objects are still released by
    reference counting; only garbage cycles left at exit go without their finalizers, which
    Python never guarantees at exit. Calling it again does not register a second handler.
    """
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
