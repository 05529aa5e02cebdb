"""Usage accounting of the caller (``/accounting``) and of the service (``/appstats``)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from caesar_rest.api.deps import Admin, Ctx, Owner
from caesar_rest.api.quota import quota_warning
from caesar_rest.auth.accounting import per_user, report

router = APIRouter(tags=["accounting"])


@router.get("/accounting", summary="The caller's usage and limits")
def accounting(ctx: Ctx, owner: Owner) -> JSONResponse:
    """Files, sizes, jobs by state, run and CPU time of the caller, with their quotas."""
    limits = ctx.users.limits(owner)
    out = report(ctx.sessions, owner)
    quota = {
        "bytes": limits.bytes,
        "active_jobs": limits.active_jobs,
        "time_limit": limits.time_limit,
        "submissions_per_minute": ctx.settings.max_submissions_per_minute,
    }
    return JSONResponse({"user": owner, **out, "quota": quota, **quota_warning(ctx, owner, limits)})


@router.get("/appstats", summary="Service-wide usage (admin)")
def appstats(ctx: Ctx, _: Admin) -> JSONResponse:
    """Totals over all users, and per user."""
    out = report(ctx.sessions, None)
    out["users"] = per_user(ctx.sessions)
    return JSONResponse(out)
