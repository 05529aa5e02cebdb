"""The HTTP server's read timeouts and connection limit (uvicorn, and gunicorn's uvicorn worker).

uvicorn bounds only the idle time between two requests on a kept-alive connection
(``timeout_keep_alive``). It has no limit on the time a client takes to send a request's line
and headers (a connection that sends nothing, or one byte now and then, is held forever) nor
on a pause in the middle of a request body. :class:`GuardedHttpProtocol` is uvicorn's
httptools protocol with three more timers and a connection limit, all read from the settings:

* ``header_timeout``: from the connection's start (on a kept-alive connection: from the next
  request's first byte) to the end of the request's headers; then the connection is closed
  (with a JSON 408 when part of a request had come).
* ``body_timeout``: the longest pause between two parts of a request body; then the request is
  answered with a JSON 408 and the connection closed. The app sees the client go away (as for
  a dropped connection), so a half-received upload leaves nothing behind. The timer does not
  run while the server itself holds the body back (the app has not asked for more yet, or the
  client waits for ``100 Continue``).
* ``max_connections``: open connections of this process; a request that comes on one more is
  answered with a JSON 503 and ``Connection: close``.

Large request bodies (an upload) can be read by the app from the connection itself: a request
with a ``Content-Length`` of at least :data:`DIRECT_MIN_BYTES` carries a :class:`DirectBody` in
its ASGI scope's extensions (under ``caesar_rest.storage.direct.DIRECT_BODY``). An app that
claims it before reading the body any other way reads the rest from the socket, in a worker
thread, in large blocks, without the HTTP parser and the ASGI receive queue in between; the
body timeout applies to every read, and at most :data:`DIRECT_SLOTS` bodies are read this way
at once (the others take the ordinary way). Not offered over TLS, nor for a chunked body. An
app that refuses such a body with part of it unread has its answer sent with ``Connection:
close``; the connection then lingers half-closed (:class:`_Linger`) so the client can read it.

``caesar-rest serve`` selects the protocol through uvicorn's ``http`` option; gunicorn through
the worker class :class:`UvicornWorker` (deploy/gunicorn/gunicorn.conf.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from typing import Any, cast

import httptools
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn_worker import UvicornWorker as _BaseUvicornWorker

from caesar_rest.logconfig import get_logger
from caesar_rest.settings import Settings, get_settings
from caesar_rest.storage.direct import DIRECT_BODY, DIRECT_THREADS, DirectSource

log = get_logger("caesar_rest.httpserver")

#: uvicorn's ``http`` option: the protocol by its import path (picklable for ``--workers N``).
PROTOCOL = "caesar_rest.httpserver:GuardedHttpProtocol"
#: Smallest declared body offered for direct reading (smaller ones gain nothing).
DIRECT_MIN_BYTES = 256 * 1024
#: Most bodies of one process read directly at once (each holds a thread while it reads).
DIRECT_SLOTS = 4
#: Longest pause in a directly read body when the body timeout is off (0): never unbounded.
DIRECT_IDLE_TIMEOUT = 300.0
#: A connection closed after its app refused a body it had not read to the end goes on
#: reading and dropping the rest for at most this long and this many bytes (after the answer
#: and a half-close), so that the client can read the answer before the close resets it.
LINGER_SECONDS = 2.0
LINGER_BYTES = 16 * 1024 * 1024
#: Most connections of this process lingering at once (one more is closed at once).
LINGER_MAX = 64


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn options of the timeouts and the connection limit.

    The connection limit is the protocol's own (its 503 is JSON), so uvicorn's
    ``limit_concurrency`` stays off.
    """
    return {"http": PROTOCOL, "timeout_keep_alive": settings.keep_alive_timeout}


def _answer(status: int, reason: str, message: str, extra: str = "") -> bytes:
    """A complete HTTP/1.1 answer with a JSON body that closes the connection."""
    body = json.dumps({"status": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n{extra}\r\n"
    )
    return head.encode("ascii") + body


_BUSY_BODY = json.dumps({"status": "Too many connections: try again later"}).encode()


async def _busy(scope: Any, receive: Any, send: Any) -> None:
    """ASGI app of a request over the connection limit: 503, and the connection is closed."""
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_BUSY_BODY)).encode()),
                (b"retry-after", b"1"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _BUSY_BODY})


