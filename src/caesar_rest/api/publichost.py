"""Links and redirects never carry the client's ``Host`` header.

Starlette builds absolute URLs (``url_for``, redirects, the trailing-slash redirect) from the
``Host`` header, which any client sets: a hostile one would have its host echoed into the
``Location`` of a redirect and into the links of JSON and UWS documents (and into any cache
in front). :class:`PublicHost` gives the application a scope whose host is the service's own:

* with ``public_url`` set (behind a proxy), its scheme and ``host[:port]``;
* otherwise the address of the socket the request came in on;
* on a unix socket without ``public_url``, no host at all: links are relative paths.

The cross-site guard, outside this middleware, judges the request's own ``Host`` first.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

_DEFAULT_PORTS = {"http": 80, "https": 443}


def public_origin(public_url: str | None) -> tuple[str, str, int] | None:
    """``(scheme, netloc, port)`` of ``public_url``, or None when it is unset or not http(s)."""
    if not public_url:
        return None
    parts = urlsplit(public_url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        return None
    return scheme, parts.netloc.rsplit("@", 1)[-1], port


def socket_host(server: tuple[str, int | None] | None, scheme: str = "http") -> str | None:
    """``host[:port]`` of the local socket address (IPv6 in brackets, no default port);
    None for a unix socket."""
    if not server or server[1] is None:
        return None
    host, port = server
    if ":" in host:
        host = f"[{host}]"
    return host if _DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"


class PublicHost:
    """Replace the request's ``Host`` for the application (see the module's description).

    Parameters
    ----------
    app
        The application.
    public_url
        The service's public base URL (``CAESAR_REST_PUBLIC_URL``); only its origin is used.
    """

    def __init__(self, app: ASGIApp, public_url: str | None = None) -> None:
        self.app = app
        self.public = public_origin(public_url)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # In place: the router records the matched route in this scope, which the request
        # metrics outside read; the cross-site guard outside has looked at the Host already.
        headers = [(k, v) for k, v in scope["headers"] if k != b"host"]
        inner = scope
        inner["headers"] = headers
        if self.public is not None:
            scheme, netloc, port = self.public
            inner["scheme"] = scheme
            inner["server"] = (netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc, port)
            headers.append((b"host", netloc.encode("latin-1")))
        else:
            host = socket_host(scope.get("server"), scope.get("scheme", "http"))
            if host is not None:
                headers.append((b"host", host.encode("latin-1")))
            else:
                inner["server"] = None
        await self.app(inner, receive, send)
