"""Server read timeouts and the connection limit (caesar_rest/httpserver.py), on a live server.

A ``caesar-rest serve`` (and a gunicorn with deploy/gunicorn/gunicorn.conf.py) with short
limits: 1 s for the headers and for a pause in a body, 2 s of keep-alive, 3 connections. Each
client is a raw socket on 127.0.0.1 (or the gunicorn unix socket) with a bounded loop.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.deploy.deploy_support import small_fits
from tests.deploy.test_gunicorn import GunicornServer
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


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("timeouts") / "srv", **LIMITS).start(timeout=90)
    try:
        yield server
    finally:
        server.stop()


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
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="t.fits"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )


def upload_head(length: int, host: str = "127.0.0.1", boundary: str = "caesar-timeouts") -> bytes:
    return (
        f"POST {API}/upload HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def assert_closed_after_slow_headers(connect: Connect) -> None:
    """Headers one byte per 0.5 s: the server closes before they are complete, after ~1 s."""
    request = get("/healthz") + b"X-Padding: " + b"a" * 40 + b"\r\n\r\n"
    with connect() as sock:
        start = time.monotonic()
        sent = 0
        while sent < len(request) and time.monotonic() - start < HEADER_TIMEOUT + SLACK:
            try:
                sock.sendall(request[sent : sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            sock.settimeout(0.5)
            try:
                sock.recv(65536)  # the 408, or b"": the server closed
            except TimeoutError:
                continue
            break
        elapsed = time.monotonic() - start
    assert sent < len(request), "the whole slow request was accepted"
    assert HEADER_TIMEOUT * 0.8 <= elapsed <= HEADER_TIMEOUT + SLACK, elapsed


def assert_silent_connection_closed(connect: Connect) -> None:
    with connect() as sock:
        start = time.monotonic()
        data, closed = read_until_closed(sock, start + HEADER_TIMEOUT + SLACK)
    assert data == b""
    assert closed - start >= HEADER_TIMEOUT * 0.8


def assert_stalled_upload_408(connect: Connect, datadir: Path, host: str = "127.0.0.1") -> None:
    """Half an upload, then nothing: 408 JSON after the body timeout; nothing is kept."""
    body = multipart(small_fits(128))  # 64 KiB + framing
    before = files_in(datadir)
    with connect() as sock:
        sock.sendall(upload_head(len(body), host) + body[: len(body) // 2])
        start = time.monotonic()
        data, closed = read_until_closed(sock, start + BODY_TIMEOUT + SLACK)
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]
    assert json.loads(data.split(b"\r\n\r\n", 1)[1]) == {
        "status": "Request body not received in time"
    }
    assert closed - start >= BODY_TIMEOUT * 0.8
    # The app saw the client go away: its temporary file is removed, no file is registered.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and files_in(datadir) != before:
        time.sleep(0.1)
    assert files_in(datadir) == before


def files_in(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_slow_headers_are_cut(srv: LiveServer) -> None:
    assert_closed_after_slow_headers(tcp(srv))


def test_silent_connection_is_closed(srv: LiveServer) -> None:
    assert_silent_connection_closed(tcp(srv))


def test_slow_headers_on_kept_alive_connection_are_cut(srv: LiveServer) -> None:
    """The headers' clock restarts with the next request's first byte, not the idle time."""
    with tcp(srv)() as sock:
        sock.sendall(get("/healthz"))
        assert read_response(sock)[0] == 200
        time.sleep(HEADER_TIMEOUT * 1.3)  # idle longer than the header timeout, within keep-alive
        sock.sendall(get("/healthz"))
        assert read_response(sock)[0] == 200
        sock.sendall(b"GET /hea")
        start = time.monotonic()
        data, closed = read_until_closed(sock, start + HEADER_TIMEOUT + SLACK)
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]
    assert closed - start >= HEADER_TIMEOUT * 0.8


def test_stalled_upload_gets_408_and_leaves_nothing(srv: LiveServer) -> None:
    with srv.client() as c:
        known = c.get("/fileids").json()
        assert_stalled_upload_408(tcp(srv), srv.datadir)
        assert c.get("/fileids").json() == known


def test_idle_keep_alive_connection_is_closed(srv: LiveServer) -> None:
    with tcp(srv)() as sock:
        sock.sendall(get("/healthz"))
        status, headers, _ = read_response(sock)
        assert status == 200 and headers.get("connection") != "close"
        start = time.monotonic()
        data, closed = read_until_closed(sock, start + KEEP_ALIVE + SLACK)
    assert data == b""
    assert closed - start >= KEEP_ALIVE * 0.8


def test_connection_limit(srv: LiveServer) -> None:
    """With N connections open and in use, the N+1-th gets a JSON 503; the N are served."""
    socks = [tcp(srv)() for _ in range(MAX_CONNECTIONS)]
    try:
        for s in socks:
            s.sendall(get("/healthz"))
        assert [read_response(s)[0] for s in socks] == [200] * MAX_CONNECTIONS
        with tcp(srv)() as extra:
            extra.sendall(get("/healthz"))
            status, headers, body = read_response(extra)
            assert status == 503
            assert headers["connection"] == "close" and headers["retry-after"] == "1"
            assert "connections" in json.loads(body)["status"]
            assert read_until_closed(extra, time.monotonic() + 2)[0] == b""
        # The N kept-alive connections still work.
        for s in socks:
            s.sendall(get("/healthz"))
        assert [read_response(s)[0] for s in socks] == [200] * MAX_CONNECTIONS
    finally:
        for s in socks:
            s.close()
    # Once they are gone, a new connection is served again.
    deadline = time.monotonic() + 5
    status = 0
    while time.monotonic() < deadline and status != 200:
        status = httpx.get(f"{srv.url}/healthz", timeout=5).status_code
        time.sleep(0.1)
    assert status == 200


def test_normal_and_slow_but_steady_uploads_succeed(srv: LiveServer) -> None:
    data = small_fits(64)
    with srv.client() as c:
        r = c.post("/upload", files={"file": ("quick.fits", data)})
        assert r.status_code == 200, r.text
    # A body in 8 pieces, one per 0.5 s (< body timeout): 3.5 s in all, longer than every limit.
    body = multipart(small_fits(96), boundary="steady")
    step = len(body) // 8 + 1
    with tcp(srv)() as sock:
        sock.sendall(upload_head(len(body), boundary="steady"))
        for i in range(0, len(body), step):
            time.sleep(BODY_TIMEOUT / 2)
            sock.sendall(body[i : i + step])
        status, _, answer = read_response(sock)
    assert status == 200, answer
    assert json.loads(answer)["filename_orig"] == "t.fits"


def test_gunicorn_worker_applies_the_limits(tmp_path: Path) -> None:
    """deploy/gunicorn/gunicorn.conf.py: the same protocol, keep-alive from the settings."""
    sock_path = tmp_path / "g.sock"
    gsrv = GunicornServer(tmp_path / "srv", sock_path, workers=1, **LIMITS).start()

    def connect() -> socket.socket:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(str(sock_path))
        return s

    try:
        assert_silent_connection_closed(connect)
        assert_stalled_upload_408(connect, gsrv.datadir, host="app")
        with connect() as s:
            s.sendall(get("/healthz", host="app"))
            assert read_response(s)[0] == 200
            start = time.monotonic()
            _, closed = read_until_closed(s, start + KEEP_ALIVE + SLACK)
        assert closed - start >= KEEP_ALIVE * 0.8
    finally:
        gsrv.stop()


def test_body_parts_reach_the_app_intact(srv: LiveServer) -> None:
    """The protocol hands the body on as the parser's parts (one, or several joined): an
    upload sent at once, one sent in small pieces, and a request pipelined after an upload on
    the same connection are all answered with the checksum of the bytes sent."""
    data = small_fits(512)  # 1 MiB and a header block
    body = multipart(data, boundary="parts")
    want = hashlib.sha256(data).hexdigest()
    with tcp(srv)() as sock:
        sock.sendall(upload_head(len(body), boundary="parts") + body)
        status, _, answer = read_response(sock)
        assert status == 200, answer
        assert json.loads(answer)["sha256"] == want
        sock.sendall(upload_head(len(body), boundary="parts"))
        for i in range(0, len(body), 7919):
            sock.sendall(body[i : i + 7919])
        status, _, answer = read_response(sock)
        assert status == 200, answer
        assert json.loads(answer)["sha256"] == want
        sock.sendall(upload_head(len(body), boundary="parts") + body + get("/healthz"))
        (status, answer), (status2, _) = read_responses(sock, 2)
        assert status == 200 and json.loads(answer)["sha256"] == want, answer
        assert status2 == 200


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
