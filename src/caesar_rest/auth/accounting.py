"""Usage accounting, computed on request from indexed tables (cheap).

The numbers of ``/accounting``, ``/appstats`` and ``/admin/users``: the routes render them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from caesar_rest.auth.quotas import usage
from caesar_rest.auth.users import UserStore
from caesar_rest.db.models import FileRecord, JobRecord, JobResult
from caesar_rest.jobs.states import legacy_state
from caesar_rest.timeutil import iso

_COUNTERS = {
    "SUCCESS": "njobs_completed",
    "FAILURE": "njobs_failed",
    "ABORTED": "njobs_aborted",
    "CANCELED": "njobs_aborted",
    "RUNNING": "njobs_running",
    "PENDING": "njobs_pending",
    "TIMED-OUT": "njobs_timedout",
}


def blank_usage() -> dict[str, Any]:
    """The counters of one usage report, all zero (sizes in KiB)."""
    return {
        "nfiles": 0,
        "datasize": 0.0,
        "jobsize": 0.0,
        "size_unit": "KiB",
        "njobs": 0,
        "njobs_completed": 0,
        "njobs_failed": 0,
        "njobs_aborted": 0,
        "njobs_running": 0,
        "njobs_pending": 0,
        "njobs_timedout": 0,
        "njobs_unknown": 0,
        "job_runtime": 0.0,
        "job_completed_runtime": 0.0,
        "job_cputime": 0.0,
    }


def add_jobs(
    out: dict[str, Any], phase: str, reason: str | None, n: int, runtime: Any, cputime: Any
) -> None:
    """Add one ``(phase, reason)`` group of jobs to the counters of a usage report."""
    state = legacy_state(phase, reason)
    out[_COUNTERS.get(state, "njobs_unknown")] += int(n)
    out["njobs"] += int(n)
    out["job_runtime"] += float(runtime or 0.0)
    out["job_cputime"] += float(cputime or 0.0)
    if state == "SUCCESS":
        out["job_completed_runtime"] += float(runtime or 0.0)


def report(sessions: sessionmaker[Session], owner: str | None) -> dict[str, Any]:
    """Counts and sizes for one owner, or for everyone when ``owner`` is None.

    Parameters
    ----------
    sessions
        Database sessions.
    owner
        The user, or None for the whole service (then with ``nusers``, ``totsize`` and
        ``avg_completed_job_runtime``).
    """
    with sessions() as s:
        fq = select(func.count(FileRecord.id), func.coalesce(func.sum(FileRecord.size), 0))
        jq = select(
            JobRecord.phase,
            JobRecord.reason,
            func.count(JobRecord.id),
            func.coalesce(func.sum(JobRecord.elapsed), 0.0),
            func.coalesce(func.sum(JobRecord.cpu_time), 0.0),
        ).group_by(JobRecord.phase, JobRecord.reason)
        rq = select(func.coalesce(func.sum(JobResult.size), 0)).join(
            JobRecord, JobRecord.id == JobResult.job_id
        )
        uq = select(func.count(func.distinct(JobRecord.owner)))
        if owner is not None:
            fq = fq.where(FileRecord.owner == owner)
            jq = jq.where(JobRecord.owner == owner)
            rq = rq.where(JobRecord.owner == owner)
        nfiles, datasize = s.execute(fq).one()
        jobsize = int(s.execute(rq).scalar_one())
        out: dict[str, Any] = {
            "timestamp": datetime.now(UTC).isoformat(),
            **blank_usage(),
            "nfiles": int(nfiles),
            "datasize": round(int(datasize) / 1024.0, 3),
            "jobsize": round(jobsize / 1024.0, 3),
        }
        for phase, reason, n, runtime, cputime in s.execute(jq).all():
            add_jobs(out, phase, reason, n, runtime, cputime)
        if owner is None:
            out["nusers"] = int(s.execute(uq).scalar_one())
            out["totsize"] = round(out["datasize"] + out["jobsize"], 3)
            done = out["njobs_completed"]
            out["avg_completed_job_runtime"] = out["job_completed_runtime"] / done if done else 0.0
    return out


def per_user(sessions: sessionmaker[Session]) -> list[dict[str, Any]]:
    """Files, bytes, jobs and run time per user, from two grouped queries."""
    with sessions() as s:
        files = {
            owner: (int(n), int(b))
            for owner, n, b in s.execute(
                select(
                    FileRecord.owner,
                    func.count(FileRecord.id),
                    func.coalesce(func.sum(FileRecord.size), 0),
                ).group_by(FileRecord.owner)
            ).all()
        }
        jobs = {
            owner: (int(n), float(t or 0.0), float(c or 0.0))
            for owner, n, t, c in s.execute(
                select(
                    JobRecord.owner,
                    func.count(JobRecord.id),
                    func.sum(JobRecord.elapsed),
                    func.sum(JobRecord.cpu_time),
                ).group_by(JobRecord.owner)
            ).all()
        }
    owners = sorted(set(files) | set(jobs))
    return [
        {
            "user": o,
            "nfiles": files.get(o, (0, 0))[0],
            "datasize": round(files.get(o, (0, 0))[1] / 1024.0, 3),
            "njobs": jobs.get(o, (0, 0.0, 0.0))[0],
            "job_runtime": jobs.get(o, (0, 0.0, 0.0))[1],
            "job_cputime": jobs.get(o, (0, 0.0, 0.0))[2],
        }
        for o in owners
    ]


def users_overview(users: UserStore) -> list[dict[str, Any]]:
    """Every user the service has seen, with usage, effective limits and overrides."""
    out = []
    with users.sessions() as s:
        for u in users.list():
            use = usage(s, u.id)
            lim = users.limits(u.id)
            out.append(
                {
                    "user": u.id,
                    "display_name": u.display_name,
                    "roles": u.roles,
                    "created": iso(u.created_at),
                    "last_seen": iso(u.last_seen_at),
                    "bytes": use.bytes,
                    "active_jobs": use.active_jobs,
                    "quota": {
                        "bytes": lim.bytes,
                        "active_jobs": lim.active_jobs,
                        "time_limit": lim.time_limit,
                    },
                    "overrides": {
                        "bytes": u.quota_bytes,
                        "active_jobs": u.quota_active_jobs,
                        "time_limit": u.quota_time_limit,
                    },
                }
            )
    return out
