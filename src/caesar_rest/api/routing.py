"""A FastAPI route class for the few routes that clients poll many times a second."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response


class DirectRoute(APIRoute):
    """An :class:`~fastapi.routing.APIRoute` that calls its endpoint without dependency solving.

    The endpoint must be an ``async def`` taking ``request`` and the route's path parameters,
    as strings, and nothing else (no ``Depends``, no body, no query parameters); it returns a
    :class:`~starlette.responses.Response`. The route is described in the OpenAPI document like
    any other (FastAPI reads the signature), but a request skips FastAPI's per-request work of
    solving and validating parameters, which is a fifth of a small route's time. FastAPI's
    documented extension point for this is overriding :meth:`get_route_handler`.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        d = self.dependant
        extra = [
            kind
            for kind, present in (
                ("query parameters", d.query_params),
                ("headers", d.header_params),
                ("cookies", d.cookie_params),
                ("a body", d.body_params),
                ("dependencies", d.dependencies),
                ("a response parameter", d.response_param_name),
                ("background tasks", d.background_tasks_param_name),
                ("security scopes", d.security_scopes_param_name),
                ("a websocket", d.websocket_param_name),
                (
                    "path parameters that are not str",
                    [p for p in d.path_params if p.field_info.annotation is not str],
                ),
            )
            if present
        ]
        if extra or not inspect.iscoroutinefunction(endpoint) or d.request_param_name != "request":
            # They would be skipped silently: refuse the route instead.
            raise TypeError(
                f"DirectRoute {path}: the endpoint must be an async def taking `request` and "
                f"path parameters only (it has {', '.join(extra) or 'another signature'})"
            )

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The handler FastAPI wraps into the route's ASGI application.

        Returns
        -------
        callable
            ``handler(request)``: awaits the endpoint with ``request`` and the path parameters.
        """
        endpoint: Callable[..., Coroutine[Any, Any, Response]] = self.endpoint

        async def handler(request: Request) -> Response:
            return await endpoint(request=request, **request.path_params)

        return handler
