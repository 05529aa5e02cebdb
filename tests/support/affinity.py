"""A guard on the test process's CPU affinity (a pytest plugin, from ``tests/conftest.py``).

Some native libraries bind the process that loads them to one core (OpenMPI's ``MPI_Init`` in
a singleton, OpenMP with ``OMP_PROC_BIND``/``GOMP_CPU_AFFINITY``), and every process the test
run starts afterwards inherits the narrowed mask: a later test's Slurm node or job grant then
sees one CPU. The guard records the mask at the start of the session and, after each test's
teardown (its fixtures' teardowns included), puts it back if it changed and warns with the
test's name, so a leak shows in the warnings summary instead of breaking a later test.

Cost: one ``sched_getaffinity`` call per test.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Generator

import pytest


class AffinityLeak(UserWarning):
    """A test (or one of its fixtures) changed the test process's CPU affinity."""


#: The mask at the start of the session (None where the platform has no affinity).
_START: set[int] | None = None


def _mask() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return None


def pytest_sessionstart(session: pytest.Session) -> None:
    """Record the session's CPU affinity."""
    global _START
    _START = _mask()


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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
    """After each test's teardown: the session's affinity again (inside the test's warnings
    capture, so the warning is listed under the test)."""
    try:
        return (yield)
    finally:
        restore(_START, item.nodeid)
