"""Uploads read from the connection itself (caesar_rest/httpserver.py ``DirectBody``), live.

A ``caesar-rest serve`` with the limits of test_timeouts.py and a 1 MiB upload limit; every
body here is over ``DIRECT_MIN_BYTES``, so the upload route reads it from the socket. Each
case checks the answer, what is stored, and that the connection goes on (or is closed) as on
the ordinary path.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from caesar_rest import httpserver
from caesar_rest.httpserver import DIRECT_MIN_BYTES, DIRECT_SLOTS, DirectBody

from tests.deploy.deploy_support import small_fits
from tests.deploy.raw_http import (
    LIMITS,
    assert_stalled_upload_408,
    direct_reads,
    files_in,
    get,
    multipart,
    read_response,
    read_responses,
    tcp,
    upload_head,
    wait_files,
)
from tests.support.server import LiveServer


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("direct") / "srv"
    server = LiveServer(root, CAESAR_REST_MAX_UPLOAD_MIB="1", **LIMITS).start(timeout=90)
    try:
        yield server
    finally:
        server.stop()


def test_uploads_read_directly_are_stored_intact(srv: LiveServer) -> None:
    """At once, in small pieces, with a request pipelined after it, and after
    ``Expect: 100-continue``: each stored with the checksum of the bytes sent, on one
    kept-alive connection that still answers afterwards."""
    data = small_fits(400)  # 625 KiB and a header block
    body = multipart(data, boundary="direct")
    assert len(body) >= DIRECT_MIN_BYTES
    want = hashlib.sha256(data).hexdigest()
    before = direct_reads(srv)
    known = files_in(srv.datadir)
    with tcp(srv)() as sock:
        sock.sendall(upload_head(len(body), boundary="direct") + body)
        status, _, answer = read_response(sock)
        assert status == 200 and json.loads(answer)["sha256"] == want, answer
        sock.sendall(upload_head(len(body), boundary="direct"))
        for i in range(0, len(body), 7919):
            sock.sendall(body[i : i + 7919])
        status, _, answer = read_response(sock)
        assert status == 200 and json.loads(answer)["sha256"] == want, answer
        sock.sendall(upload_head(len(body), boundary="direct") + body + get("/healthz"))
        (status, answer), (status2, _) = read_responses(sock, 2)
        assert status == 200 and json.loads(answer)["sha256"] == want, answer
        assert status2 == 200
        head = upload_head(len(body), boundary="direct")
        sock.sendall(head[:-2] + b"Expect: 100-continue\r\n\r\n")
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        status, _, answer = read_response(sock)
        assert status == 200 and json.loads(answer)["sha256"] == want, answer
        sock.sendall(get("/healthz"))
        assert read_response(sock)[0] == 200
    assert direct_reads(srv) - before == 4
    stored = [p for p in files_in(srv.datadir) - known if ".incoming" not in p.parts]
    assert len(stored) == 4
    assert {hashlib.sha256(p.read_bytes()).hexdigest() for p in stored} == {want}


def test_refused_uploads_leave_nothing_and_keep_the_connection(srv: LiveServer) -> None:
    """Over the 1 MiB limit (declared within it plus the framing allowance, so read), and a
    form cut before its closing boundary: 413 and 400, JSON, nothing kept, and the same
    connection answers the next request (the rest of the body was read and dropped)."""
    before = files_in(srv.datadir)
    reads = direct_reads(srv)
    over = multipart(small_fits(512), boundary="direct")  # 1 MiB + a header block
    cut = multipart(small_fits(400), boundary="direct")[: -len("--direct--\r\n")]
    with tcp(srv)() as sock:
        sock.sendall(upload_head(len(over), boundary="direct") + over)
        status, _, answer = read_response(sock)
        assert status == 413 and "limit" in json.loads(answer)["status"], answer
        sock.sendall(upload_head(len(cut), boundary="direct") + cut)
        status, _, answer = read_response(sock)
        assert status == 400 and "closing boundary" in json.loads(answer)["status"], answer
        sock.sendall(get("/healthz"))
        assert read_response(sock)[0] == 200
    assert direct_reads(srv) - reads == 2
    assert wait_files(srv.datadir, before) == before


def test_stalled_or_dropped_direct_upload_leaves_nothing(srv: LiveServer) -> None:
    """Half a large body, then silence: the JSON 408 after the body timeout and the connection
    closed; half a body, then the client closes: nothing kept either; the server goes on."""
    before = files_in(srv.datadir)
    assert_stalled_upload_408(tcp(srv), srv.datadir, side=400, boundary="direct")
    body = multipart(small_fits(400), boundary="direct")
    assert len(body) >= DIRECT_MIN_BYTES
    with tcp(srv)() as sock:
        sock.sendall(upload_head(len(body), boundary="direct") + body[: len(body) // 2])
        time.sleep(0.3)
    assert wait_files(srv.datadir, before) == before
    with tcp(srv)() as sock:
        sock.sendall(get("/healthz"))
        assert read_response(sock)[0] == 200


def test_refused_upload_with_a_long_rest_answers_and_closes(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A form refused at its start with 12 MiB still to come (more than the receiver drains):
    the JSON 400 with ``Connection: close`` reaches the client while it is still sending, then
    the server closes (after dropping what comes for a while); nothing is kept."""
    root = tmp_path_factory.mktemp("drain") / "srv"
    server = LiveServer(root, CAESAR_REST_MAX_UPLOAD_MIB="16", **LIMITS).start(timeout=90)
    try:
        head = b'--direct\r\nContent-Disposition: form-data; name="tag"\r\n\r\n'
        body = head + b"a" * (12 << 20)  # a form field far over its 64 KiB limit
        before = files_in(server.datadir)
        with tcp(server)() as sock:
            sock.sendall(upload_head(len(body), boundary="direct"))

            def send() -> None:
                with contextlib.suppress(OSError):
                    sock.sendall(body)

            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            status, headers, answer = read_response(sock)
            assert status == 400 and "too long" in json.loads(answer)["status"], answer
            assert headers["connection"] == "close"
            # A clean end (not a reset, which can destroy an answer not read yet).
            sock.settimeout(10)
            assert sock.recv(65536) == b""
            sender.join(10)
        assert direct_reads(server) == 1
        assert wait_files(server.datadir, before) == before
        with tcp(server)() as sock:
            sock.sendall(get("/healthz"))
            assert read_response(sock)[0] == 200
    finally:
        server.stop()


