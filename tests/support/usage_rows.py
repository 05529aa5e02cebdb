"""Files, jobs and results of a few users, written straight into the database (accounting)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from caesar_rest.db.models import FileRecord, JobRecord, JobResult


def add_file(s: Session, owner: str, n: int, size: int) -> None:
    now = datetime.now(UTC)
    s.add(
        FileRecord(
            id=f"{owner}{n}".ljust(8, "x"),
            owner=owner,
            filename_orig="a.fits",
            fileext="fits",
            kind="fits",
            size=size,
            sha256="0" * 64,
            relpath=f"{owner}/{n}.fits",
            created_at=now,
        )
    )


def add_job(s: Session, owner: str, n: int, phase: str, reason: str | None, **kw: Any) -> None:
    now = datetime.now(UTC)
    job_id = f"{owner}-job-{n}"
    s.add(
        JobRecord(
            id=job_id,
            owner=owner,
            app="sep",
            backend="local",
            phase=phase,
            reason=reason,
            time_limit=60,
            reldir=f"{owner}/{job_id}",
            created_at=now,
            updated_at=now,
            **kw,
        )
    )
    s.flush()
    if phase == "COMPLETED":
        s.add(
            JobResult(job_id=job_id, name="catalog", filename="c.csv", mime="text/csv", size=4096)
        )


def fill(sessions: sessionmaker[Session]) -> None:
    with sessions() as s, s.begin():
        add_file(s, "alice", 1, 2048)
        add_file(s, "alice", 2, 1024)
        add_file(s, "bob", 1, 512)
        add_job(s, "alice", 1, "COMPLETED", "success", elapsed=10.0, cpu_time=8.0)
        add_job(s, "alice", 2, "ERROR", "timeout", elapsed=60.0, cpu_time=59.0)
        add_job(s, "alice", 3, "EXECUTING", None)
        add_job(s, "carol", 1, "ABORTED", "canceled", elapsed=1.5)
        add_job(s, "carol", 2, "QUEUED", None)
