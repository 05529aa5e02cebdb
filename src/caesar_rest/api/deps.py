"""Request dependencies: the service context and the calling user."""

from __future__ import annotations

from fastapi import Request

from caesar_rest.api.context import ServiceContext


def get_ctx(request: Request) -> ServiceContext:
    """The process's service context."""
    ctx: ServiceContext = request.app.state.ctx
    return ctx


def current_user(request: Request) -> str:
    """The calling user's id. Authentication is off: everyone is the configured local user."""
    ctx: ServiceContext = request.app.state.ctx
    return ctx.settings.local_user