def test_uws_inline_image_read_directly(srv: LiveServer) -> None:
    """A UWS job created with its image inline (multipart): the image is read from the
    connection too and stored with its checksum."""
    data = small_fits(400)
    before = direct_reads(srv)
    r = httpx.post(
        f"{srv.url}/uws/jobs",
        data={"app": "sleep", "seconds": "0.1"},
        files={"file": ("inline.fits", data, "application/fits")},
        follow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 303, r.text
    assert direct_reads(srv) - before == 1
    with srv.client() as c:
        docs = [f for f in c.get("/fileids").json() if f["filename_orig"] == "inline.fits"]
    assert [f["sha256"] for f in docs] == [hashlib.sha256(data).hexdigest()]


class Stub:
    """Attributes given by name (the protocol, cycle, transport and flow of the unit tests)."""

    def __init__(self, **kw: object) -> None:
        self.__dict__.update(kw)


def stub_connection(sock: socket.socket | None) -> tuple[Stub, Stub, list[str]]:
    """A protocol and its cycle as :class:`DirectBody` sees them; the calls it made."""
    calls: list[str] = []
    transport = Stub(
        is_closing=lambda: False,
        get_extra_info=lambda name: sock if name == "socket" else None,
        write=lambda data: calls.append(f"write {data[:12]!r}"),
        close=lambda: calls.append("close"),
    )
    flow = Stub(pause_reading=lambda: calls.append("pause"))
    cycle = Stub(
        receiving=False,
        more_body=True,
        disconnected=False,
        response_started=False,
        waiting_for_100_continue=True,
        parts=[b"abc"],
        buffered=3,
        seen=3,
        direct=False,
        scope={"path": "/x"},
        message_event=Stub(set=lambda: calls.append("event")),
    )
    protocol = Stub(
        cycle=cycle,
        pipeline=[],
        transport=transport,
        flow=flow,
        body_timeout=0.5,
        client=None,
        parser=None,
        _request_begun=True,
        _cancel_body_timer=lambda: calls.append("untimed"),
    )
    return protocol, cycle, calls


def test_direct_body_claim_read_and_release() -> None:
    """claim() pauses the transport, sends the 100 Continue, takes the parsed part; the rest is
    read from the socket; release() with all read installs a fresh parser (keep-alive)."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        protocol, cycle, calls = stub_connection(ours)
        body = DirectBody(protocol, cycle, 10)  # type: ignore[arg-type]
        assert body.claim()
        assert calls == ["pause", "untimed", "write b'HTTP/1.1 100'"]
        assert body.buffered == [b"abc"] and cycle.parts == [] and body.remaining == 7
        assert DirectBody.active == 1 and not body.claim()  # once
        theirs.sendall(b"defghij")
        buf = bytearray(100)
        got = 0
        while body.remaining:
            got += body.recv_into(memoryview(buf)[got:])
        assert bytes(buf[:got]) == b"defghij"
        body.release(timed_out=False)
        assert DirectBody.active == 0 and protocol.parser is not None
        assert cycle.more_body is False and calls[-1] == "event" and "close" not in calls


def test_direct_body_released_early_closes() -> None:
    """Released before the whole body came: after a timeout a 408 and the connection closed;
    the app's answer is dropped (the cycle is disconnected)."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        protocol, cycle, calls = stub_connection(ours)
        body = DirectBody(protocol, cycle, 10)  # type: ignore[arg-type]
        assert body.claim()
        with pytest.raises(TimeoutError):
            body.recv_into(memoryview(bytearray(10)))
        body.release(timed_out=True)
        assert calls[-3:] == ["write b'HTTP/1.1 408'", "event", "close"]
        assert cycle.disconnected and DirectBody.active == 0


def test_direct_body_interrupt_ends_a_read_in_another_thread() -> None:
    """interrupt() (a cancelled upload) ends a read that waits for the client at once, with
    ConnectionError, long before the body timeout."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        protocol, cycle, _ = stub_connection(ours)
        protocol.body_timeout = 30
        body = DirectBody(protocol, cycle, 10)  # type: ignore[arg-type]
        assert body.claim()
        errors: list[BaseException] = []

        def read() -> None:
            try:
                body.recv_into(memoryview(bytearray(10)))
            except BaseException as exc:
                errors.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        time.sleep(0.2)
        start = time.monotonic()
        body.interrupt()
        reader.join(5)
        assert time.monotonic() - start < 1.0
        assert len(errors) == 1 and isinstance(errors[0], ConnectionError)
        body.release(timed_out=False)
        assert DirectBody.active == 0


def test_direct_body_refused_with_a_rest_lingers_after_the_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Released as refused with part of the body unread: the connection is kept for the
    app's answer, marked to close after it, and its socket handed to the linger; the linger
    half-closes, drops what comes and closes when the client does (or at its time limit)."""
    ours, theirs = socket.socketpair()
    with theirs:
        protocol, cycle, calls = stub_connection(ours)
        protocol.linger_socket = None
        cycle.keep_alive = True
        body = DirectBody(protocol, cycle, 10)  # type: ignore[arg-type]
        assert body.claim()
        body.release(timed_out=False, refused=True)
        lingering = protocol.linger_socket  # the claim's own descriptor of the connection
        assert cycle.keep_alive is False and isinstance(lingering, socket.socket)
        assert "close" not in calls and not cycle.disconnected and DirectBody.active == 0
        lingering.close()

        async def linger(close_client: bool) -> float:
            sock, peer = socket.socketpair()
            start = time.monotonic()
            httpserver._Linger(asyncio.get_running_loop(), sock).start()
            peer.settimeout(5)
            assert peer.recv(10) == b""  # half-closed: the client sees the answer's end
            peer.sendall(b"x" * 100_000)  # the rest of the body: read and dropped
            await asyncio.sleep(0.1)
            if close_client:
                peer.close()
            while sock.fileno() >= 0 and time.monotonic() - start < 5:
                await asyncio.sleep(0.02)
            peer.close()
            assert httpserver._Linger.active == 0
            return time.monotonic() - start

        monkeypatch.setattr(httpserver, "LINGER_SECONDS", 0.5)
        assert asyncio.run(linger(close_client=True)) < 0.4  # closed with the client
        assert 0.5 <= asyncio.run(linger(close_client=False)) < 2  # at the time limit
    ours.close()


def test_direct_body_declined(monkeypatch: pytest.MonkeyPatch) -> None:
    """No claim when the slots are taken, the app has read the body by receive(), all of the
    body is parsed already, or there is no socket."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        monkeypatch.setattr(DirectBody, "active", DIRECT_SLOTS)
        protocol, cycle, _ = stub_connection(ours)
        assert not DirectBody(protocol, cycle, 10).claim()  # type: ignore[arg-type]
        monkeypatch.setattr(DirectBody, "active", 0)
        for attr, value in (("receiving", True), ("more_body", False)):
            protocol, cycle, calls = stub_connection(ours)
            setattr(cycle, attr, value)
            assert not DirectBody(protocol, cycle, 10).claim()  # type: ignore[arg-type]
            assert calls == []
        protocol, cycle, _ = stub_connection(None)
        assert not DirectBody(protocol, cycle, 10).claim()  # type: ignore[arg-type]


def test_the_http_protocol_does_not_load_the_upload_stack() -> None:
    """The server's protocol knows the offer's names from caesar_rest.storage.direct: loading
    it loads neither the upload receiver nor python-multipart."""
    code = (
        "import sys, caesar_rest.httpserver; "
        "print(sorted(m for m in sys.modules if m.startswith("
        "('caesar_rest.storage.upload', 'python_multipart'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