class _PartsCycle(RequestResponseCycle):
    """uvicorn's request cycle with the body kept as the parts the parser gave (no copies).

    uvicorn appends each part of a request body to a ``bytearray`` and hands the app a
    ``bytes`` copy of it: two copies of every byte of an upload. Here the parts (``bytes``
    objects the HTTP parser made) are kept in a list with their total, and a ``receive()``
    hands on the one part there is as it is (the usual case: the app asks as the parts come),
    or several joined (one copy).
    """

    parts: list[bytes]
    buffered: int
    #: Body bytes the HTTP parser has handed on so far.
    seen: int
    #: The app has called receive() (then its body cannot be read directly any more).
    receiving: bool
    #: The body is being read directly (:class:`DirectBody`).
    direct: bool

    async def receive(self) -> Any:
        if self.direct:
            raise RuntimeError("the request body is being read from the connection directly")
        self.receiving = True
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False
        if not self.disconnected and not self.response_complete:
            self.flow.resume_reading()
            await self.message_event.wait()
            self.message_event.clear()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        parts = self.parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        self.parts = []
        self.buffered = 0
        return {"type": "http.request", "body": body, "more_body": self.more_body}


def _keep_parts(cycle: RequestResponseCycle) -> None:
    """Turn a new cycle into a :class:`_PartsCycle` (before its app task first runs)."""
    cycle.__class__ = _PartsCycle
    assert isinstance(cycle, _PartsCycle)
    cycle.parts = []
    cycle.buffered = 0
    cycle.seen = 0
    cycle.receiving = False
    cycle.direct = False


def _drop_body(protocol: HttpToolsProtocol, cycle: RequestResponseCycle, late: bool) -> None:
    """Give up on a request whose body will not all come, and close its connection.

    ``late`` (the body timeout): logged, and answered 408 where the app's answer has not
    started. The app's next receive() answers ``http.disconnect`` and its answer is dropped.
    """
    if late:
        path = cycle.scope.get("path")
        _late(protocol, "request_body_timeout", "body", not cycle.response_started, path=path)
    cycle.disconnected = True
    cycle.message_event.set()
    protocol.transport.close()


def _late(
    protocol: HttpToolsProtocol, event: str, what: str, answer: bool, **fields: object
) -> None:
    """Log ``event``: a request's ``what`` ("headers", "body") did not come in time; where
    ``answer``, write the JSON 408 that closes the connection."""
    log.info(event, client=_client(protocol.client), **fields)
    if answer:
        message = f"Request {what} not received in time"
        protocol.transport.write(_answer(408, "Request Timeout", message))


def _fresh_parser(protocol: HttpToolsProtocol) -> httptools.HttpRequestParser:
    """A new HTTP parser for ``protocol``, set up as uvicorn sets up its own."""
    parser = httptools.HttpRequestParser(protocol)
    with contextlib.suppress(AttributeError):  # httptools < 0.6.3
        parser.set_dangerous_leniencies(lenient_data_after_close=True)
    return parser


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The request's one ``Content-Length``, or None (none, several, chunked, not a number)."""
    lengths = [v for k, v in headers if k == b"content-length"]
    if len(lengths) != 1 or any(k == b"transfer-encoding" for k, _ in headers):
        return None
    value = lengths[0].strip()
    return int(value) if value.isdigit() else None


