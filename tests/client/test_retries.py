"""The client's fault handling against a small local stub server: retries on 429 (with
Retry-After) and 503, connection errors, no retry of POST, and downloads resumed with Range."""

from __future__ import annotations

import json
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from caesar_rest.client import CaesarClient, CaesarError, RetryPolicy
from caesar_rest.client.core import retry_after

from tests.support.server import free_port

#: What the stub does for one request.
Action = Callable[["_Handler"], None]
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, every offset distinguishable
ETAG = '"v1"'
RESULTS = {
    "results": [
        {"id": "catalog", "href": "/files/catalog.vot", "size": len(PAYLOAD), "mimeType": "x/y"}
    ]
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Stub

    def _any(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        self.server.seen.append(
            (self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
        )
        action = self.server.plan.popleft() if self.server.plan else self.server.default
        action(self)

    do_GET = do_POST = do_DELETE = _any

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Stub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.plan: deque[Action] = deque()
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.default: Action = answer(200, {"apps": [], "details": []})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def answer(status: int, body: object, headers: dict[str, str] | None = None) -> Action:
    data = json.dumps(body).encode()

    def act(h: _Handler) -> None:
        h.send(status, data, {"Content-Type": "application/json", **(headers or {})})

    return act


def cut_after(keep: int, start: int = 0) -> Action:
    """Promise the whole file (from ``start``), send ``keep`` bytes, then drop the connection."""

    def act(h: _Handler) -> None:
        rest = PAYLOAD[start:]
        h.send_response(206 if start else 200)
        h.send_header("Content-Length", str(len(rest)))
        h.send_header("ETag", ETAG)
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        h.end_headers()
        h.wfile.write(rest[:keep])
        h.wfile.flush()
        h.close_connection = True
        h.connection.shutdown(socket.SHUT_RDWR)

    return act


def ranged(h: _Handler) -> None:
    """Serve PAYLOAD, honouring ``Range: bytes=N-`` when ``If-Range`` matches the ETag."""
    spec = h.headers.get("range")
    if spec and h.headers.get("if-range", ETAG) == ETAG:
        start = int(spec.removeprefix("bytes=").split("-")[0])
        h.send(
            206,
            PAYLOAD[start:],
            {"ETag": ETAG, "Content-Range": f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}"},
        )
    else:
        h.send(200, PAYLOAD, {"ETag": ETAG})


@pytest.fixture
def stub() -> Iterator[_Stub]:
    srv = _Stub()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _client(url: str, pauses: list[float], attempts: int = 4) -> CaesarClient:
    policy = RetryPolicy(attempts=attempts, backoff=0.25, max_delay=5.0)
    return CaesarClient(url, retry=policy, sleep=pauses.append)


def test_429_honours_retry_after_and_503_backs_off(stub: _Stub) -> None:
    stub.plan.extend(
        [
            answer(429, {"status": "slow down"}, {"Retry-After": "3"}),
            answer(503, {"status": "busy"}),
            answer(503, {"status": "busy"}),
        ]
    )
    pauses: list[float] = []
    with _client(stub.url, pauses) as c:
        assert c.apps() == []
    assert pauses == [3.0, 0.5, 1.0]  # Retry-After, then the backoff of tries 2 and 3
    assert len(stub.seen) == 4


def test_retries_are_bounded(stub: _Stub) -> None:
    stub.default = answer(503, {"status": "down for maintenance"}, {"Retry-After": "600"})
    pauses: list[float] = []
    with _client(stub.url, pauses, attempts=3) as c, pytest.raises(CaesarError) as err:
        c.apps()
    assert err.value.status == 503 and err.value.message == "down for maintenance"
    assert pauses == [5.0, 5.0]  # Retry-After cut to max_delay
    assert len(stub.seen) == 3


def test_post_is_not_retried(stub: _Stub) -> None:
    stub.default = answer(503, {"status": "busy"})
    pauses: list[float] = []
    with _client(stub.url, pauses) as c, pytest.raises(CaesarError) as err:
        c.cancel("a" * 32)
    assert err.value.status == 503 and pauses == [] and len(stub.seen) == 1


def test_connection_errors_are_retried() -> None:
    pauses: list[float] = []
    with (
        _client(f"http://127.0.0.1:{free_port()}", pauses, attempts=3) as c,
        pytest.raises(CaesarError, match="cannot reach"),
    ):
        c.apps()
    assert pauses == [0.25, 0.5]
    never: list[float] = []
    with (
        _client(f"http://127.0.0.1:{free_port()}", never, attempts=1) as c,
        pytest.raises(CaesarError, match="cannot reach"),
    ):
        c.apps()
    assert never == []


def test_cut_download_resumes_with_range(stub: _Stub, tmp_path: Path) -> None:
    stub.plan.extend([answer(200, RESULTS), cut_after(300_000), cut_after(200_000, 300_000)])
    stub.default = ranged
    pauses: list[float] = []
    seen: list[int] = []
    with _client(stub.url, pauses) as c:
        (path,) = c.download("j1", tmp_path, progress=lambda rid, done, total: seen.append(done))
    assert path == tmp_path / "catalog" and path.read_bytes() == PAYLOAD
    ranges = [h.get("range") for m, p, h in stub.seen if p.startswith("/files/")]
    assert ranges == [None, "bytes=300000-", "bytes=500000-"]
    if_range = [h.get("if-range") for m, p, h in stub.seen if p.startswith("/files/")]
    assert if_range == [None, ETAG, ETAG]
    assert seen[-1] == len(PAYLOAD) and seen == sorted(seen)
    assert len(pauses) == 2 and not list(tmp_path.glob(".*.part"))


def test_changed_file_is_fetched_whole(stub: _Stub, tmp_path: Path) -> None:
    """When the server answers a resumed request with 200 (the file changed), the part is
    dropped and the whole body kept, not spliced."""
    stub.plan.extend([answer(200, RESULTS), cut_after(100_000)])

    def whole(h: _Handler) -> None:
        h.send(200, PAYLOAD, {"ETag": '"v2"'})

    stub.default = whole
    with _client(stub.url, []) as c:
        (path,) = c.download("j1", tmp_path)
    assert path.read_bytes() == PAYLOAD


def test_download_gives_up_and_the_next_client_resumes(stub: _Stub, tmp_path: Path) -> None:
    """A download given up keeps its part and what resuming needs; a new client (a later run)
    asks for the rest with Range and If-Range and gets the whole file."""
    stub.plan.append(answer(200, RESULTS))
    stub.default = cut_after(1000)
    pauses: list[float] = []
    with _client(stub.url, pauses, attempts=2) as c, pytest.raises(CaesarError) as err:
        c.download("j1", tmp_path)
    # The stub answers the second (ranged) try with the whole file again: its 1000 bytes stay.
    assert len(pauses) == 1 and "1000 bytes kept" in str(err.value)
    (part,) = tmp_path.glob(".catalog.*.part")
    assert part.read_bytes() == PAYLOAD[:1000]
    stub.plan.append(answer(200, RESULTS))
    stub.default = ranged
    stub.seen.clear()
    with _client(stub.url, []) as c:
        (path,) = c.download("j1", tmp_path)
    assert path.read_bytes() == PAYLOAD and sorted(p.name for p in tmp_path.iterdir()) == [
        "catalog"
    ]
    (get,) = [h for m, p, h in stub.seen if p.startswith("/files/")]
    assert (get.get("range"), get.get("if-range")) == ("bytes=1000-", ETAG)


def test_part_longer_than_the_file_restarts(stub: _Stub, tmp_path: Path) -> None:
    """A part the server cannot continue (416: the file is now shorter) is fetched whole."""
    stub.plan.extend([answer(200, RESULTS), cut_after(5000)])
    with _client(stub.url, [], attempts=1) as c, pytest.raises(CaesarError):
        c.download("j1", tmp_path)

    def too_far(h: _Handler) -> None:
        h.send(416, b"{}", {"Content-Range": f"bytes */{len(PAYLOAD)}"})

    stub.plan.extend([answer(200, RESULTS), too_far])
    stub.default = ranged
    stub.seen.clear()
    with _client(stub.url, [], attempts=1) as c:
        (path,) = c.download("j1", tmp_path)
    assert path.read_bytes() == PAYLOAD and len(list(tmp_path.iterdir())) == 1
    ranges = [h.get("range") for m, p, h in stub.seen if p.startswith("/files/")]
    assert ranges == ["bytes=5000-", None]


def test_retry_after_forms() -> None:
    def header(value: str) -> float | None:
        return retry_after(httpx.Response(429, headers={"Retry-After": value}))

    assert header("7") == 7.0
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25.0 <= (header(soon) or 0.0) <= 30.0
    assert header("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # past
    assert header("soon") is None
    assert retry_after(httpx.Response(429)) is None
    assert RetryPolicy(backoff=1.0, max_delay=3.0).delay(3) == 3.0
