"""Read-only listings the APIs answer with: column selections on one connection, no ORM objects.

The job lists are the large answers (10,000 jobs in one ``GET /jobs``): they select only the
columns the documents show, on a plain connection, which is several times cheaper than loading
records. The routes render the rows; they make no query of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, Row, bindparam, case, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from caesar_rest.db.models import JobEvent, JobRecord
from caesar_rest.jobs.states import FINAL, Phase, legacy_state

#: Columns of the v1.0 status document (``api/v1/jobs._status_doc``).
STATUS_COLUMNS = (
    JobRecord.id,
    JobRecord.owner,
    JobRecord.pid,
    JobRecord.phase,
    JobRecord.reason,
    JobRecord.message,
    JobRecord.exit_code,
    JobRecord.elapsed,
    JobRecord.tag,
    JobRecord.backend,
    JobRecord.backend_job_id,
    JobRecord.created_at,
    JobRecord.started_at,
    JobRecord.ended_at,
)


#: The job and its events in one statement (one round trip on a database server), with the
#: job id bound as ``job_id``; read through ``db/fastread.py``. Built once: compiling it on
#: every request is a measurable part of the status route.
STATUS_STMT = (
    select(
        *STATUS_COLUMNS,
        JobEvent.id.label("ev_id"),
        JobEvent.at.label("ev_at"),
        JobEvent.from_phase.label("ev_from"),
        JobEvent.to_phase.label("ev_to"),
        JobEvent.reason.label("ev_reason"),
        JobEvent.message.label("ev_message"),
    )
    .select_from(JobRecord)
    .outerjoin(JobEvent, JobEvent.job_id == JobRecord.id)
    .where(JobRecord.id == bindparam("job_id"))
    .order_by(JobEvent.id)
)


def uws_jobs(
    engine: Engine,
    owner: str,
    phases: Sequence[str],
    after: datetime | None,
    last: int | None,
) -> Sequence[Row[str, str, str | None, str, datetime]]:
    """The UWS job list of ``owner``: id, phase, run id, owner and creation time.

    Parameters
    ----------
    engine
        The database.
    owner
        Whose jobs.
    phases
        Only these phases; empty: every phase but ARCHIVED.
    after
        Only jobs created after this instant. Times are shown to the millisecond: given to
        the millisecond, a job shown at that instant is not after it, even if its stored time
        has more digits.
    last
        The ``last`` most recent jobs, newest first; None: all, oldest first.
    """
    stmt = select(
        JobRecord.id, JobRecord.phase, JobRecord.run_id, JobRecord.owner, JobRecord.created_at
    ).where(JobRecord.owner == owner)
    if phases:
        stmt = stmt.where(JobRecord.phase.in_(phases))
    else:
        stmt = stmt.where(JobRecord.phase != Phase.ARCHIVED.value)
    if after is not None:
        if after.microsecond % 1000 == 0:
            stmt = stmt.where(JobRecord.created_at >= after + timedelta(milliseconds=1))
        else:
            stmt = stmt.where(JobRecord.created_at > after)
    if last is not None:
        stmt = stmt.order_by(JobRecord.created_at.desc(), JobRecord.id.desc()).limit(last)
    else:
        stmt = stmt.order_by(JobRecord.created_at, JobRecord.id)
    with engine.connect() as conn:
        return conn.execute(stmt).all()


def ping(engine: Engine) -> None:
    """One round trip to the database (raises what the driver raises when it is down)."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def phases(sessions: sessionmaker[Session], ids: Sequence[str]) -> dict[str, str]:
    """The phase of each job of ``ids`` that exists."""
    with sessions() as s:
        rows = s.execute(select(JobRecord.id, JobRecord.phase).where(JobRecord.id.in_(ids)))
        return {r.id: r.phase for r in rows}


@dataclass(frozen=True)
class JobFigures:
    """Job figures of the metrics route.

    Parameters
    ----------
    by_state
        Jobs by (legacy state, app).
    queued
        QUEUED jobs by backend.
    durations
        Per app of finished jobs: (count, sum of elapsed seconds, cumulative count of jobs at
        or under each bound of the ``bounds`` given).
    """

    by_state: dict[tuple[str, str], int]
    queued: dict[str, int]
    durations: dict[str, tuple[int, float, list[int]]]


def job_figures(sessions: sessionmaker[Session], bounds: Sequence[float]) -> JobFigures:
    """Counts by state and app, queue depth by backend and a duration histogram per app."""
    with sessions() as s:
        counts: dict[tuple[str, str], int] = {}
        for phase, reason, app, n in s.execute(
            select(
                JobRecord.phase, JobRecord.reason, JobRecord.app, func.count(JobRecord.id)
            ).group_by(JobRecord.phase, JobRecord.reason, JobRecord.app)
        ).all():
            key = (legacy_state(phase, reason), app)
            counts[key] = counts.get(key, 0) + int(n)
        queued = {
            backend: int(n)
            for backend, n in s.execute(
                select(JobRecord.backend, func.count(JobRecord.id))
                .where(JobRecord.phase == Phase.QUEUED.value)
                .group_by(JobRecord.backend)
            ).all()
        }
        cols = [func.sum(case((JobRecord.elapsed <= b, 1), else_=0)) for b in bounds]
        rows = s.execute(
            select(
                JobRecord.app,
                func.count(JobRecord.id),
                func.coalesce(func.sum(JobRecord.elapsed), 0.0),
                *cols,
            )
            .where(JobRecord.phase.in_([p.value for p in FINAL]), JobRecord.elapsed.is_not(None))
            .group_by(JobRecord.app)
        ).all()
    durations = {
        app: (int(total), float(ssum), [int(c or 0) for c in cum])
        for app, total, ssum, *cum in rows
    }
    return JobFigures(counts, queued, durations)