class DirectBody:
    """The rest of one request's body, for the app to read from the connection itself.

    Offered in the scope's extensions (:data:`DIRECT_BODY`); see the module's notes. The
    methods follow :class:`caesar_rest.storage.direct.DirectSource`: :meth:`claim` and
    :meth:`release` run in the event loop, :meth:`recv_into` in the reading thread.
    """

    #: Bodies of this process being read directly now.
    active = 0

    def __init__(self, protocol: GuardedHttpProtocol, cycle: _PartsCycle, length: int) -> None:
        self._protocol = protocol
        self._cycle = cycle
        self.length = length
        self.buffered: list[bytes] = []
        self.remaining = 0
        self._sock: socket.socket | None = None

    def _can_claim(self) -> bool:
        p, c = self._protocol, self._cycle
        return not (
            # No more than the reading threads: a claimed body must never wait for one.
            DirectBody.active >= min(DIRECT_SLOTS, DIRECT_THREADS)
            or self._sock is not None
            or p.cycle is not c  # a later request is parsed already (pipelined)
            or p.pipeline
            or c.receiving
            or not c.more_body  # all of it is here already
            or c.disconnected
            or c.response_started
            or p.transport.is_closing()
        )

    def claim(self) -> bool:
        """Take the connection over for the rest of the body (False: read it by ``receive``).

        Reading from the transport is paused, the body timer is stopped (the reads have
        their own timeout), a ``100 Continue`` the client waits for is sent.
        """
        if not self._can_claim():
            return False
        p, c = self._protocol, self._cycle
        raw = p.transport.get_extra_info("socket")
        if raw is None:
            return False
        try:
            fd = os.dup(raw.fileno())
        except OSError:
            return False
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)
            return False
        # A timeout keeps the (shared) descriptor non-blocking, as the event loop needs it.
        sock.settimeout(p.body_timeout if p.body_timeout > 0 else DIRECT_IDLE_TIMEOUT)
        p.flow.pause_reading()
        p._cancel_body_timer()
        if c.waiting_for_100_continue:
            p.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            c.waiting_for_100_continue = False
        self.buffered, c.parts, c.buffered = c.parts, [], 0
        self.remaining = self.length - c.seen
        self._sock = sock
        c.direct = True
        DirectBody.active += 1
        return True

    def interrupt(self) -> None:
        """Shut the connection's reading down: a read in progress (another thread's) ends at
        once, as do later ones (the upload is cancelled; the connection goes at release)."""
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)

    def recv_into(self, view: memoryview) -> int:
        """Read at most ``len(view)`` and at most :attr:`remaining` bytes into ``view``.

        Raises
        ------
        TimeoutError
            Nothing came for the body timeout.
        ConnectionError
            The client closed or reset the connection before the whole body came.
        """
        assert self._sock is not None
        n = self._sock.recv_into(view, min(len(view), self.remaining))
        if n == 0:
            raise ConnectionAbortedError("the client closed the connection in the body")
        self.remaining -= n
        return n

    def release(self, timed_out: bool, refused: bool = False) -> None:
        """Give the connection back to the server.

        With the whole body read, the connection goes on with a fresh HTTP parser (the old
        one still waits for the bytes read here) and reading resumes after the answer, as
        after any request. Where the app ``refused`` the body with part of it unread, its
        answer goes out with ``Connection: close`` and the connection then lingers
        (:class:`_Linger`). Else the connection is closed: the app's answer is dropped, and
        ``timed_out`` sends a 408 first, as the body timer does.
        """
        p, c = self._protocol, self._cycle
        sock, self._sock = self._sock, None
        if sock is None:
            return
        c.direct = False
        DirectBody.active -= 1
        log.info("request_body_read_directly", bytes=self.length - self.remaining, of=self.length)
        if self.remaining > 0 and refused and not timed_out and not p.transport.is_closing():
            c.keep_alive = False  # reading stays paused; the answer closes the connection
            p.linger_socket = sock
            return
        sock.close()
        if p.transport.is_closing():
            return
        if self.remaining == 0:
            p.parser = _fresh_parser(p)
            p._request_begun = False
            c.more_body = False
            c.message_event.set()
            return
        _drop_body(p, c, late=timed_out)


#: Where lingering connections read what they drop: one for all of them (they are read on
#: the event loop, one at a time, and the bytes are never looked at).
_DROPPED = bytearray(65536)


