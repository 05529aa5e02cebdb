"""Destruction: the janitor removes jobs and their results at their destruction time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from caesar_rest.api.app import create_app
from caesar_rest.backends.process import process_alive
from caesar_rest.db.models import JobEvent, JobRecord, JobResult
from caesar_rest.jobs.janitor import Janitor

from tests.support.server import make_settings
from tests.uws.uws_support import create, job_json, upload


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, janitor_interval=0.2, max_destruction_days=3.0)
    with TestClient(create_app(settings)) as c:
        yield c


def _count(ctx: object, model: type, job_id: str) -> int:
    col = model.id if model is JobRecord else model.job_id  # type: ignore[attr-defined]
    with ctx.sessions() as s:  # type: ignore[attr-defined]
        return int(
            s.execute(select(func.count()).select_from(model).where(col == job_id)).scalar_one()
        )


def test_destroyed_jobs_answer_404_and_their_folders_are_gone(
    client: TestClient, s17: Path
) -> None:
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    fid = upload(client, s17)
    done = create(client, app="sleep", file=fid, seconds="0", PHASE="RUN")
    running = create(client, app="sleep", file=fid, seconds="60", PHASE="RUN")
    kept = create(client, app="sleep", file=fid)
    deadline = time.time() + 30
    while job_json(client, done, WAIT="2")["phase"] != "COMPLETED":
        assert time.time() < deadline
    while job_json(client, running, WAIT="2")["phase"] != "EXECUTING":
        assert time.time() < deadline
    jobs = {u: ctx.jobs.get_any(u.rsplit("/", 1)[1]) for u in (done, running, kept)}
    folders = {u: ctx.jobs.job_dir(j) for u, j in jobs.items()}
    assert all(f.is_dir() for f in folders.values())
    # The v1.0 archive is removed too.
    job_id = jobs[done].id
    assert client.get(f"/caesar/api/v1.0/job/{job_id}/output").status_code == 200
    assert ctx.jobs.archive_path(jobs[done]).exists()
    deadline = time.time() + 30
    while ctx.jobs.get_any(jobs[running].id).pid is None:
        assert time.time() < deadline
        time.sleep(0.05)
    proc = ctx.jobs.get_any(jobs[running].id)
    # Destruction "now" (a past instant is moved to now).
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    for url in (done, running):
        r = client.post(f"{url}/destruction", data={"DESTRUCTION": past}, follow_redirects=False)
        assert r.status_code == 303
    deadline = time.time() + 60
    while any(client.get(u).status_code != 404 for u in (done, running)):
        assert time.time() < deadline, "the janitor did not destroy the jobs"
        time.sleep(0.1)
    for url in (done, running):
        jid = jobs[url].id
        assert not folders[url].exists()
        assert client.get(f"{url}/results/log").status_code == 404
        assert client.get(f"/caesar/api/v1.0/job/{jid}/status").status_code == 404
        for model in (JobRecord, JobResult, JobEvent):
            assert _count(ctx, model, jid) == 0, model
    assert not ctx.jobs.archive_path(jobs[done]).exists()
    deadline = time.time() + 60  # the running job's processes were stopped
    while process_alive(proc.pid, proc.pid_start):
        assert time.time() < deadline, "the destroyed job's process still runs"
        time.sleep(0.1)
    # The other job and the input file are untouched.
    assert client.get(f"{kept}/phase").text == "PENDING"
    assert folders[kept].is_dir()
    assert [f["fileid"] for f in client.get("/caesar/api/v1.0/fileids").json()] == [fid]


def test_sweep_removes_only_expired_jobs(client: TestClient, s17: Path) -> None:
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    fid = upload(client, s17)
    urls = [create(client, app="sleep", file=fid) for _ in range(3)]
    soon = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    later = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    client.post(f"{urls[0]}/destruction", data={"DESTRUCTION": soon})
    client.post(f"{urls[1]}/destruction", data={"DESTRUCTION": later})
    janitor = Janitor(ctx.jobs, interval=3600)  # not started: swept by hand
    assert janitor.sweep() == 0
    assert janitor.sweep(datetime.now(UTC) + timedelta(days=1, hours=1)) == 1
    assert [client.get(u).status_code for u in urls] == [404, 200, 200]
    # The third keeps the default lifetime (7 days, within the 3-day maximum: 3 days).
    assert janitor.sweep(datetime.now(UTC) + timedelta(days=2, hours=1)) == 1
    assert janitor.sweep(datetime.now(UTC) + timedelta(days=3, hours=1)) == 1
    assert client.get("/uws/jobs", headers={"Accept": "application/json"}).json()["jobs"] == []


def test_default_destruction_applies_to_v1_jobs(client: TestClient, s17: Path) -> None:
    fid = upload(client, s17)
    r = client.post("/caesar/api/v1.0/job", json={"app": "sleep", "data_inputs": fid})
    assert r.status_code == 202
    doc = job_json(client, f"/uws/jobs/{r.json()['job_id']}")
    lifetime = datetime.fromisoformat(doc["destruction"]) - datetime.fromisoformat(
        doc["creationTime"]
    )
    # destruction_days (7) is clamped to max_destruction_days (3 here).
    assert abs(lifetime - timedelta(days=3)) < timedelta(seconds=1)
    client.post(f"/caesar/api/v1.0/job/{r.json()['job_id']}/cancel")
