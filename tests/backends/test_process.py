"""The one job-process launcher: environment, wrapper, process group, pid checks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from caesar_rest.backends.process import (
    WRAPPER_MODULE,
    job_environment,
    kill_group,
    launch,
    launch_environment,
    process_alive,
    process_start_ticks,
    remap,
    wrapper_argv,
)
from caesar_rest.jobs.folder import LOG_FILE, read_exit


def test_one_environment_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    assert job_environment(4) == {
        "OMP_NUM_THREADS": "4",
        "CAESAR_JOB_CORES": "4",
        "MPLBACKEND": "Agg",
    }
    assert job_environment(0)["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("CAESAR_REST_SLURM_TOKEN", "secret")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    env = launch_environment(3)
    assert "CAESAR_REST_SLURM_TOKEN" not in env
    assert (env["OMP_NUM_THREADS"], env["MPLBACKEND"]) == ("3", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the operator's choice is kept
    assert launch_environment(3)["OMP_NUM_THREADS"] == "2"


def test_wrapper_argv_remaps_paths() -> None:
    mapping = [("/srv/data", "/data"), ("/srv/jobs/", "/jobs")]
    argv = wrapper_argv([sys.executable, "/srv/data/a.fits", "--out=/srv/jobs/u/j"], "py", mapping)
    assert argv == ["py", "-m", WRAPPER_MODULE, "--", "py", "/data/a.fits", "--out=/jobs/u/j"]
    assert remap("/srv/database", mapping) == "/srv/database"  # a prefix, not a path prefix
    assert wrapper_argv(["x"])[:3] == [sys.executable, "-m", WRAPPER_MODULE]


def test_launch_runs_the_wrapper_in_the_job_folder(tmp_path: Path) -> None:
    (tmp_path / "exit.json").write_text('{"exit_code": 9}')  # an earlier run's record
    code = "import os; print(os.environ['OMP_NUM_THREADS'], os.getpgid(0) == os.getpid())"
    started = launch(tmp_path, [sys.executable, "-c", code], cores=2)
    assert started.proc.wait(timeout=30) == 0
    assert started.start_ticks is not None
    rec = read_exit(tmp_path)
    assert rec is not None and rec.exit_code == 0
    log = (tmp_path / LOG_FILE).read_text()
    assert "running:" in log
    # OMP_NUM_THREADS from the job's cores unless set here; the app runs in the job's group.
    omp = os.environ.get("OMP_NUM_THREADS", "2")
    assert f"{omp} False" in log  # the app is the wrapper's child: not the group leader


def test_kill_group_stops_the_whole_group(tmp_path: Path) -> None:
    started = launch(tmp_path, ["sh", "-c", "sleep 60 & sleep 60; wait"], cores=1)
    time.sleep(0.5)
    assert process_alive(started.pid, started.start_ticks)
    assert not process_alive(started.pid, (started.start_ticks or 0) + 1)  # a reused pid
    kill_group(started.pid, started.start_ticks, grace=2.0)
    assert started.proc.wait(timeout=10) != 0
    assert not process_alive(started.pid, started.start_ticks)
    out = subprocess.run(
        ["pgrep", "-g", str(started.pid)], capture_output=True, text=True, check=False
    )
    # Nothing of the group runs (zombies left to an init that does not reap have ended).
    assert [p for p in out.stdout.split() if process_start_ticks(int(p)) is not None] == []
    assert process_start_ticks(started.pid) is None


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        # The job wrapper starts fast: standard library and the job-folder module only.
        ("caesar_rest.backends.wrapper", ("sqlalchemy", "pydantic", "caesar_rest.db")),
        # The worker side needs neither the API nor the API side of its backend.
        (
            "caesar_rest.backends.celery_worker",
            ("fastapi", "caesar_rest.api", "caesar_rest.backends.celery_backend"),
        ),
        # Building the runtime imports no remote backend that is not configured.
        ("caesar_rest.runtime", ("celery", "kubernetes", "caesar_rest.backends.slurm")),
    ],
)
def test_light_imports(module: str, absent: tuple[str, ...]) -> None:
    code = f"import sys, {module}; print(sorted(set(sys.modules) & set({list(absent)!r})))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
