"""``caesar-rest monitor``: several copies at once, the per-backend lock, lost local jobs, and
the predecessor's option names."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from caesar_rest.api.app import create_app
from caesar_rest.backends.cli import legacy_backend_env
from caesar_rest.backends.monitor import Monitor
from caesar_rest.backends.process import hostname
from caesar_rest.db.engine import make_engine
from caesar_rest.db.locks import CLAIM_KEY, pass_key, pass_lock, user_key, user_lock
from caesar_rest.db.models import JobEvent, JobRecord
from caesar_rest.timeutil import utcnow

from tests.backends.kube_fake import FakeKube
from tests.support.paths import SUPPORT
from tests.support.server import make_settings

API = "/caesar/api/v1.0"


def test_pass_lock_admits_one_holder(db_url: str) -> None:
    e1, e2 = make_engine(db_url), make_engine(db_url)
    with pass_lock(e1, "slurm") as first:
        assert first
        with pass_lock(e2, "slurm") as second:
            assert not second
        with pass_lock(e2, "kubernetes") as other:
            assert other  # one lock per backend
    acquired, released = threading.Event(), threading.Event()
    held: list[bool] = []

    def hold() -> None:
        with pass_lock(e1, "slurm") as got:
            held.append(got)
            acquired.set()
            released.wait(30)
            time.sleep(0.3)

    t = threading.Thread(target=hold)
    t.start()
    assert acquired.wait(30) and held == [True]
    released.set()
    with pass_lock(e2, "slurm", wait=30) as waited:
        assert waited  # a --once pass waits for the busy one
    t.join()
    e1.dispose()
    e2.dispose()


def test_user_lock_holds_one_user_until_commit(pg_url: str) -> None:
    """The quota lock (PostgreSQL advisory, per user) is held to the end of the transaction,
    and its keys never meet the pass or claim keys."""
    assert user_key("alice") != user_key("bob")
    assert min(user_key("alice"), user_key("")) > max(CLAIM_KEY, pass_key("slurm"), 2**32 - 1)
    e1, e2 = make_engine(pg_url), make_engine(pg_url)
    try_lock = text("SELECT pg_try_advisory_xact_lock(:k)")
    with e1.connect() as c1, e2.connect() as c2:
        user_lock(c1, "alice")
        assert not c2.execute(try_lock, {"k": user_key("alice")}).scalar()
        assert c2.execute(try_lock, {"k": user_key("bob")}).scalar()
        c2.rollback()
        c1.commit()
        assert c2.execute(try_lock, {"k": user_key("alice")}).scalar()
        c2.rollback()
    e1.dispose()
    e2.dispose()


@pytest.fixture
def kube_app(tmp_path: Path) -> Iterator[tuple[TestClient, FakeKube, dict[str, str]]]:
    fake = FakeKube().start()
    kw = {
        "job_scheduler": "kubernetes",
        "kube_config": fake.kubeconfig(tmp_path / "kubeconfig"),
        "kube_image": "caesar-rest-job:test",
        "kube_pvc": "storage",
        "backend_poll_interval": 0,
    }
    settings = make_settings(tmp_path, **kw)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
        "CAESAR_REST_DATADIR": str(tmp_path / "data"),
        "CAESAR_REST_JOBDIR": str(tmp_path / "jobs"),
        "CAESAR_REST_EXTRA_APPS": '["caesar_test_apps:SleepApp"]',
        **{f"CAESAR_REST_{k.upper()}": str(v) for k, v in kw.items()},
    }
    with TestClient(create_app(settings)) as c:
        yield c, fake, env
    fake.stop()


def test_several_monitors_settle_each_job_once(
    kube_app: tuple[TestClient, FakeKube, dict[str, str]], s17: Path, tmp_path: Path
) -> None:
    client, fake, env = kube_app
    with open(s17, "rb") as fh:
        fid = client.post(f"{API}/upload", files={"file": (s17.name, fh)}).json()["uuid"]
    ids = []
    for _ in range(6):
        r = client.post(f"{API}/job", json={"app": "sleep", "data_inputs": fid})
        ids.append(r.json()["job_id"])
    for job_id in ids:
        (jdir,) = (tmp_path / "jobs").glob(f"*/job_{job_id}")
        (jdir / "result.txt").write_text("ok\n")
        (jdir / "exit.json").write_text(json.dumps({"exit_code": 0, "signal": None, "elapsed": 1}))
        fake.set_status(f"caesar-{job_id}", {"succeeded": 1, "conditions": [
            {"type": "Complete", "status": "True", "reason": "CompletionsReached"}]})  # fmt: skip
    cmd = [sys.executable, "-m", "caesar_rest.cli", "monitor"]
    looping = subprocess.Popen([*cmd, "--period", "0.3"], env=env, stderr=subprocess.PIPE)
    once = [subprocess.Popen([*cmd, "--once"], env=env, stderr=subprocess.PIPE)]
    for p in once:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    time.sleep(1.0)
    looping.send_signal(signal.SIGTERM)
    _, err = looping.communicate(timeout=60)
    assert looping.returncode == 0, err.decode()[-2000:]
    engine = client.app.state.ctx.engine  # type: ignore[attr-defined]
    with engine.connect() as conn:
        phases = dict(conn.execute(select(JobRecord.id, JobRecord.phase)).all())
        ends = (
            conn.execute(select(JobEvent.job_id).where(JobEvent.to_phase == "COMPLETED"))
            .scalars()
            .all()
        )
    assert all(phases[i] == "COMPLETED" for i in ids), phases
    assert sorted(ends) == sorted(ids)  # each job settled exactly once


def test_monitor_settles_local_jobs_whose_process_vanished(tmp_path: Path) -> None:
    """Local jobs of this machine left EXECUTING by a dead service (and process)."""
    settings = make_settings(tmp_path, monitor_lost_after=60)
    monitor = Monitor.from_settings(settings)
    from caesar_rest.db.migrate import upgrade

    upgrade(monitor.engine)
    old = utcnow() - timedelta(seconds=120)
    dead = subprocess.Popen(["true"])
    dead.wait()
    with monitor.service.sessions.begin() as s:
        for jid, fresh in (("a" * 32, False), ("b" * 32, False), ("c" * 32, True)):
            (tmp_path / "jobs" / "u" / f"job_{jid}").mkdir(parents=True)
            s.add(
                JobRecord(
                    id=jid, owner="u", app="sleep", backend="local", phase="EXECUTING",
                    time_limit=60, cores=1, reldir=f"u/job_{jid}", pid=dead.pid, host=hostname(),
                    created_at=old, updated_at=utcnow() if fresh else old, started_at=old,
                )
            )  # fmt: skip
    (tmp_path / "jobs" / "u" / f"job_{'b' * 32}" / "exit.json").write_text(
        json.dumps({"exit_code": 2, "signal": None, "elapsed": 3.0})
    )
    monitor.run_once()
    with monitor.service.sessions() as s:
        rows = {j.id[0]: j for j in s.scalars(select(JobRecord))}
    assert (rows["a"].phase, rows["a"].reason) == ("ERROR", "lost")
    assert (rows["b"].phase, rows["b"].exit_code) == ("ERROR", 2)
    assert rows["c"].phase == "EXECUTING"  # its service may still be settling it
    monitor.close()


def test_legacy_backend_options() -> None:
    ns = argparse.Namespace(
        job_monitoring_period=5.0,
        broker_proto="amqp",
        broker_host="mq",
        broker_port=None,
        broker_user="u",
        broker_pass="p@ss",
        result_backend_proto="redis",
        result_backend_host="cache",
        result_backend_port="6380",
        result_backend_user=None,
        result_backend_pass="secret",
        result_backend_dbname="2",
        slurm_queue="gpu",
        slurm_host="head",
        slurm_port="6821",
        slurm_keyfile="/etc/slurm/jwt_hs256.key",
        slurm_user="caesar",
        slurm_jobdir="/mnt/storage/jobs",
        slurm_datadir="/mnt/storage/data",
        slurm_max_cores_per_job="8",
        kube_incluster=True,
        kube_config=None,
    )
    env = legacy_backend_env(ns, "backend_poll_interval")
    assert env["CAESAR_REST_BROKER_URL"] == "amqp://u:p%40ss@mq:5672//"
    assert env["CAESAR_REST_RESULT_BACKEND"] == "redis://:secret@cache:6380/2"
    assert env["CAESAR_REST_BACKEND_POLL_INTERVAL"] == "5.0"
    assert env["CAESAR_REST_SLURM_PARTITION"] == "gpu"
    assert env["CAESAR_REST_SLURM_MAX_CORES"] == "8"
    assert env["CAESAR_REST_SLURM_HOST"] == "head" and env["CAESAR_REST_SLURM_PORT"] == "6821"
    assert env["CAESAR_REST_KUBE_INCLUSTER"] == "true"
    assert "CAESAR_REST_KUBE_CONFIG" not in env


def test_cli_has_worker_and_monitor() -> None:
    for cmd, names in (
        ("serve", ["--broker_host", "--slurm_keyfile", "--slurm_queue", "--kube_incluster"]),
        ("worker", ["--concurrency", "--queue", "--broker_host"]),
        ("monitor", ["--period", "--lost-after", "--once", "--job_monitoring_period"]),
    ):
        r = subprocess.run(
            [sys.executable, "-m", "caesar_rest.cli", cmd, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        for name in names:
            assert name in r.stdout, (cmd, name)
