"""Request dependencies, as ``Annotated`` aliases that routes put in their signatures.

``Ctx`` (the service context), ``Owner`` (the caller's user id), ``Admin`` (a caller with the
admin role), ``Files`` (the file service), and the caller's job as the v1.0 API looks it up
(``OwnedJob``: 400 for a malformed id, 404 ``Job <id> not found for user <owner>!``;
``FinishedJob``: the same, 202 while it runs) or as UWS does (``UwsJob``: 404 ``No job <id>``
for any id that is not one of the caller's).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from caesar_rest.api.context import ServiceContext
from caesar_rest.auth.oidc import Identity, ProviderError, TokenError
from caesar_rest.db.models import JobRecord
from caesar_rest.errors import Forbidden, Invalid, NotFound, ServiceError, Unauthorized, Unavailable
from caesar_rest.jobs.service import JobNotFound
from caesar_rest.jobs.states import LEGACY_UNFINISHED, legacy_state
from caesar_rest.storage.files import FileService
from caesar_rest.storage.paths import is_job_id

F = TypeVar("F", bound=Callable[..., Any])

_CHALLENGE = 'Bearer realm="caesar-rest"'


async def get_ctx(request: Request) -> ServiceContext:
    """The process's service context."""
    ctx: ServiceContext = request.app.state.ctx
    return ctx


def _unauthorized(message: str, error: str = "invalid_token") -> Unauthorized:
    challenge = f'{_CHALLENGE}, error="{error}", error_description="{message}"'
    if error == "":
        challenge = _CHALLENGE
    return Unauthorized(
        message, headers={"WWW-Authenticate": challenge}, error=error or "unauthorized"
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
            retry = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
            raise Unavailable(f"identity provider unavailable: {exc}", headers=retry) from None
    request.scope.setdefault("state", {})["identity"] = ident
    # Later log lines of this request name the user and, on job routes, the job.
    job_id = request.path_params.get("job_id")
    structlog.contextvars.bind_contextvars(
        user=ident.user_id, **({"job_id": job_id} if job_id else {})
    )
    return ident


async def current_user(ident: Annotated[Identity, Depends(current_identity)]) -> str:
    """The calling user's id (the owner of what they create)."""
    return ident.user_id


async def require_admin(ident: Annotated[Identity, Depends(current_identity)]) -> Identity:
    """The caller, who must have the admin role (403 otherwise)."""
    if not ident.admin:
        raise Forbidden("this route needs the admin role")
    return ident


class NotReady(ServiceError):
    """The job has not finished: its outputs are not there yet (the predecessor's 202)."""

    def __init__(self, job: JobRecord, state: str) -> None:
        super().__init__(
            202,
            f"Job {job.id} not yet completed (state={state}), output not available",
            job_id=job.id,
            state=state,
        )


def get_files(ctx: Annotated[ServiceContext, Depends(get_ctx)]) -> FileService:
    """The file service (a light object: made per request, as the job service is shared)."""
    return FileService(ctx.settings, ctx.sessions)


def owned_job(
    job_id: str,
    ctx: Annotated[ServiceContext, Depends(get_ctx)],
    owner: Annotated[str, Depends(current_user)],
) -> JobRecord:
    """The caller's job of the path's ``job_id``, as the v1.0 API finds it.

    Raises
    ------
    Invalid
        ``job_id`` cannot be a job id.
    NotFound
        No such job of the caller.
    """
    if not is_job_id(job_id):
        raise Invalid(f"Invalid job id {job_id!r}")
    try:
        return ctx.jobs.get(owner, job_id)
    except JobNotFound:
        raise NotFound(f"Job {job_id} not found for user {owner}!", job_id=job_id) from None


def finished(job: JobRecord) -> JobRecord:
    """``job`` if it has finished, else :class:`NotReady` (answered 202)."""
    state = legacy_state(job.phase, job.reason)
    if state in LEGACY_UNFINISHED:
        raise NotReady(job, state)
    return job


def finished_job(job: Annotated[JobRecord, Depends(owned_job)]) -> JobRecord:
    """The caller's job of the path, once it has finished (202 before)."""
    return finished(job)


def uws_job(
    job_id: str,
    ctx: Annotated[ServiceContext, Depends(get_ctx)],
    owner: Annotated[str, Depends(current_user)],
) -> JobRecord:
    """The caller's job as UWS finds it: 404 also for another owner's job and malformed ids."""
    return find_uws_job(ctx, owner, job_id)


def find_uws_job(ctx: ServiceContext, owner: str, job_id: str) -> JobRecord:
    """:func:`uws_job` outside a dependency (re-reads of a waiting request)."""
    if is_job_id(job_id):
        with contextlib.suppress(JobNotFound):
            return ctx.jobs.get(owner, job_id)
    raise NotFound(f"No job {job_id}", job_id=job_id)


#: The service context.
Ctx = Annotated[ServiceContext, Depends(get_ctx)]
#: The caller's user id.
Owner = Annotated[str, Depends(current_user)]
#: The caller, who must have the admin role.
Admin = Annotated[Identity, Depends(require_admin)]
#: The file service.
Files = Annotated[FileService, Depends(get_files)]
#: The caller's job (v1.0 lookup).
OwnedJob = Annotated[JobRecord, Depends(owned_job)]
#: The caller's finished job (v1.0 lookup; 202 while it runs).
FinishedJob = Annotated[JobRecord, Depends(finished_job)]
#: The caller's job (UWS lookup).
UwsJob = Annotated[JobRecord, Depends(uws_job)]


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
