"""Warm job starts on a Celery worker (issue 19): real RabbitMQ, Redis, PostgreSQL, server and
worker; each pool process has a fork server that has the science stack imported."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends.backend_support import (
    CeleryRig,
    RigFactory,
    ancestors,
    job_folder,
    pid_alive,
    require_broker,
    require_redis,
    submit_sleep,
    upload,
    wait_file,
    wait_for,
)

pytestmark = [pytest.mark.celery, pytest.mark.postgres]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, pg_admin: str) -> Iterator[CeleryRig]:
    """One server on the celery backend with one worker of one pool process."""
    import psycopg

    name = f"caesar_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    factory = RigFactory(
        tmp_path_factory.mktemp("celery-fork"),
        f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
        require_broker(),
        require_redis(),
    )
    rig = factory(CAESAR_REST_JOB_FORK_SERVER="eager")  # the default, whatever the rig sets
    rig.worker()
    yield rig
    factory.close()
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _fork_server_of(log: str) -> int:
    line = next(x for x in log.splitlines() if "[caesar-rest] warm start (fork server" in x)
    return int(line.rsplit(" ", 1)[1].rstrip(")"))


def test_a_job_runs_warm_on_the_worker_and_cancel_kills_its_group(
    rig: CeleryRig, s17: Path
) -> None:
    worker = rig.workers[-1]
    with rig.srv.client() as c:
        job_id = submit_sleep(c, upload(c, s17), 60)
        wait_for(c, job_id, {"RUNNING"})
        folder = job_folder(rig.srv, job_id)
        app, child = map(int, wait_file(folder / "pids.txt").split())
        server = _fork_server_of((folder / "job.log").read_text())
        # app -> its wrapper -> fork server -> pool process -> worker: the job descends from
        # its worker, in the wrapper's session and process group.
        chain = ancestors(app)
        wrapper = chain[0]
        assert chain[1] == server and worker.pid in chain[2:4], chain
        assert os.getsid(app) == wrapper and os.getpgid(child) == wrapper
        r = c.post(f"/job/{job_id}/cancel")
        assert r.status_code == 200, r.text
        doc = wait_for(c, job_id, {"CANCELED"}, timeout=60)
    assert doc["phase"] == "ABORTED"
    deadline = time.time() + 60
    # The wrapper outlives the app by the time it takes to record the end.
    while time.time() < deadline and any(pid_alive(p) for p in (app, child, wrapper)):
        time.sleep(0.1)
    assert not pid_alive(app) and not pid_alive(child) and not pid_alive(wrapper)
    assert pid_alive(server)  # the fork server serves the next job


def test_fork_server_death_falls_back_to_cold_starts(rig: CeleryRig, s17: Path) -> None:
    with rig.srv.client() as c:
        fid = upload(c, s17)
        first = submit_sleep(c, fid, 0)
        assert wait_for(c, first, {"SUCCESS", "FAILURE"}, timeout=30)["state"] == "SUCCESS"
        server = _fork_server_of((job_folder(rig.srv, first) / "job.log").read_text())
        os.kill(server, signal.SIGKILL)
        job_id = submit_sleep(c, fid, 0, code=0)
        doc = wait_for(c, job_id, {"SUCCESS", "FAILURE"}, timeout=30)
    assert doc["state"] == "SUCCESS", doc
    log = (job_folder(rig.srv, job_id) / "job.log").read_text()
    assert "warm start" not in log and "[caesar-rest] running:" in log
    worker_log = rig.workers[-1].log()
    assert "fork_server_unavailable" in worker_log
    assert "exited with status -9" in worker_log
