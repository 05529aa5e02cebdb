"""Usage accounting, computed on request from indexed tables (cheap)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy import func, select

from caesar_rest.api.context import ServiceContext
from caesar_rest.api.deps import current_user, get_ctx
from caesar_rest.db.models import FileRecord, JobRecord, JobResult
from caesar_rest.jobs.states import legacy_state

router = APIRouter(tags=["accounting"])

_COUNTERS = {
    "SUCCESS": "njobs_completed",
    "FAILURE": "njobs_failed",
    "ABORTED": "njobs_aborted",
    "CANCELED": "njobs_aborted",
    "RUNNING": "njobs_running",
    "PENDING": "njobs_pending",
}


def usage(ctx: ServiceContext, owner: str | None) -> dict[str, Any]:
    """Counts and sizes for one owner, or for everyone when ``owner`` is None."""
    with ctx.sessions() as s:
        fq = select(func.count(FileRecord.id), func.coalesce(func.sum(FileRecord.size), 0))
        jq = select(
            JobRecord.phase,
            JobRecord.reason,
            func.count(JobRecord.id),
            func.coalesce(func.sum(JobRecord.elapsed), 0.0),
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
            "nfiles": int(nfiles),
            "datasize": round(int(datasize) / 1024.0, 3),
            "jobsize": round(jobsize / 1024.0, 3),
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
        }
        for phase, reason, n, runtime in s.execute(jq).all():
            state = legacy_state(phase, reason)
            key = _COUNTERS.get(
                state, "njobs_timedout" if state == "TIMED-OUT" else "njobs_unknown"
            )
            out[key] += int(n)
            out["njobs"] += int(n)
            out["job_runtime"] += float(runtime or 0.0)
            if state == "SUCCESS":
                out["job_completed_runtime"] += float(runtime or 0.0)
        if owner is None:
            out["nusers"] = int(s.execute(uq).scalar_one())
            out["totsize"] = round(out["datasize"] + out["jobsize"], 3)
            done = out["njobs_completed"]
            out["avg_completed_job_runtime"] = out["job_completed_runtime"] / done if done else 0.0
    return out


@router.get("/accounting", summary="The caller's usage")
def accounting(
    ctx: ServiceContext = Depends(get_ctx), owner: str = Depends(current_user)
) -> JSONResponse:
    """Files, sizes, jobs by state and run time of the caller."""
    return JSONResponse({"user": owner, **usage(ctx, owner)})


@router.get("/appstats", summary="Service-wide usage")
def appstats(ctx: ServiceContext = Depends(get_ctx)) -> JSONResponse:
    """Totals over all users."""
    return JSONResponse(usage(ctx, None))
