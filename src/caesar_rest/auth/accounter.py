"""The accounter (``caesar-rest accounter``): periodic per-user usage aggregates.

Each pass computes, for every user and for the whole service (``owner='*'``), the numbers of
:func:`caesar_rest.auth.accounting.report` from a few grouped queries (not one query set per
user) and replaces the rows of ``usage_snapshots`` in one transaction. Readers then take one row
by primary key, whatever the number of users. This is the home of the predecessor's
``run_accounter.py`` loop, which stored the same counters per user and in ``appstats``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from caesar_rest.auth.accounting import add_jobs, blank_usage, report
from caesar_rest.db.engine import write_first
from caesar_rest.db.locks import pass_lock
from caesar_rest.db.models import FileRecord, JobRecord, JobResult, UsageSnapshot
from caesar_rest.timeutil import iso

#: The owner of the service-wide snapshot (no user id is ``*``: ids are sanitised names).
SERVICE = "*"


def per_owner(session: Session) -> dict[str, dict[str, Any]]:
    """Every owner's usage, as :func:`report` gives it for one owner (without ``timestamp``)."""
    out: dict[str, dict[str, Any]] = {}
    files = select(
        FileRecord.owner, func.count(FileRecord.id), func.coalesce(func.sum(FileRecord.size), 0)
    ).group_by(FileRecord.owner)
    for owner, n, size in session.execute(files).all():
        row = out.setdefault(owner, blank_usage())
        row["nfiles"], row["datasize"] = int(n), round(int(size) / 1024.0, 3)
    results = (
        select(JobRecord.owner, func.coalesce(func.sum(JobResult.size), 0))
        .join(JobRecord, JobRecord.id == JobResult.job_id)
        .group_by(JobRecord.owner)
    )
    for owner, size in session.execute(results).all():
        out.setdefault(owner, blank_usage())["jobsize"] = round(int(size) / 1024.0, 3)
    jobs = select(
        JobRecord.owner,
        JobRecord.phase,
        JobRecord.reason,
        func.count(JobRecord.id),
        func.coalesce(func.sum(JobRecord.elapsed), 0.0),
        func.coalesce(func.sum(JobRecord.cpu_time), 0.0),
    ).group_by(JobRecord.owner, JobRecord.phase, JobRecord.reason)
    for owner, phase, reason, n, runtime, cputime in session.execute(jobs).all():
        add_jobs(out.setdefault(owner, blank_usage()), phase, reason, n, runtime, cputime)
    return out


def run_pass(engine: Engine, sessions: sessionmaker[Session]) -> int | None:
    """Compute and store every snapshot; the number of users, or None when another accounter
    holds the pass (several may run: one writes at a time)."""
    with pass_lock(engine, "accounter") as got:
        if not got:
            return None
        with sessions() as s:
            users = per_owner(s)
        service = report(sessions, None)
        now = datetime.now(UTC)
        with sessions() as s, s.begin():
            write_first(s)
            s.execute(delete(UsageSnapshot))
            s.add(UsageSnapshot(owner=SERVICE, computed_at=now, data=service))
            for owner, data in users.items():
                stamped = {"timestamp": now.isoformat(), **data}
                s.add(UsageSnapshot(owner=owner, computed_at=now, data=stamped))
        return len(users)


def latest(sessions: sessionmaker[Session], owner: str = SERVICE) -> dict[str, Any] | None:
    """The stored snapshot of ``owner`` (``*``: the service), with ``computed_at``; None when
    the accounter has not yet written one."""
    with sessions() as s:
        row = s.get(UsageSnapshot, owner)
        if row is None:
            return None
        return {**row.data, "computed_at": iso(row.computed_at)}
