"""Request id and access log, as a plain ASGI middleware (cheap on the hot path)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from caesar_rest.api.errors import internal_error_body
from caesar_rest.api.metrics import UNMATCHED, observe_request
from caesar_rest.logconfig import get_logger, log_access

log = get_logger(__name__)


class RequestIdMiddleware:
    """Binds a request id (from ``X-Request-ID`` or new) to the logs and the response.

    ``route_label`` names the matched route of a routed request for the request metrics
    (:class:`caesar_rest.api.metrics.RouteLabels`); without one, routes are labelled with
    their own path template.
    """

    def __init__(self, app: ASGIApp, route_label: Callable[[Scope], str] | None = None):
        self.app = app
        self.route_label = route_label or route_template

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = ""
        for k, v in scope["headers"]:
            if k == b"x-request-id":
                rid = v.decode("latin-1")[:64]
                break
        if not rid or not rid.replace("-", "").isalnum():
            rid = os.urandom(16).hex()  # as random as uuid4().hex, without the UUID object
        scope.setdefault("state", {})["request_id"] = rid
        start = time.perf_counter()
        status: list[int] = [0]
        rid_b = rid.encode()

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                headers: list[Any] = list(message.get("headers", []))
                headers.append((b"x-request-id", rid_b))
                message["headers"] = headers
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=rid)
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            # Answered here, not by Starlette's outer error middleware: there the request id is
            # unbound already, the answer would lack X-Request-ID and the count would say 0.
            log.exception("unhandled_error", path=scope["path"])
            started = status[0] != 0
            status[0] = 500
            if started:
                raise  # the answer has begun: the server can only drop the connection
            await _internal_error(send, rid_b)
        finally:
            template = self.route_label(scope)
            observe_request(scope["method"], template, status[0], time.perf_counter() - start)
            log_access(
                scope["method"],
                scope["path"],
                status[0],
                round((time.perf_counter() - start) * 1000, 2),
            )
            # user and job_id are bound by the current_identity dependency.
            structlog.contextvars.unbind_contextvars("request_id", "user", "job_id")


async def _internal_error(send: Send, rid: bytes) -> None:
    """Send the JSON 500 of an unexpected error."""
    body = internal_error_body(rid.decode())
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", rid),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def route_template(scope: Scope) -> str:
    """The matched route's own path template (``/job/{job_id}/status``), for labels.

    Without the prefix of an included router: :class:`~caesar_rest.api.metrics.RouteLabels`
    knows those.
    """
    route = scope.get("route")
    if route is None:
        return UNMATCHED
    return str(getattr(route, "path_format", None) or UNMATCHED)
