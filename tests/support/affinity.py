"""A guard on the CPUs the test process offers its children (a pytest plugin, from conftest).

Two things narrow what every later process of the run sees as its CPUs:

- the process's CPU affinity, which native libraries may bind to one core (OpenMPI's
  ``MPI_Init``, OpenMP with ``OMP_PROC_BIND``/``GOMP_CPU_AFFINITY``) and children inherit;
- the thread variables in ``os.environ`` (``OMP_NUM_THREADS``, ...): an app program run
  in-process caps its threads by setting them (``apps.program.limit_threads``), every later
  child inherits them, and coreutils' ``nproc`` answers ``OMP_NUM_THREADS`` (so
  ``scripts/slurm.sh`` made a 1-CPU Slurm node that refused a 2-task job).

The guard records both at the start of the session and, after each test's teardown (its
fixtures' teardowns included), puts back whatever changed and warns with the test's name, so
a leak shows in the warnings summary instead of breaking a later test. Cost: one
``sched_getaffinity`` call and four dictionary looks per test.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Generator

import pytest

#: Variables that set children's thread counts (and ``nproc``'s answer).
THREAD_VARS = ("OMP_NUM_THREADS", "OMP_THREAD_LIMIT", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class AffinityLeak(UserWarning):
    """A test (or one of its fixtures) changed the test process's CPUs or thread variables."""


#: The mask at the start of the session (None where the platform has no affinity).
_START: set[int] | None = None
#: The thread variables at the start of the session (None: unset).
_START_ENV: dict[str, str | None] = {}


def _mask() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return None


def _thread_env() -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in THREAD_VARS}


def pytest_sessionstart(session: pytest.Session) -> None:
    """Record the session's CPU affinity and thread variables."""
    global _START, _START_ENV
    _START, _START_ENV = _mask(), _thread_env()


def restore(start: set[int] | None, nodeid: str) -> set[int] | None:
    """Put the affinity back to ``start`` if it changed and warn with ``nodeid``.

    Parameters
    ----------
    start
        The mask to keep (None: nothing to check).
    nodeid
        The test to name in the warning.

    Returns
    -------
    set of int or None
        The changed mask that was replaced (None when it had not changed).
    """
    now = _mask()
    if start is None or now is None or now == start:
        return None
    try:
        os.sched_setaffinity(0, start)
        done = "restored"
    except OSError as exc:  # the CPUs are gone (a cpuset changed under the run)
        done = f"not restored ({exc})"
    warnings.warn(
        f"{nodeid} changed the test process's CPU affinity from {sorted(start)} to "
        f"{sorted(now)}; {done}",
        AffinityLeak,
        stacklevel=1,
    )
    return now


def restore_env(start: dict[str, str | None], nodeid: str) -> dict[str, str | None]:
    """Put the thread variables back to ``start`` where they changed and warn with ``nodeid``.

    Parameters
    ----------
    start
        The values to keep (None: unset).
    nodeid
        The test to name in the warning.

    Returns
    -------
    dict
        The changed variables with the values that were replaced (empty when none changed).
    """
    changed = {k: os.environ.get(k) for k, v in start.items() if os.environ.get(k) != v}
    if not changed:
        return changed
    for name in changed:
        if start[name] is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = str(start[name])
    warnings.warn(
        f"{nodeid} left {changed} in the test process's environment (children would inherit "
        "them, and nproc answers OMP_NUM_THREADS); restored",
        AffinityLeak,
        stacklevel=1,
    )
    return changed


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
    """After each test's teardown: the session's affinity and thread variables again (inside
    the test's warnings capture, so the warning is listed under the test)."""
    try:
        return (yield)
    finally:
        restore(_START, item.nodeid)
        restore_env(_START_ENV, item.nodeid)