class _Linger:
    """A half-closed connection that reads and drops the rest of a refused body for a while.

    Closing a socket with unread bytes makes the kernel reset the connection, and a reset
    can reach the client before it has read the answer. So after the answer the connection's
    writing is shut down (the client sees the answer's end), and what still comes is read
    and dropped until the client closes, or :data:`LINGER_SECONDS` or :data:`LINGER_BYTES`
    are spent; then the socket is closed. At most :data:`LINGER_MAX` at once.
    """

    active = 0

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self.loop = loop
        self.sock = sock
        self.left = LINGER_BYTES
        self.timer: asyncio.TimerHandle | None = None
        self.reading = False

    def start(self) -> None:
        """Shut writing down and drop what comes (or close now, when too many linger)."""
        if _Linger.active >= LINGER_MAX:
            self.sock.close()
            return
        try:
            self.sock.setblocking(False)
            self.sock.shutdown(socket.SHUT_WR)
            self.loop.add_reader(self.sock.fileno(), self._read)
        except OSError:
            self.sock.close()
            return
        _Linger.active += 1
        self.reading = True
        self.timer = self.loop.call_later(LINGER_SECONDS, self.close)

    def _read(self) -> None:
        try:
            n = self.sock.recv_into(_DROPPED)
        except BlockingIOError:
            return
        except OSError:
            n = 0
        self.left -= n
        if n == 0 or self.left <= 0:
            self.close()

    def close(self) -> None:
        """Stop reading and close the socket (once)."""
        if not self.reading:
            return
        self.reading = False
        _Linger.active -= 1
        if self.timer is not None:
            self.timer.cancel()
        with contextlib.suppress(OSError, ValueError):
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body read timeouts and a connection limit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.header_timeout = settings.header_timeout
        self.body_timeout = settings.body_timeout
        self.max_connections = settings.max_connections
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        # Whether part of the current request has come (a 408 then makes sense to the client).
        self._request_begun = False
        #: The socket of a refused direct body, to linger once the answer has gone.
        self.linger_socket: socket.socket | None = None

    # --- timers ------------------------------------------------------------------------
    def _arm_header_timer(self) -> None:
        if self.header_timeout > 0 and self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _arm_body_timer(self) -> None:
        self._cancel_body_timer()
        if self.body_timeout > 0:
            self._body_timer = self.loop.call_later(self.body_timeout, self._body_late)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _headers_late(self) -> None:
        """The request line and headers did not come in time: close the connection."""
        self._header_timer = None
        if self.transport.is_closing():
            return
        begun = self._request_begun
        _late(self, "request_header_timeout", "headers", begun, begun=begun)
        self.transport.close()

    def _body_late(self) -> None:
        """The request body paused too long: answer 408 and close (the app sees a disconnect)."""
        self._body_timer = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None:
            return
        if self.flow.read_paused or cycle.waiting_for_100_continue:
            # The server holds the body back, not the client: wait for the app to read on.
            self._arm_body_timer()
            return
        _drop_body(self, cycle, late=True)

    # --- uvicorn protocol hooks --------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        self._cancel_body_timer()
        super().connection_lost(exc)
        sock, self.linger_socket = self.linger_socket, None
        if sock is not None:  # the answer is in the kernel's hands: now half-close
            _Linger(self.loop, sock).start()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True
        # On a kept-alive connection the headers' time starts with the request's first byte.
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        before = self.cycle
        if len(self.connections) > self.max_connections > 0:
            log.warning("connection_limit", connections=len(self.connections))
            app, self.app = self.app, _busy
            try:
                super().on_headers_complete()
            finally:
                self.app = app
        else:
            super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle is not before:  # a new request's cycle
            _keep_parts(cycle)
            length = _declared_length(self.headers)
            if length is not None and length >= DIRECT_MIN_BYTES and self.scheme == "http":
                assert isinstance(cycle, _PartsCycle)
                extensions = cast(dict[str, Any], self.scope.setdefault("extensions", {}))
                offer: DirectSource = DirectBody(self, cycle, length)  # mypy checks the fit
                extensions[DIRECT_BODY] = offer
        self._arm_body_timer()

    def on_body(self, body: bytes) -> None:
        # uvicorn's on_body, with the part kept as it is (_PartsCycle).
        cycle = self.cycle
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            return
        if isinstance(cycle, _PartsCycle):
            cycle.parts.append(body)
            cycle.buffered += len(body)
            cycle.seen += len(body)
            if cycle.buffered > HIGH_WATER_LIMIT:
                self.flow.pause_reading()
            cycle.message_event.set()
        else:
            super().on_body(body)
        self._arm_body_timer()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._cancel_body_timer()
        self._request_begun = False

    def handle_websocket_upgrade(self) -> None:
        self._cancel_header_timer()
        self._cancel_body_timer()
        super().handle_websocket_upgrade()


def _client(addr: tuple[str, int] | None) -> str | None:
    return f"{addr[0]}:{addr[1]}" if addr else None


class UvicornWorker(_BaseUvicornWorker):  # type: ignore[misc]
    """gunicorn's uvicorn worker with :class:`GuardedHttpProtocol`.

    The worker passes gunicorn's ``keepalive`` on as uvicorn's ``timeout_keep_alive``; the
    header and body timeouts and the connection limit come from the settings.
    """

    CONFIG_KWARGS = {"loop": "auto", "http": PROTOCOL}
