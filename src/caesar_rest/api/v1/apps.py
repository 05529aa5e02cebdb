"""List apps and describe their options."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from caesar_rest.api.deps import Ctx
from caesar_rest.errors import Invalid

router = APIRouter(tags=["apps"])


@router.get("/apps", summary="List the apps")
def list_apps(ctx: Ctx) -> JSONResponse:
    """App names (``apps``) and, per app, availability and description (``details``)."""
    details = []
    for app in ctx.apps:
        ok, why = app.availability()
        details.append(
            {"name": app.name, "description": app.description, "available": ok, "reason": why}
        )
    return JSONResponse({"apps": ctx.apps.names(), "details": details})


@router.get("/app/{app_name}/describe", summary="Option schema of an app")
def describe(app_name: str, ctx: Ctx) -> JSONResponse:
    """Options keyed by name, in the predecessor's shape."""
    app = ctx.apps.get(app_name)
    if app is None:
        raise Invalid(f"Unknown app {app_name}!")
    return JSONResponse(app.describe())
