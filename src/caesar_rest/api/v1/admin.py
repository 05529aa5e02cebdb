"""Administration: users, their usage and their limits (admin role only)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from caesar_rest.api.crossorigin import require_json
from caesar_rest.api.deps import Admin, Ctx
from caesar_rest.auth.accounting import users_overview

router = APIRouter(prefix="/admin", tags=["admin"])


class QuotaUpdate(BaseModel):
    """Per-user limits; null restores the default."""

    bytes: int | None = Field(None, ge=0, description="Stored bytes (0: no limit)")
    active_jobs: int | None = Field(None, ge=0, description="Unfinished jobs (0: no limit)")
    time_limit: int | None = Field(None, ge=1, description="Largest job time limit, seconds")


@router.get("/users", summary="Users with their usage and limits")
def list_users(ctx: Ctx, _: Admin) -> JSONResponse:
    """Every user the service has seen."""
    return JSONResponse(users_overview(ctx.users))


@router.put(
    "/users/{user_id}/quota",
    summary="Set a user's limits",
    dependencies=[Depends(require_json)],  # JSON only (415), as every JSON route
)
def set_quota(user_id: str, body: QuotaUpdate, ctx: Ctx, _: Admin) -> JSONResponse:
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
