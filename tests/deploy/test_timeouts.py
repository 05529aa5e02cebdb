"""Server read timeouts and the connection limit (caesar_rest/httpserver.py), on a live server.

A ``caesar-rest serve`` (and a gunicorn with deploy/gunicorn/gunicorn.conf.py) with short
limits: 1 s for the headers and for a pause in a body, 2 s of keep-alive, 3 connections. Each
client is a raw socket on 127.0.0.1 (or the gunicorn unix socket) with a bounded loop
(tests/deploy/raw_http.py).
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT

from caesar_rest.httpserver import DIRECT_MIN_BYTES

from tests.deploy.deploy_support import small_fits
from tests.deploy.raw_http import (
    BODY_TIMEOUT,
    HEADER_TIMEOUT,
    KEEP_ALIVE,
    LIMITS,
    MAX_CONNECTIONS,
    SLACK,
    Connect,
    assert_stalled_upload_408,
    direct_reads,
    get,
    multipart,
    read_response,
    read_responses,
    read_until_closed,
    tcp,
    upload_head,
)
from tests.deploy.test_gunicorn import GunicornServer
from tests.support.server import LiveServer


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("timeouts") / "srv", **LIMITS).start(timeout=90)
    try:
        yield server
    finally:
        server.stop()


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
    the same connection are all answered with the checksum of the bytes sent. The body is
    under DIRECT_MIN_BYTES, else the app reads it from the socket, not the parts (that way has
    test_direct_body.py), and over uvicorn's HIGH_WATER_LIMIT, so the reading pauses."""
    data = small_fits(250)  # 244 KiB and a header block
    body = multipart(data, boundary="parts")
    assert HIGH_WATER_LIMIT < len(body) < DIRECT_MIN_BYTES
    want = hashlib.sha256(data).hexdigest()
    reads = direct_reads(srv)
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
    assert direct_reads(srv) == reads
