"""Raw-socket HTTP clients of the live tests of caesar_rest/httpserver.py.

Shared by test_timeouts.py and test_direct_body.py: the short limits their servers run with
(1 s for the headers and for a pause in a body, 2 s of keep-alive, 3 connections), requests
written and answers read over a plain socket (127.0.0.1 or a unix socket) with bounded loops,
and the stalled-upload check.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

from tests.deploy.deploy_support import small_fits
from tests.support.multipart import form_body
from tests.support.server import LiveServer

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
KEEP_ALIVE = 2
MAX_CONNECTIONS = 3
#: Slack for a busy 2-core machine: a timer that should fire at T must have fired by T + SLACK.
SLACK = 2.5

LIMITS = {
    "CAESAR_REST_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
    "CAESAR_REST_BODY_TIMEOUT": str(BODY_TIMEOUT),
    "CAESAR_REST_KEEP_ALIVE_TIMEOUT": str(KEEP_ALIVE),
    "CAESAR_REST_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
}
API = "/caesar/api/v1.0"

Connect = Callable[[], socket.socket]


def tcp(server: LiveServer) -> Connect:
    return lambda: socket.create_connection(("127.0.0.1", server.port), timeout=10)


def read_until_closed(sock: socket.socket, deadline: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes (or the deadline); and when it closed."""
    data = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return data, time.monotonic()
        if not chunk:
            return data, time.monotonic()
        data += chunk
    raise AssertionError(f"connection still open at the deadline; received {data[:200]!r}")


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response with a Content-Length, read from a kept-alive connection."""
    data = b""
    sock.settimeout(10)
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before the headers: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk, "closed in the body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def get(path: str, host: str = "127.0.0.1") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def multipart(data: bytes, boundary: str = "caesar-timeouts") -> bytes:
    return form_body(data, boundary, "t.fits")


def upload_head(length: int, host: str = "127.0.0.1", boundary: str = "caesar-timeouts") -> bytes:
    return (
        f"POST {API}/upload HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def assert_stalled_upload_408(
    connect: Connect,
    datadir: Path,
    host: str = "127.0.0.1",
    side: int = 128,
    boundary: str = "caesar-timeouts",
) -> None:
    """Half an upload, then nothing: 408 JSON after the body timeout; nothing is kept.

    The upload is a ``side`` x ``side`` FITS image (128: 64 KiB) and the form's framing.
    """
    body = multipart(small_fits(side), boundary)
    before = files_in(datadir)
    with connect() as sock:
        sock.sendall(upload_head(len(body), host, boundary) + body[: len(body) // 2])
        start = time.monotonic()
        data, closed = read_until_closed(sock, start + BODY_TIMEOUT + SLACK)
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]
    assert json.loads(data.split(b"\r\n\r\n", 1)[1]) == {
        "status": "Request body not received in time"
    }
    assert closed - start >= BODY_TIMEOUT * 0.8
    # The app saw the client go away: its temporary file is removed, no file is registered.
    assert wait_files(datadir, before) == before


def direct_reads(server: LiveServer) -> int:
    """How many bodies the server has read from the connection so far (its log)."""
    return server.log.read_text(errors="replace").count("request_body_read_directly")


def files_in(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def wait_files(folder: Path, want: set[Path]) -> set[Path]:
    """The folder's files once they are ``want`` (or after 5 s)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and files_in(folder) != want:
        time.sleep(0.1)
    return files_in(folder)


def read_responses(sock: socket.socket, n: int) -> list[tuple[int, bytes]]:
    """``n`` pipelined responses with a Content-Length each: (status, body) of each."""
    data = b""
    out: list[tuple[int, bytes]] = []
    sock.settimeout(10)
    while len(out) < n:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            lines = data[:head_end].decode("latin-1").split("\r\n")
            fields = (ln.split(":", 1) for ln in lines[1:])
            length = int({k.strip().lower(): v.strip() for k, v in fields}["content-length"])
            end = head_end + 4 + length
            if len(data) >= end:
                out.append((int(lines[0].split()[1]), data[head_end + 4 : end]))
                data = data[end:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(out)} responses: {data[:200]!r}"
        data += chunk
    return out
