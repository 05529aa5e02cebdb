"""Cross-site protection: a page on another site cannot change anything here.

With authentication off (the default) every request acts as the local user, so a page on
any site the user visits could post to the service from the user's browser: a form post
(``multipart/form-data``, URL-encoded, ``text/plain``) needs no CORS preflight. Three rules
close that (``docs/auth.md``, "Cross-site requests"):

* :class:`CrossOriginGuard` refuses (403) a state-changing request (POST, PUT, PATCH, DELETE)
  whose ``Origin`` (or, without one, ``Referer``) names another origin than the service's
  own or one of ``cors_origins``, unless it carries a custom header (:data:`CLIENT_HEADERS`),
  which a foreign page can only send after a CORS preflight this service grants. A request
  with neither ``Origin`` nor ``Referer`` is not a browser's cross-site post (browsers send
  ``Origin`` on every cross-origin POST): curl, pyvo and the Python client pass.
* :func:`require_json` refuses (415) a JSON route's body that is not declared JSON, so that a
  ``text/plain`` form post cannot pass for a JSON request.
* CORS is off unless ``cors_origins`` lists origins (:func:`install_cross_origin`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from caesar_rest.errors import Unsupported
from caesar_rest.logconfig import get_logger
from caesar_rest.settings import Settings

log = get_logger(__name__)

#: Methods that change state: the guard looks at these only.
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Headers a cross-site page cannot send without a granted CORS preflight; the Python client
#: sends ``X-CAESAR-Client``, JavaScript libraries often ``X-Requested-With``.
CLIENT_HEADERS = (b"x-caesar-client", b"x-requested-with")
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: Headers of the resumable (tus) upload a page of another allowed origin sends and reads.
TUS_REQUEST_HEADERS = ("Tus-Resumable", "Upload-Length", "Upload-Metadata", "Upload-Offset")
TUS_RESPONSE_HEADERS = (
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Expires",
    "X-Caesar-File-Id",
)

Origin = tuple[str, str, int]


def parse_origin(value: str) -> Origin | None:
    """``(scheme, host, port)`` of an origin or URL (default port filled in); None when it is
    not an http(s) URL with a host (``null``, ``file:``, garbage)."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def served_origin(scope: Scope, host: str) -> Origin | None:
    """The origin the request was served under: the scope's scheme (uvicorn sets it from
    ``X-Forwarded-Proto`` of a trusted proxy only) and the ``Host`` header."""
    if not host:
        return None
    return parse_origin(f"{scope.get('scheme', 'http')}://{host}")


class CrossOriginGuard:
    """Refuse state-changing requests that a page of a foreign site sent (403, JSON).

    Parameters
    ----------
    app
        The application.
    public_url
        The service's public base URL (behind a proxy); its origin is the service's own.
    allowed
        Further origins (``cors_origins``) whose pages may call the service.
    """

    def __init__(
        self, app: ASGIApp, public_url: str | None = None, allowed: Sequence[str] = ()
    ) -> None:
        self.app = app
        own = [public_url] if public_url else []
        self.trusted = {o for o in (parse_origin(v) for v in [*own, *allowed]) if o is not None}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in UNSAFE_METHODS:
            refusal = self.refusal(scope)
            if refusal is not None:
                await _forbidden(refusal, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> str | None:
        """Why the request is refused, or None when it may go on."""
        origin = referer = host = fetch_site = ""
        for k, v in scope["headers"]:
            if k in CLIENT_HEADERS:
                return None
            if k == b"origin":
                origin = v.decode("latin-1")
            elif k == b"referer":
                referer = v.decode("latin-1")
            elif k == b"host":
                host = v.decode("latin-1")
            elif k == b"sec-fetch-site":
                fetch_site = v.decode("latin-1").strip().lower()
        sent = origin or referer
        if not sent:
            return None  # not a browser's cross-site request
        # The browser's own verdict (a page cannot set Sec-Fetch-*): right behind any proxy.
        if fetch_site == "same-origin":
            return None
        claimed = parse_origin(sent)
        if claimed is not None and (
            claimed in self.trusted or claimed == served_origin(scope, host)
        ):
            return None
        what = "Origin" if origin else "Referer"
        log.warning(
            "cross_site_refused",
            method=scope["method"],
            path=scope["path"],
            **{what.lower(): sent[:200]},
        )
        return (
            f"Cross-site request refused: {what} {sent[:200]!r} is not this service's origin "
            "nor one of cors_origins (send X-CAESAR-Client from a non-browser client)"
        )


async def _forbidden(message: str, send: Send) -> None:
    body = json.dumps({"status": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def is_json_type(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` is JSON: ``application/json`` or ``application/*+json``."""
    mtype = (content_type or "").split(";")[0].strip().lower()
    return mtype == "application/json" or (
        mtype.startswith("application/") and mtype.endswith("+json")
    )


def require_json(request: Request) -> None:
    """Refuse (415) a body that is not declared JSON; usable as a route dependency.

    A cross-site page can post ``text/plain`` (or no type at all) without a preflight; only
    a JSON type makes the browser ask first.
    """
    if not is_json_type(request.headers.get("content-type")):
        raise Unsupported("Send the request body as JSON (Content-Type: application/json)")


def install_cross_origin(app: FastAPI, settings: Settings) -> None:
    """Add the cross-site guard and, when ``cors_origins`` lists origins, CORS answers.

    Call before the outer middlewares (request ids) are added, so that refusals carry a
    request id and are logged; CORS wraps the guard and answers preflights itself.
    """
    app.add_middleware(
        CrossOriginGuard, public_url=settings.public_url, allowed=settings.cors_origins
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Range",
                "X-Request-ID",
                "X-CAESAR-Client",
                "X-Requested-With",
                *TUS_REQUEST_HEADERS,
            ],
            expose_headers=[
                "Location",
                "Content-Disposition",
                "Retry-After",
                "X-Request-ID",
                "Link",
                *TUS_RESPONSE_HEADERS,
            ],
            max_age=600,
        )
