"""The celery backend with real RabbitMQ, Redis, PostgreSQL, server and worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from caesar_rest.api.app import create_app

from tests.backends.backend_support import (
    API,
    CeleryRig,
    RigFactory,
    Worker,
    ancestors,
    celery_env,
    delete_queue,
    job_folder,
    pid_alive,
    require_broker,
    require_redis,
    status,
    submit_sleep,
    submit_uws,
    upload,
    wait_file,
    wait_for,
)
from tests.support.e2e import run_curl_sequence
from tests.support.server import make_settings, wait_state

pytestmark = pytest.mark.celery


@pytest.fixture(scope="module")
def module_pg(pg_admin: str) -> Iterator[str]:
    """A PostgreSQL database for the tests that share one server."""
    import psycopg

    name = f"caesar_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, module_pg: str) -> Iterator[CeleryRig]:
    """One server on the celery backend with one worker, for several tests."""
    factory = RigFactory(
        tmp_path_factory.mktemp("celery"), module_pg, require_broker(), require_redis()
    )
    rig = factory()
    rig.worker()
    yield rig
    factory.close()


@pytest.fixture
def rigs(tmp_path: Path, pg_url: str) -> Iterator[RigFactory]:
    factory = RigFactory(tmp_path, pg_url, require_broker(), require_redis())
    yield factory
    factory.close()


@pytest.mark.postgres
def test_curl_sequence_celery(shared: CeleryRig, s17: Path, tmp_path: Path) -> None:
    """The core issue's end-to-end sequence, unchanged, with the job on a Celery worker."""
    rig = shared
    run_curl_sequence(rig.srv, s17, tmp_path)
    with rig.srv.client() as c:
        job = c.get("/jobs").json()[0]
        doc = status(c, job["job_id"])
    assert doc["backend"] == "celery"
    assert [e["to"] for e in doc["events"]] == ["PENDING", "QUEUED", "EXECUTING", "COMPLETED"]
    assert "Celery worker" in doc["events"][2]["message"]


@pytest.mark.postgres
def test_cancel_terminates_the_job_on_its_worker(shared: CeleryRig, s17: Path) -> None:
    rig = shared
    worker = rig.workers[-1]
    with rig.srv.client() as c:
        job_id = submit_sleep(c, upload(c, s17), 60)
        wait_for(c, job_id, {"RUNNING"})
        app_pid, child_pid = map(int, wait_file(job_folder(rig.srv, job_id) / "pids.txt").split())
        # The job's processes descend from the worker, not from the API server.
        chain = ancestors(app_pid)
        assert worker.pid in chain and rig.srv.proc is not None
        assert rig.srv.proc.pid not in chain
        r = c.post(f"/job/{job_id}/cancel")
        assert r.status_code == 200, r.text
        doc = wait_for(c, job_id, {"CANCELED"}, timeout=60)
    assert doc["phase"] == "ABORTED"
    deadline = time.time() + 60
    while time.time() < deadline and (pid_alive(app_pid) or pid_alive(child_pid)):
        time.sleep(0.1)
    assert not pid_alive(app_pid) and not pid_alive(child_pid)
    assert "Terminating" in worker.log()  # revoke(terminate=True) reached the worker


@pytest.mark.postgres
def test_time_limit_times_out(shared: CeleryRig, s17: Path) -> None:
    rig = shared
    with rig.srv.client() as c:
        fid = upload(c, s17)
    job_id = submit_uws(rig.srv, fid, seconds=60, limit=2)
    with rig.srv.client() as c:
        doc = wait_for(c, job_id, {"TIMED-OUT", "FAILURE", "SUCCESS"}, timeout=30)
    assert doc["state"] == "TIMED-OUT", doc
    assert doc["phase"] == "ERROR"
    assert 1.5 < doc["elapsed_time"] < 10


@pytest.mark.postgres
def test_worker_sigkill_during_a_job(shared: CeleryRig, s17: Path) -> None:
    """acks_late + reject_on_worker_lost: the job is run again by another worker."""
    rig = shared
    first = rig.workers[-1]
    with rig.srv.client() as c:
        job_id = submit_sleep(c, upload(c, s17), 4)
        wait_for(c, job_id, {"RUNNING"})
        app_pid = int(wait_file(job_folder(rig.srv, job_id) / "pids.txt").split()[0])
        first.kill()
        rig.worker()
        doc = wait_for(c, job_id, {"SUCCESS", "FAILURE", "ABORTED", "CANCELED"}, timeout=60)
        assert doc["state"] == "SUCCESS", doc
        messages = [e["message"] for e in doc["events"]]
        assert any("Worker lost during the run" in m for m in messages), messages
        assert not pid_alive(app_pid)  # the first run died with its worker
        assert c.get(f"/job/{job_id}/output").status_code == 200


@pytest.mark.postgres
def test_monitor_marks_a_lost_task_message(shared: CeleryRig, s17: Path) -> None:
    """A QUEUED job whose message vanished from the broker (no worker ever saw it)."""
    rig = shared
    for w in rig.workers:
        w.stop()
    with rig.srv.client() as c:
        job_id = submit_sleep(c, upload(c, s17), 1)
        assert status(c, job_id)["phase"] == "QUEUED"
    from kombu import Connection

    with Connection(rig.env["CAESAR_REST_BROKER_URL"]) as conn:
        conn.default_channel.queue_purge(rig.env["CAESAR_REST_CELERY_QUEUE"])
    time.sleep(1.2)
    env = {**rig.env, "CAESAR_REST_MONITOR_LOST_AFTER": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "caesar_rest.cli", "monitor", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    with rig.srv.client() as c:
        doc = status(c, job_id)
    assert doc["state"] == "FAILURE" and doc["phase"] == "ERROR", doc
    assert "lost" in doc["status"].lower()
    assert doc["events"][-1]["reason"] == "lost"


def test_redis_as_broker(tmp_path: Path, s17: Path) -> None:
    """Redis as the broker too (in-process API on SQLite, a real worker process)."""
    redis = require_redis()
    broker = os.environ.get("CAESAR_TEST_REDIS_BROKER", "redis://127.0.0.1:6379/1")
    env = celery_env(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite3'}", broker, redis)
    settings = make_settings(
        tmp_path / "srv",
        db_url=env["CAESAR_REST_DB_URL"],
        job_scheduler="celery",
        broker_url=broker,
        result_backend=redis,
        celery_queue=env["CAESAR_REST_CELERY_QUEUE"],
        backend_poll_interval=0.5,
    )
    with TestClient(create_app(settings)) as client:
        worker = Worker(tmp_path / "worker", env).start()
        try:
            with open(s17, "rb") as fh:
                fid = client.post(f"{API}/upload", files={"file": (s17.name, fh)}).json()["uuid"]
            r = client.post(
                f"{API}/job",
                json={"app": "sleep", "job_inputs": {"seconds": 0.5}, "data_inputs": fid},
            )
            job_id = r.json()["job_id"]
            doc = wait_state(client, job_id, {"SUCCESS", "FAILURE"}, timeout=60, prefix=API)
        finally:
            worker.stop()
            delete_queue(broker, env["CAESAR_REST_CELERY_QUEUE"])
    assert doc["state"] == "SUCCESS", doc
    assert "Celery worker" in doc["events"][2]["message"]
