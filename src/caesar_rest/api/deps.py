"""Request dependencies: the service context and the calling user."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request

from caesar_rest.api.context import ServiceContext

F = TypeVar("F", bound=Callable[..., Any])


def get_ctx(request: Request) -> ServiceContext:
    """The process's service context."""
    ctx: ServiceContext = request.app.state.ctx
    return ctx


def current_user(request: Request) -> str:
    """The calling user's id. Authentication is off: everyone is the configured local user."""
    ctx: ServiceContext = request.app.state.ctx
    return ctx.settings.local_user


def get_and_post(router: APIRouter, path: str, **kwargs: Any) -> Callable[[F], F]:
    """Register a handler for GET and POST (the predecessor allowed both) with distinct ids."""

    def deco(func: F) -> F:
        name = kwargs.pop("name", func.__name__)
        router.add_api_route(
            path, func, methods=["GET"], name=name, operation_id=f"{name}_get", **kwargs
        )
        router.add_api_route(
            path, func, methods=["POST"], name=f"{name}_post", operation_id=f"{name}_post", **kwargs
        )
        return func

    return deco
