"""Administration: users, their usage and their limits (admin role only)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from caesar_rest.api.context import ServiceContext
from caesar_rest.api.deps import get_ctx, require_admin
from caesar_rest.auth.oidc import Identity
from caesar_rest.auth.quotas import usage
from caesar_rest.timeutil import iso

router = APIRouter(prefix="/admin", tags=["admin"])


class QuotaUpdate(BaseModel):
    """Per-user limits; null restores the default."""

    bytes: int | None = Field(None, ge=0, description="Stored bytes (0: no limit)")
    active_jobs: int | None = Field(None, ge=0, description="Unfinished jobs (0: no limit)")
    time_limit: int | None = Field(None, ge=1, description="Largest job time limit, seconds")


@router.get("/users", summary="Users with their usage and limits")
def list_users(
    ctx: ServiceContext = Depends(get_ctx), _: Identity = Depends(require_admin)
) -> JSONResponse:
    """Every user the service has seen."""
    out = []
    with ctx.sessions() as s:
        users = ctx.users.list()
        for u in users:
            use = usage(s, u.id)
            lim = ctx.users.limits(u.id)
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
    return JSONResponse(out)


@router.put("/users/{user_id}/quota", summary="Set a user's limits")
def set_quota(
    user_id: str,
    body: QuotaUpdate,
    ctx: ServiceContext = Depends(get_ctx),
    _: Identity = Depends(require_admin),
) -> JSONResponse:
    """Store per-user overrides of the default limits."""
    ctx.users.set_limits(user_id, body.bytes, body.active_jobs, body.time_limit)
    lim = ctx.users.limits(user_id)
    return JSONResponse(
        {
            "status": "quota updated",
            "user": user_id,
            "quota": {
                "bytes": lim.bytes,
                "active_jobs": lim.active_jobs,
                "time_limit": lim.time_limit,
            },
        }
    )
