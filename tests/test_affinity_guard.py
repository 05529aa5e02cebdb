"""The CPU affinity guard of the test run (``tests/support/affinity.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import affinity
from tests.support.paths import REPO

#: A test module whose first test narrows the affinity and leaves it so.
LEAKY = """
import os

def test_leaks():
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    os.environ["OMP_NUM_THREADS"] = "1"

def test_after():
    assert len(os.sched_getaffinity(0)) == %d
    assert "OMP_NUM_THREADS" not in os.environ
"""


def test_restore_puts_back_a_narrowed_affinity_and_names_the_test() -> None:
    start = set(os.sched_getaffinity(0))
    assert start == affinity._START  # the guard recorded the session's mask
    assert affinity.restore(start, "t::same") is None  # unchanged: no warning, nothing done
    if len(start) < 2:
        pytest.skip("one CPU: nothing to narrow")
    one = min(start)
    os.sched_setaffinity(0, {one})
    with pytest.warns(affinity.AffinityLeak, match=rf"t::narrow changed .* to \[{one}\]"):
        assert affinity.restore(start, "t::narrow") == {one}
    assert set(os.sched_getaffinity(0)) == start


def test_a_leaking_test_is_named_and_the_next_one_has_every_cpu(tmp_path: Path) -> None:
    start = os.sched_getaffinity(0)
    if len(start) < 2:
        pytest.skip("one CPU: nothing to narrow")
    (tmp_path / "test_leaky.py").write_text(LEAKY % len(start))
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.support.affinity"]
    # No plugin autoload: schemathesis' and hypothesis' imports would take seconds.
    path = os.pathsep.join([str(REPO), str(REPO / "src")])
    env = {**os.environ, "PYTHONPATH": path, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env.pop("OMP_NUM_THREADS", None)
    done = subprocess.run(
        [*cmd, "-q", "test_leaky.py"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert "2 passed, 2 warnings" in done.stdout
    assert "AffinityLeak: test_leaky.py::test_leaks changed" in done.stdout
    assert "test_leaks left {'OMP_NUM_THREADS': '1'}" in done.stdout


def test_restore_env_puts_back_the_thread_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    start = affinity._thread_env()
    assert affinity.restore_env(start, "t::same") == {}
    # What an app program run in-process does (apps.program.limit_threads).
    os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    with pytest.warns(affinity.AffinityLeak, match="t::app left"):
        changed = affinity.restore_env(start, "t::app")
    assert changed == {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    assert "OMP_NUM_THREADS" not in os.environ and os.environ["OPENBLAS_NUM_THREADS"] == "3"
