"""``HEAD`` on every ``GET`` route, and the ``Allow`` header of a ``405``.

FastAPI routes answer only the methods they were declared with, so ``HEAD`` of a ``GET`` route
would be a 405. :class:`HeadAsGet` routes a ``HEAD`` request as ``GET`` and drops the body of
the answer, keeping its headers (``Content-Length`` of the ``GET`` answer, as RFC 9110 asks);
files are not even read (:class:`caesar_rest.api.downloads.RangedFileResponse`).
:class:`AllowTable` lists every method of every route of a path (several routes share one
path, GET and POST registered apart), for the ``Allow`` header of a 405.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette._utils import get_route_path
from starlette.routing import BaseRoute, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Scope key set on a ``HEAD`` request routed as ``GET``.
HEAD_KEY = "caesar.head"


def is_head(scope: Scope) -> bool:
    """Whether the request was a ``HEAD`` routed as ``GET``."""
    return bool(scope.get(HEAD_KEY))


class HeadAsGet:
    """Route ``HEAD`` requests as ``GET`` and send the answer without its body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.start":
                # Routed: the server sees HEAD again (uvicorn then expects no body despite the
                # Content-Length of the GET answer; with GET it fails the answer as short).
                scope["method"] = "HEAD"
            elif message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # the rest of a streamed body: nothing of it goes out
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        # In place (the router records the matched route in this scope, which the request
        # metrics outside read), and put back for them: they count a HEAD.
        scope["method"] = "GET"
        scope[HEAD_KEY] = True
        try:
            await self.app(scope, receive, headers_only)
        finally:
            scope["method"] = "HEAD"


class AllowTable:
    """The methods of every path template, for the ``Allow`` header of a 405.

    Several routes share one path (GET and POST registered apart, the routers of the v1 API
    included under a prefix), and the router names one route's methods only: this table has
    them all, by path pattern, built once with the application.

    Parameters
    ----------
    included
        ``(prefix, routes)`` pairs, as :class:`caesar_rest.api.metrics.RouteLabels` takes them.
    """

    def __init__(self, included: Iterable[tuple[str, Iterable[BaseRoute]]]) -> None:
        by_path: dict[str, set[str]] = {}
        for prefix, routes in included:
            for route in routes:
                fmt = getattr(route, "path_format", None)
                methods = getattr(route, "methods", None)
                if fmt is not None and methods:
                    by_path.setdefault(prefix + fmt, set()).update(methods)
        self._patterns = [(compile_path(p)[0], m) for p, m in by_path.items()]

    def allowed(self, scope: Scope) -> list[str]:
        """The methods some route of the request's path answers (``HEAD`` with ``GET``)."""
        path = get_route_path(scope)
        methods: set[str] = set()
        for regex, allowed in self._patterns:
            if regex.match(path):
                methods |= allowed
        if "GET" in methods:
            methods.add("HEAD")
        return sorted(methods)
