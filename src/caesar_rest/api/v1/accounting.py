"""Usage accounting of the caller (``/accounting``) and of the service (``/appstats``)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from caesar_rest.api.deps import Admin, Ctx, Owner
from caesar_rest.api.quota import quota_warning
from caesar_rest.auth.accounter import service_usage, user_usage

router = APIRouter(tags=["accounting"])

#: The header naming where the numbers come from: ``snapshot`` (caesar-rest accounter) or
#: ``live`` (computed on request); the body's ``source`` says the same.
SOURCE_HEADER = "X-Accounting-Source"


@router.get("/accounting", summary="The caller's usage and limits")
def accounting(ctx: Ctx, owner: Owner) -> JSONResponse:
    """Files, sizes, jobs by state, run and CPU time of the caller, with their quotas.

    From the accounter's last pass while it is recent (``accounting_snapshot_max_age``), else
    computed on request; the quotas and their warning are always the current ones.
    """
    limits = ctx.users.limits(owner)
    out, source = user_usage(ctx.sessions, owner, ctx.settings.accounting_snapshot_max_age)
    quota = {
        "bytes": limits.bytes,
        "active_jobs": limits.active_jobs,
        "time_limit": limits.time_limit,
        "submissions_per_minute": ctx.settings.max_submissions_per_minute,
    }
    body = {"user": owner, **out, "source": source, "quota": quota}
    return JSONResponse(
        {**body, **quota_warning(ctx, owner, limits)}, headers={SOURCE_HEADER: source}
    )


@router.get("/appstats", summary="Service-wide usage (admin)")
def appstats(ctx: Ctx, _: Admin) -> JSONResponse:
    """Totals over all users, and per user (from the accounter's last pass while it is recent)."""
    out, source = service_usage(ctx.sessions, ctx.settings.accounting_snapshot_max_age)
    return JSONResponse({**out, "source": source}, headers={SOURCE_HEADER: source})
