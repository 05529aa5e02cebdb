"""An HTTP proxy in front of a live server that can cut result downloads short.

It forwards each GET to the real server (headers as sent, ``Range`` and ``If-Range`` included)
and streams the answer back; the server never takes links from ``Host`` (it writes its own
socket address), so in JSON answers the proxy puts its own address in place of the server's,
as a reverse proxy with ``public_url`` would, and the links lead back through it;
while :attr:`CutProxy.cut_after` is set, the body of a result
download (a path with ``/results/``) stops after that many bytes and the connection is dropped,
as a broken network or a killed client would leave it. Each request's headers and the upstream
status are recorded in :attr:`CutProxy.seen`.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

import httpx

#: Headers not passed on (hop-by-hop, or set by the sending side).
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CutProxy

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        proxy = self.server
        with proxy.upstream.stream("GET", self.path, headers=headers) as r:
            proxy.seen.append(
                (self.path, {k.lower(): v for k, v in headers.items()}, r.status_code)
            )
            self.send_response(r.status_code)
            if "json" in r.headers.get("content-type", ""):
                body = r.read().replace(proxy.target.encode(), proxy.url.encode())
                for k, v in r.headers.items():
                    if k.lower() not in _HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            for k, v in r.headers.items():
                if k.lower() not in _HOP:
                    self.send_header(k, v)
            body_limit = proxy.cut_after if "/results/" in self.path else None
            length = r.headers.get("content-length")
            if length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            sent = 0
            for chunk in r.iter_raw():
                if body_limit is not None and sent + len(chunk) >= body_limit:
                    self.wfile.write(chunk[: body_limit - sent])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(chunk)
                sent += len(chunk)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


class CutProxy(ThreadingHTTPServer):
    """The proxy on a free local port, forwarding to ``target`` (``with`` starts and stops it)."""

    daemon_threads = True

    def __init__(self, target: str):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.target = target.rstrip("/")
        self.upstream = httpx.Client(base_url=target, timeout=60)
        self.cut_after: int | None = None
        self.seen: list[tuple[str, dict[str, str], int]] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The proxy's base URL."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def downloads(self) -> list[tuple[dict[str, str], int]]:
        """Headers and upstream status of each result download so far."""
        return [(h, status) for path, h, status in self.seen if "/results/" in path]

    def __enter__(self) -> CutProxy:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()
        self.server_close()
        self.upstream.close()
