"""Job rows written straight into the database, and the v1.0 job list as it was built before
the keyset list (``GET /jobs`` until 2026-12-02), kept as the oracle of its replacement."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert, select

from caesar_rest.api.app import create_app
from caesar_rest.db.engine import make_engine
from caesar_rest.db.migrate import upgrade
from caesar_rest.db.models import JobRecord
from caesar_rest.jobs.states import legacy_state
from caesar_rest.timeutil import iso

from tests.support.server import make_settings

#: (phase, reason, message) of the rows, in turn: every legacy state appears.
STATES = (
    ("COMPLETED", "success", "Job completed with success"),
    ("ERROR", "timeout", "Job killed after its time limit"),
    ("ERROR", "failed", "Job failed: exit code 3 — «ünïcode»"),
    ("ABORTED", "canceled", "Job canceled by user"),
    ("ABORTED", "lost", 'quotes " and \\ backslash'),
    ("EXECUTING", None, "Job running"),
    ("QUEUED", None, ""),
)
BASE = datetime(2025, 1, 1, tzinfo=UTC)


def job_row(owner: str, i: int, created: datetime | None = None) -> dict[str, Any]:
    """A job of ``owner``, the ``i``-th of its kind (varied states, pids, tags and times)."""
    phase, reason, message = STATES[i % len(STATES)]
    created = created or BASE + timedelta(seconds=i, microseconds=(i * 7919) % 1000 * (i % 2))
    inputs: Any = {"thresh": 5.0 + i / 3, "minarea": i, "name": f"é{i}"} if i % 5 else None
    ended = created + timedelta(seconds=30)
    return {
        "id": uuid.uuid4().hex,
        "owner": owner,
        "app": "sep",
        "options": {},
        "job_inputs": inputs,
        "input_file_id": uuid.uuid4().hex if i % 4 else None,
        "tag": [i, {"k": "v"}] if i % 3 == 0 else ("t" if i % 3 == 1 else None),
        "backend": "local" if i % 2 else "slurm",
        "backend_job_id": None if i % 2 else f"slurm-{i}",
        "phase": phase,
        "reason": reason,
        "message": message,
        "exit_code": None if i % 6 == 5 else i % 3,
        "run_requested": True,
        "time_limit": 3600,
        "cores": 1,
        "reldir": f"{owner}/job_{i}",
        "pid": 1000 + i if i % 2 else None,
        "created_at": created,
        "ended_at": ended,
        "elapsed": None if i % 7 == 6 else (0.1 + i / 7 if i % 2 else i),
        "updated_at": ended,
    }


def insert_jobs(engine: Engine, rows: Sequence[dict[str, Any]]) -> None:
    """Insert job rows (schema already made)."""
    with engine.begin() as conn:
        conn.execute(insert(JobRecord), list(rows))


@contextmanager
def jobs_engine(url: str, rows: Sequence[dict[str, Any]]) -> Iterator[Engine]:
    """An engine of the database at ``url``, migrated to the head, with ``rows`` inserted
    (disposed of at the end)."""
    engine = make_engine(url)
    try:
        upgrade(engine)
        insert_jobs(engine, rows)
        yield engine
    finally:
        engine.dispose()


def _legacy_pid(pid: int | None, backend_job_id: str | None) -> str:
    return str(pid) if pid is not None else (backend_job_id or "")


def old_job_list(engine: Engine, owner: str) -> str:
    """The whole list as ``GET /jobs`` built it before: rows, dictionaries, ``json.dumps``."""
    cols = (
        JobRecord.id,
        JobRecord.created_at,
        JobRecord.app,
        JobRecord.job_inputs,
        JobRecord.input_file_id,
        JobRecord.tag,
        JobRecord.backend,
        JobRecord.phase,
        JobRecord.reason,
        JobRecord.message,
        JobRecord.pid,
        JobRecord.backend_job_id,
        JobRecord.elapsed,
        JobRecord.exit_code,
    )
    stmt = (
        select(*cols).where(JobRecord.owner == owner).order_by(JobRecord.created_at, JobRecord.id)
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    docs = [
        {
            "job_id": j.id,
            "submit_date": iso(j.created_at),
            "app": j.app,
            "job_inputs": j.job_inputs,
            "data_inputs": j.input_file_id,
            "metadata": "",
            "tag": j.tag,
            "scheduler": j.backend,
            "state": legacy_state(j.phase, j.reason),
            "status": j.message,
            "pid": _legacy_pid(j.pid, j.backend_job_id),
            "elapsed_time": 0 if j.elapsed is None else j.elapsed,
            "exit_code": -1 if j.exit_code is None else j.exit_code,
        }
        for j in rows
    ]
    return json.dumps(docs, separators=(",", ":"))


@contextmanager
def listing_client(
    tmp_path: Path, db_url: str, jobs: dict[str, int], local_user: str
) -> Iterator[TestClient]:
    """The app (backends not started) as ``local_user``, with ``jobs[owner]`` rows of each
    owner written first (:func:`job_row`, in the order of ``jobs``)."""
    settings = make_settings(tmp_path, db_url=db_url, local_user=local_user)
    with TestClient(create_app(settings, start_backends=False)) as c:
        engine = c.app.state.ctx.engine  # type: ignore[attr-defined]
        for owner, n in jobs.items():
            insert_jobs(engine, [job_row(owner, i) for i in range(n)])
        yield c
