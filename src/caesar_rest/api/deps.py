"""Request dependencies: the service context and the calling user."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from caesar_rest.api.context import ServiceContext
from caesar_rest.api.errors import ApiError
from caesar_rest.auth.oidc import Identity, ProviderError, TokenError

F = TypeVar("F", bound=Callable[..., Any])

_CHALLENGE = 'Bearer realm="caesar-rest"'


async def get_ctx(request: Request) -> ServiceContext:
    """The process's service context."""
    ctx: ServiceContext = request.app.state.ctx
    return ctx


def _unauthorized(message: str, error: str = "invalid_token") -> ApiError:
    challenge = f'{_CHALLENGE}, error="{error}", error_description="{message}"'
    if error == "":
        challenge = _CHALLENGE
    return ApiError(
        401, message, headers={"WWW-Authenticate": challenge}, error=error or "unauthorized"
    )


async def current_identity(request: Request) -> Identity:
    """Who is calling: the token's subject, or the local user when authentication is off.

    Tokens are read only from the ``Authorization: Bearer`` header; a token in the query
    string is refused (it would end up in logs and browser histories).
    """
    cached: Identity | None = request.scope.get("state", {}).get("identity")
    if cached is not None:
        return cached
    ctx: ServiceContext = request.app.state.ctx
    if ctx.validator is None:
        ident = ctx.local_identity
    else:
        if "access_token" in request.query_params:
            raise _unauthorized(
                "tokens are accepted only in the Authorization header", "invalid_request"
            )
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise _unauthorized("authentication required: send Authorization: Bearer <token>", "")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized(
                "use the Bearer scheme: Authorization: Bearer <token>", "invalid_request"
            )
        try:
            ident = await run_in_threadpool(ctx.validate_token, token.strip())
        except TokenError as exc:
            raise _unauthorized(str(exc)) from None
        except ProviderError as exc:
            raise ApiError(503, f"identity provider unavailable: {exc}") from None
    request.scope.setdefault("state", {})["identity"] = ident
    # Later log lines of this request name the user and, on job routes, the job.
    job_id = request.path_params.get("job_id")
    structlog.contextvars.bind_contextvars(
        user=ident.user_id, **({"job_id": job_id} if job_id else {})
    )
    return ident


async def current_user(ident: Identity = Depends(current_identity)) -> str:
    """The calling user's id (the owner of what they create)."""
    return ident.user_id


async def require_admin(ident: Identity = Depends(current_identity)) -> Identity:
    """The caller, who must have the admin role (403 otherwise)."""
    if not ident.admin:
        raise ApiError(403, "this route needs the admin role")
    return ident


def get_and_post(router: APIRouter, path: str, **kwargs: Any) -> Callable[[F], F]:
    """Register a handler for GET and POST (the predecessor allowed both) with distinct ids."""

    def deco(func: F) -> F:
        name = kwargs.pop("name", func.__name__)
        router.add_api_route(
            path, func, methods=["GET"], name=name, operation_id=f"{name}_get", **kwargs
        )
        router.add_api_route(
            path,
            func,
            methods=["POST"],
            name=f"{name}_post",
            operation_id=f"{name}_post",
            **kwargs,
        )
        return func

    return deco
