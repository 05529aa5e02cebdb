"""The accounter (``caesar-rest accounter``): periodic per-user usage aggregates.

Each pass computes, for every user and for the whole service (``owner='*'``), the numbers of
:func:`caesar_rest.auth.accounting.report` from a few grouped queries (not one query set per
user) and replaces the rows of ``usage_snapshots`` in one transaction. Readers then take one row
by primary key, whatever the number of users. This is the home of the predecessor's
``run_accounter.py`` loop, which stored the same counters per user and in ``appstats``.

:func:`user_usage` and :func:`service_usage` are what ``/accounting`` and ``/appstats`` answer:
the stored aggregates while the last pass is recent, else the numbers computed on request.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from caesar_rest.auth.accounting import add_jobs, blank_usage, per_user, report
from caesar_rest.db.engine import write_first
from caesar_rest.db.locks import pass_lock
from caesar_rest.db.models import FileRecord, JobRecord, JobResult, UsageSnapshot
from caesar_rest.timeutil import iso, seconds_ago

#: The owner of the service-wide snapshot (no user id is ``*``: ids are sanitised names).
SERVICE = "*"
#: Where an answer of :func:`user_usage` / :func:`service_usage` comes from.
SNAPSHOT, LIVE = "snapshot", "live"
#: The fields of each user's entry in ``/appstats``'s ``users`` (as :func:`per_user` gives).
_PER_USER = ("nfiles", "datasize", "njobs", "job_runtime", "job_cputime")


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


def _fresh_service(s: Session, max_age: float) -> UsageSnapshot | None:
    """The service snapshot when it is at most ``max_age`` seconds old (0: never)."""
    if max_age <= 0:
        return None
    row = s.get(UsageSnapshot, SERVICE)
    if row is None or seconds_ago(row.computed_at) > max_age:
        return None
    return row


def user_usage(
    sessions: sessionmaker[Session], owner: str, max_age: float
) -> tuple[dict[str, Any], str]:
    """The usage of ``owner`` and where it comes from (:data:`SNAPSHOT` or :data:`LIVE`).

    Parameters
    ----------
    sessions
        Database sessions.
    owner
        The user.
    max_age
        Oldest accepted snapshot in seconds (0: always computed on request).

    Returns
    -------
    tuple
        The fields of :func:`report` (with ``computed_at`` for a snapshot) and the source.
        All snapshots are written in one transaction, so while the service's is recent a user
        without a row had nothing: all counters zero.
    """
    with sessions() as s:
        service = _fresh_service(s, max_age)
        if service is not None:
            row = s.get(UsageSnapshot, owner)
            when = iso(service.computed_at)
            data = dict(row.data) if row is not None else {"timestamp": when, **blank_usage()}
            return {**data, "computed_at": when}, SNAPSHOT
    return report(sessions, owner), LIVE


def service_usage(sessions: sessionmaker[Session], max_age: float) -> tuple[dict[str, Any], str]:
    """The service's totals with the per-user breakdown (``users``), and their source.

    As :func:`user_usage`, for ``/appstats``: the stored rows (one per user) while the last
    pass is at most ``max_age`` seconds old, else :func:`report` and :func:`per_user`.
    """
    with sessions() as s:
        service = _fresh_service(s, max_age)
        if service is not None:
            rows = s.execute(
                select(UsageSnapshot.owner, UsageSnapshot.data)
                .where(UsageSnapshot.owner != SERVICE)
                .order_by(UsageSnapshot.owner)
            ).all()
            users = [{"user": o, **{k: d[k] for k in _PER_USER}} for o, d in rows]
            out = {**service.data, "computed_at": iso(service.computed_at), "users": users}
            return out, SNAPSHOT
    out = report(sessions, None)
    out["users"] = per_user(sessions)
    return out, LIVE
