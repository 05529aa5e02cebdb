"""``caesar-rest accounter``: periodic per-user usage aggregates, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from caesar_rest.auth.accounter import SERVICE, latest
from caesar_rest.auth.accounting import report
from caesar_rest.db.engine import make_engine, make_sessionmaker
from caesar_rest.db.migrate import revisions, upgrade
from caesar_rest.db.models import FileRecord, JobRecord

from tests.support.paths import child_pythonpath
from tests.support.usage_rows import add_file, add_job, fill

CLI = [sys.executable, "-m", "caesar_rest.cli"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAESAR_REST_")}
    env["PYTHONPATH"] = child_pythonpath(os.environ.get("PYTHONPATH"))
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env
    )


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


def without_times(d: dict[str, Any] | None) -> dict[str, Any]:
    assert d is not None
    return {k: v for k, v in d.items() if k not in ("timestamp", "computed_at")}


def test_the_snapshot_migration_precedes_head() -> None:
    # 0003 made the accounting snapshots; 0004 (job-list keyset index) and 0005 (job-list
    # row revisions) and 0006 (job-list notifications) came after it.
    assert revisions() == ["0001", "0002", "0003", "0004", "0005", "0006"]


def test_accounter_once_stores_what_report_computes(
    tmp_path: Path, db_url: str, sessions: sessionmaker[Session]
) -> None:
    fill(sessions)
    assert latest(sessions, "alice") is None  # nothing before the first pass
    r = run("accounter", "--once", "--db-url", db_url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for owner in ("alice", "bob", "carol"):
        assert without_times(latest(sessions, owner)) == without_times(report(sessions, owner))
    service = latest(sessions, SERVICE)
    assert without_times(service) == without_times(report(sessions, None))
    assert service is not None and service["nusers"] == 2  # job owners, as report counts them
    alice = latest(sessions, "alice")
    assert alice is not None
    assert (alice["nfiles"], alice["datasize"], alice["jobsize"]) == (2, 3.0, 4.0)
    assert (alice["njobs_completed"], alice["njobs_timedout"], alice["njobs_running"]) == (1, 1, 1)
    assert alice["job_runtime"] == 70.0 and alice["job_completed_runtime"] == 10.0
    assert alice["computed_at"].endswith("+00:00")

    # The next pass replaces the rows: a user with nothing left has no snapshot.
    with sessions() as s, s.begin():
        s.execute(delete(FileRecord).where(FileRecord.owner == "bob"))
        add_job(s, "bob", 1, "COMPLETED", "success", elapsed=2.0)
    r = run("accounter", "-job_monitoring_period", "5", "--once", "--db-url", db_url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    bob = latest(sessions, "bob")
    assert bob is not None and bob["nfiles"] == 0 and bob["njobs_completed"] == 1
    with sessions() as s, s.begin():
        s.execute(delete(JobRecord).where(JobRecord.owner == "carol"))
    assert run("accounter", "--once", "--db-url", db_url, cwd=tmp_path).returncode == 0
    assert latest(sessions, "carol") is None


def test_accounter_loops_until_sigterm(
    tmp_path: Path, db_url: str, sessions: sessionmaker[Session]
) -> None:
    fill(sessions)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAESAR_REST_")}
    env["PYTHONPATH"] = child_pythonpath(os.environ.get("PYTHONPATH"))
    cmd = [*CLI, "accounter", "--db-url", db_url, "--period", "0.3"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        first = None
        deadline = time.time() + 60
        while first is None and time.time() < deadline:
            first = latest(sessions, "alice")
            time.sleep(0.1)
        assert first is not None, "no snapshot written"
        with sessions() as s, s.begin():
            add_file(s, "alice", 3, 1024)
        deadline = time.time() + 30
        while time.time() < deadline:
            now = latest(sessions, "alice")
            if now is not None and now["nfiles"] == 3:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the next pass did not update the snapshot")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert '"accounter_pass"' in err


def test_accounter_without_schema_says_so(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    r = run("accounter", "--once", "--db-url", url, cwd=tmp_path)
    assert r.returncode == 2 and "caesar-rest migrate" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
