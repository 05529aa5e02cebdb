"""A starting API process adopts what an earlier one left, never what a sibling is starting.

Issue 19: with two API workers and a lazily started fork server, a job ended FAILURE with the
status "Job running". The worker that claimed it waited seconds for its fork server's imports
before it recorded the job's pid; the other worker started meanwhile, its adoption pass took
the pid-less EXECUTING job for one an earlier process had left, and marked it lost; the first
worker then wrote "Job running" over the final message.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from fastapi.testclient import TestClient

from caesar_rest.api.app import create_app
from caesar_rest.backends import local
from caesar_rest.backends.process import hostname, process_alive
from caesar_rest.jobs.states import Phase
from caesar_rest.runtime import build_runtime
from caesar_rest.timeutil import utcnow

from tests.backends.backend_support import local_job
from tests.support.app_jobs import upload, wait_state
from tests.support.server import make_settings

API = "/caesar/api/v1.0"


def processes_in(folder: Path) -> list[int]:
    """Live processes whose working folder is ``folder``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "cwd") == str(folder) and process_alive(
                    int(entry.name), None
                ):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "img.fits"
    fits.PrimaryHDU(np.ones((8, 8), dtype=np.float32)).writeto(path)
    return path


def test_a_sibling_starting_up_leaves_a_job_being_launched_alone(
    tmp_path: Path, image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, job_fork_server="off")
    launching, adopted = threading.Event(), threading.Event()
    real: Callable[..., Any] = local.launch

    def slow_launch(*args: Any, **kwargs: Any) -> Any:
        # A launch that waits, as one waits for a lazily started fork server's imports.
        launching.set()
        assert adopted.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(local, "launch", slow_launch)
    with TestClient(create_app(settings)) as client:
        fid = upload(client, image)
        r = client.post(
            f"{API}/job", json={"app": "sleep", "job_inputs": {"seconds": 0}, "data_inputs": fid}
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        assert launching.wait(30)  # claimed (EXECUTING, no pid yet) and being launched
        # A second worker process starts now: its runner's adoption pass.
        sibling = build_runtime(settings, migrate=False)
        try:
            sibling.jobs.backends["local"].adopt()  # type: ignore[attr-defined]
        finally:
            adopted.set()
            sibling.close()
        status = wait_state(client, job_id, {"SUCCESS", "FAILURE"}, timeout=60)
        assert status["state"] == "SUCCESS", status
        assert status["status"] == "Process terminated with success"


def test_a_job_canceled_while_it_is_launched_is_stopped(
    tmp_path: Path, image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, job_fork_server="off")
    launching, canceled = threading.Event(), threading.Event()
    real: Callable[..., Any] = local.launch

    def slow_launch(*args: Any, **kwargs: Any) -> Any:
        launching.set()
        assert canceled.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(local, "launch", slow_launch)
    with TestClient(create_app(settings)) as client:
        fid = upload(client, image)
        r = client.post(
            f"{API}/job", json={"app": "sleep", "job_inputs": {"seconds": 60}, "data_inputs": fid}
        )
        job_id = r.json()["job_id"]
        assert launching.wait(30)
        # Canceled before its pid is known: nothing to kill yet.
        assert client.post(f"{API}/job/{job_id}/cancel").json()["state"] == "CANCELED"
        canceled.set()
        folder = next((tmp_path / "jobs").glob(f"*/job_{job_id}"))
        # The launcher finds the job canceled when it records the pid, and stops it: no
        # process is left in the job folder (whether the app had started or not).
        time.sleep(1.0)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and processes_in(folder):
            time.sleep(0.05)
        assert processes_in(folder) == []
        status = client.get(f"{API}/job/{job_id}/status").json()
        assert status["state"] == "CANCELED" and status["status"] == "Job canceled by user"


def test_the_sweep_settles_a_job_never_given_a_pid(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, monitor_lost_after=30)
    runtime = build_runtime(settings, migrate=True)
    try:
        runner = runtime.jobs.backends["local"]
        assert isinstance(runner, local.LocalBackend)
        old = utcnow() - timedelta(seconds=40)
        with runtime.sessions.begin() as s:
            for job_id, updated in (("stale", old), ("fresh", utcnow())):
                s.add(
                    local_job(
                        job_id,
                        Phase.EXECUTING,
                        message="Job starting",
                        host=hostname(),
                        created_at=old,
                        updated_at=updated,
                    )
                )
        # The sweep (and a restart's adoption) settles the one whose record has not moved for
        # monitor_lost_after; the other may be a sibling's launch.
        runner._sweep()
        runner.adopt()
        stale, fresh = runtime.jobs.get_any("stale"), runtime.jobs.get_any("fresh")
        assert stale is not None and fresh is not None
        assert (stale.phase, stale.reason) == (Phase.ERROR.value, "lost")
        assert stale.message == "Job process never started; outcome unknown"
        assert fresh.phase == Phase.EXECUTING.value
    finally:
        runtime.close()
