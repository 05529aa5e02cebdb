"""Folders the tests use: the repository, the support folder and the shared real images."""

from __future__ import annotations

import os
from pathlib import Path

#: The repository root (``tests/`` is in it).
REPO = Path(__file__).resolve().parents[2]
#: ``tests/support``: test apps run as programs by module name (see ``child_pythonpath``).
SUPPORT = Path(__file__).resolve().parent
#: The folder of real radio images, beside the repository (``CAESAR_TEST_SHARED_DATA`` names
#: another, e.g. for a git worktree that has no ``../shared``).
SHARED_DATA = Path(os.environ.get("CAESAR_TEST_SHARED_DATA") or REPO.parent / "shared" / "data")


def child_pythonpath(current: str | None) -> str:
    """``PYTHONPATH`` for a process that runs a test app (``python -m caesar_test_apps``).

    The test apps are programs named by module, so their processes need ``tests/support`` on
    their path; the test process itself imports them as ``tests.support.caesar_test_apps``.
    """
    return str(SUPPORT) if not current else os.pathsep.join([str(SUPPORT), current])
