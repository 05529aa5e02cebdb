"""The local runner's claim keeps the concurrency limit across processes; submit claims at once."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from fastapi.testclient import TestClient
from sqlalchemy import select

from caesar_rest.api.app import create_app
from caesar_rest.apps.registry import default_registry
from caesar_rest.backends import local
from caesar_rest.backends.local import LocalBackend
from caesar_rest.db.engine import make_engine, make_sessionmaker
from caesar_rest.db.migrate import upgrade
from caesar_rest.db.models import JobEvent, JobRecord
from caesar_rest.jobs.service import JobService
from caesar_rest.jobs.states import Phase
from caesar_rest.settings import Settings
from caesar_rest.timeutil import utcnow

from tests.backends.backend_support import local_job
from tests.support.app_jobs import API, upload, wait_state
from tests.support.server import make_settings


def test_concurrent_claims_respect_the_limit(tmp_path: Path, db_url: str) -> None:
    url = db_url
    settings = Settings(datadir=tmp_path / "data", jobdir=tmp_path / "jobs", max_concurrent_jobs=1)
    engine = make_engine(url)
    upgrade(engine)
    now = utcnow()
    with make_sessionmaker(engine).begin() as s:
        for i in range(6):
            s.add(
                local_job(
                    f"job{i}", Phase.QUEUED, created_at=now + timedelta(seconds=i), updated_at=now
                )
            )
    # Six "processes" (each its own engine, service and runner) claim at the same moment.
    barrier = threading.Barrier(6)
    claimed: list[str] = []
    engines = []

    def claim() -> None:
        eng = make_engine(url)
        engines.append(eng)
        svc = JobService(settings, make_sessionmaker(eng), default_registry([]))
        # Slow phase changes widen any window between counting the running jobs and marking
        # the claimed one EXECUTING (there must be none).
        for name in ("transition", "apply_transition"):
            real = getattr(svc, name)

            def slow(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
                time.sleep(0.05)
                return _real(*args, **kwargs)

            setattr(svc, name, slow)
        runner = LocalBackend(svc)
        barrier.wait()
        job = runner._claim()
        if job is not None:
            claimed.append(job.id)

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with make_sessionmaker(engine)() as s:
        executing = s.query(JobRecord).filter(JobRecord.phase == Phase.EXECUTING.value).count()
    for eng in engines:
        eng.dispose()
    engine.dispose()
    assert executing == 1 and claimed == ["job0"]


def _phases(client: TestClient, job_id: str) -> tuple[str, list[str]]:
    """The job's phase and the phases of its events, in order."""
    sessions = client.app.state.ctx.jobs.sessions  # type: ignore[attr-defined]
    with sessions() as s:
        job = s.get(JobRecord, job_id)
        events = s.scalars(
            select(JobEvent.to_phase).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
        )
        assert job is not None
        return job.phase, list(events)


def test_submit_claims_a_job_in_the_transaction_that_queues_it(tmp_path: Path) -> None:
    """With a free slot a submitted job is EXECUTING once its submit has answered (one
    commit, both changes recorded); with none it waits QUEUED for the dispatcher."""
    image = tmp_path / "img.fits"
    fits.PrimaryHDU(np.ones((8, 8), dtype=np.float32)).writeto(image)
    settings = make_settings(tmp_path, job_fork_server="off", max_concurrent_jobs=1)
    with TestClient(create_app(settings)) as client:
        fid = upload(client, image)
        ids = []
        for seconds in (1, 0):
            body = {"app": "sleep", "job_inputs": {"seconds": seconds}, "data_inputs": fid}
            r = client.post(f"{API}/job", json=body)
            assert r.status_code == 202, r.text
            ids.append(str(r.json()["job_id"]))
            if seconds:
                assert _phases(client, ids[0]) == ("EXECUTING", ["PENDING", "QUEUED", "EXECUTING"])
        assert _phases(client, ids[1]) == ("QUEUED", ["PENDING", "QUEUED"])  # the slot is taken
        for job_id in ids:
            assert wait_state(client, job_id, {"SUCCESS", "FAILURE"}, 60)["state"] == "SUCCESS"
            phases = ["PENDING", "QUEUED", "EXECUTING", "COMPLETED"]
            assert _phases(client, job_id) == ("COMPLETED", phases)


def test_an_idle_pass_takes_no_write_lock(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dispatcher's pass over an empty queue only reads: a submit's transaction never
    waits for a claim that finds nothing."""
    settings = Settings(datadir=tmp_path / "data", jobdir=tmp_path / "jobs")
    engine = make_engine(db_url)
    upgrade(engine)
    svc = JobService(settings, make_sessionmaker(engine), default_registry([]))
    runner = LocalBackend(svc)
    locks: list[object] = []
    real = local.write_first

    def counted(s: Any) -> Any:
        locks.append(s)
        return real(s)

    monkeypatch.setattr(local, "write_first", counted)
    try:
        assert runner._claim() is None and locks == []
        with make_sessionmaker(engine).begin() as s:
            s.add(local_job("queued", Phase.QUEUED))
        job = runner._claim()
        assert job is not None and job.id == "queued" and len(locks) == 1
    finally:
        engine.dispose()
