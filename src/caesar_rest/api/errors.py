"""JSON errors for every failure: never a traceback or an HTML page.

Services and routes raise :class:`caesar_rest.errors.ServiceError` (or a subclass): it carries
its status, and the one handler here answers it.
"""

from __future__ import annotations

import errno
import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from caesar_rest.db.engine import unavailable
from caesar_rest.errors import ServiceError
from caesar_rest.logconfig import get_logger

log = get_logger(__name__)


def error_body(message: str, **extra: Any) -> dict[str, Any]:
    """The predecessor's error shape: the message under ``status``."""
    return {"status": message, **extra}


def answer(exc: ServiceError) -> JSONResponse:
    """The JSON answer to a service error: its status, its body and its headers."""
    return JSONResponse(
        error_body(exc.message, **exc.body), status_code=exc.status, headers=exc.headers
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the JSON error handlers: one for every :class:`ServiceError`, the others for
    FastAPI's own errors and for anything unexpected."""

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return answer(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "error"
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 404 and message == "Not Found":
            message = "No such route"
        elif exc.status_code == 405:
            # Every method of every route of this path (the router names one route's only).
            table = getattr(request.app.state, "allow_table", None)
            allow = ", ".join(table.allowed(request.scope)) if table else ""
            headers["Allow"] = allow
            message = f"Method {request.method} not allowed on this route; allowed: {allow}"
        return JSONResponse(
            error_body(message), status_code=exc.status_code, headers=headers or None
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            problems.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        return JSONResponse(
            error_body("Invalid request: " + "; ".join(problems), errors=problems),
            status_code=400,
        )

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        # A handler of its own (not the one for Exception, which RequestIdMiddleware pre-empts):
        # a locked or unreachable database is a 503 with Retry-After, anything else a 500.
        busy = unavailable(exc)
        if busy is None:
            raise exc
        log.warning("database_unavailable", path=request.url.path, error=str(exc.orig))
        return answer(busy)

    @app.exception_handler(OSError)
    async def _os_error(request: Request, exc: OSError) -> JSONResponse:
        if exc.errno not in STORAGE_FULL:
            raise exc  # an unexpected error: RequestIdMiddleware answers, logs and counts it
        log.error("storage_full", path=request.url.path, error=str(exc))
        return JSONResponse(
            error_body("No space left on the service's storage; try again later"),
            status_code=507,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Only what escapes RequestIdMiddleware reaches here (it answers the rest itself).
        rid = request.scope.get("state", {}).get("request_id", "")
        log.error("unhandled_error", path=request.url.path, request_id=rid, exc_info=exc)
        return JSONResponse(
            json.loads(internal_error_body(rid)),
            status_code=500,
            headers={"X-Request-ID": rid} if rid else None,
        )


#: ``errno`` values of a full disk or an exhausted disk quota: 507 Insufficient Storage.
STORAGE_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def internal_error_body(request_id: str) -> bytes:
    """The body of a 500: JSON, with the request id the operators find in the log."""
    body = error_body(
        "Internal server error; quote this request id to the operators", request_id=request_id
    )
    return json.dumps(body).encode()
