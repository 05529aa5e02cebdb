"""Administration: users, their usage and their limits (admin role only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from caesar_rest.api.crossorigin import require_json
from caesar_rest.api.deps import Admin, Ctx
from caesar_rest.auth.accounting import users_overview

router = APIRouter(prefix="/admin", tags=["admin"])

#: Bounds of the quota numbers: the columns are 64-bit (bytes) and 32-bit integers; 2**53 is
#: also the largest integer every JSON reader keeps exactly.
MAX_BYTES = 2**53
MAX_INT32 = 2**31 - 1
#: A user id as the token's ``sub`` or the local user name gives it: printable, bounded.
USER_ID = Path(pattern=r"^[^\x00-\x1f\x7f]{1,255}$", description="The user id")


class QuotaUpdate(BaseModel):
    """Per-user limits; null restores the default."""

    bytes: int | None = Field(
        None, ge=0, le=MAX_BYTES, description="Stored bytes (0: no limit; at most 2**53)"
    )
    active_jobs: int | None = Field(
        None, ge=0, le=MAX_INT32, description="Unfinished jobs (0: no limit)"
    )
    time_limit: int | None = Field(
        None, ge=1, le=MAX_INT32, description="Largest job time limit, seconds"
    )


@router.get("/users", summary="Users with their usage and limits")
def list_users(ctx: Ctx, _: Admin) -> JSONResponse:
    """Every user the service has seen."""
    return JSONResponse(users_overview(ctx.users))


@router.put(
    "/users/{user_id}/quota",
    summary="Set a user's limits",
    dependencies=[Depends(require_json)],  # JSON only (415), as every JSON route
)
def set_quota(
    user_id: Annotated[str, USER_ID], body: QuotaUpdate, ctx: Ctx, _: Admin
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
