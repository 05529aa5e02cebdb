"""PostgreSQL's notifications of job changes (migration 0006), for the job list's memory.

SQLite tells a reader cheaply whether anything changed (``PRAGMA data_version``); PostgreSQL
has no such marker, so without this module every job-list answer costs a query round trip
and the read of its jobs' ids and revisions. Here the triggers of migration 0006 send a
notification for every job row written (which job's document is out of date, whose list
changed), and :class:`ChangeFeed` receives them on ``LISTEN`` connections of its own (one
for worker threads, one for the event loop, :meth:`ChangeFeed.sync_async`, which never
blocks the loop).

**The guarantee.** :meth:`ChangeFeed.sync` returns True only after it has handed on every
notification of every transaction that committed before the call began: it sends an empty
query on the listening connection and reads the notifications that come before its answer.
That holds because a committing transaction queues its notifications and signals the
listening server process before its ``COMMIT`` returns (notifying commits take one lock in
turn, so the queue is in commit order and holds nothing uncommitted ahead of them), and the
server process hands queued notifications to its client before it says it is ready for the
next query (PostgreSQL's ``PostgresMain``: pending notifications are sent before
``ReadyForQuery``). So content kept with the changes handed on up to a ``sync`` is at least
as new as every write that a client saw committed before its request reached the service.
Calls made while one round trip is under way wait for the next one (one round trip serves
every caller that was waiting when it began).

When the connection fails, :meth:`sync` returns False (the caller reads without its memory)
and the next attempt, at most every :data:`RETRY_S` seconds, connects and listens again and
then tells the handler to forget everything (notifications may have been missed meanwhile).
A thread reads the notifications that arrive while no list is asked for, so that they do not
pile up in the server's queue.

Every exchange with the server (the connect and ``LISTEN``, the empty query) is written once
as a generator that yields where it waits for a socket (:func:`_connecting`, :func:`_query`),
run in a thread by :func:`_waited` (``poll``, without the GIL) or on the loop by
:func:`_awaited`. libpq's blocking connect is not used: psycopg's binary ``PGconn.connect``
holds the GIL for the whole connect, so a slow server stopped every thread and the event loop
for up to ``connect_timeout``. An exchange that is given up closes what it made.
"""

from __future__ import annotations

import asyncio
import select
import threading
import time
import weakref
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TypeVar, cast

from psycopg import OperationalError, pq
from psycopg.pq.abc import PGconn
from sqlalchemy import Engine, text

from caesar_rest.logconfig import get_logger

log = get_logger(__name__)
T = TypeVar("T")
COMMAND_OK = pq.ExecStatus.COMMAND_OK
EMPTY_QUERY = pq.ExecStatus.EMPTY_QUERY

#: The channel of migration 0006's triggers.
CHANNEL = "caesar_rest_jobs"
#: Seconds between two attempts to connect again after the connection failed.
RETRY_S = 5.0
#: Seconds between two looks for notifications that arrived while nobody asked.
DRAIN_S = 1.0
#: Seconds a round trip (either connection's) may take before its connection is given up;
#: also a connect's bound where the URL sets no ``connect_timeout``.
ASYNC_TIMEOUT_S = 10.0

#: The notifying triggers (migration 0006); the store uses the feed only where they are on.
_TRIGGER_CHECK = (
    "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'jobs'::regclass AND tgenabled <> 'D' "
    "AND tgname IN ('jobs_list_notify', 'jobs_list_notify_truncate')"
)


@dataclass
class Changes:
    """The changes handed on by one round trip.

    Attributes
    ----------
    revs
        ``(job id, revision)``: documents of the job older than the revision are out of date.
    owners
        Owners whose list changed (jobs added, removed or moved).
    every
        Every owner's list changed.
    reset
        Everything is out of date, documents too (a ``TRUNCATE``, a connection made again).
    """

    revs: list[tuple[str, int]] = field(default_factory=list)
    owners: set[str] = field(default_factory=set)
    every: bool = False
    reset: bool = False

    def add(self, payload: str) -> None:
        """Add one notification's payload (see migration 0006)."""
        if payload.startswith("r "):
            parts = payload.split(" ", 2)
            if len(parts) == 3 and parts[1].lstrip("-").isdigit():
                self.revs.append((parts[2], int(parts[1])))
                return
        elif payload.startswith("s "):
            self.owners.add(payload[2:])
            return
        elif payload == "s":
            self.every = True
            return
        self.reset = True  # "x", or anything this version does not know


def notifications_sent(engine: Engine) -> bool:
    """Whether ``engine``'s database is PostgreSQL with migration 0006's triggers on."""
    if engine.dialect.name != "postgresql":
        return False
    with engine.connect() as conn:
        return bool(conn.execute(text(_TRIGGER_CHECK)).scalar_one() == 2)


#: libpq options of the feed's connections unless the URL sets them: a network that drops
#: silently fails a round trip in seconds instead of TCP's retransmission time (~15 min).
FEED_CONNECT_OPTIONS = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": str(int(ASYNC_TIMEOUT_S * 1000)),
}


def conninfo(engine: Engine) -> str:
    """The libpq connection string of ``engine``'s database (the driver name dropped, the
    :data:`FEED_CONNECT_OPTIONS` the URL does not set added)."""
    url = engine.url.set(drivername="postgresql")
    extra = {k: v for k, v in FEED_CONNECT_OPTIONS.items() if k not in url.query}
    return url.update_query_dict(extra).render_as_string(hide_password=False)


class _Line:
    """One listening connection of a :class:`ChangeFeed` and the tickets of its callers.

    Attributes
    ----------
    pgconn
        The connection (None: not made yet, or given up).
    retry_at
        Monotonic time before which no new connection is attempted.
    asked, done, ok
        Callers numbered in turn; the number the last round trip served, and the last that
        a successful one served.
    """

    def __init__(self) -> None:
        self.pgconn: PGconn | None = None
        self.retry_at = 0.0
        self.asked = 0
        self.done = 0
        self.ok = 0

    def due(self) -> bool:
        """Whether a connection may be attempted now (the next one then not before
        :data:`RETRY_S`)."""
        now = time.monotonic()
        if now < self.retry_at:
            return False
        self.retry_at = now + RETRY_S
        return True

    def served(self, upto: int, ok: bool) -> None:
        """A round trip that began when caller ``upto`` had asked has ended (``ok``: well)."""
        self.done = max(self.done, upto)
        if ok:
            self.ok = upto

    def drop(self) -> None:
        """Close the connection; the next attempt in :data:`RETRY_S`."""
        pgconn, self.pgconn = self.pgconn, None
        _finish(pgconn)
        self.retry_at = time.monotonic() + RETRY_S


class ChangeFeed:
    """``LISTEN`` connections to PostgreSQL and the round trips that read them: one for
    threads (:meth:`sync`), one for an event loop (:meth:`sync_async`), each made when
    first needed.

    Both connections run the same round trip (:func:`_empty_query`), the threads' waiting
    on its socket, the loop's awaiting it.

    Parameters
    ----------
    conninfo
        libpq connection string (:func:`conninfo`).
    handler
        Called with the :class:`Changes` of each round trip that brought any, before the
        round trip's callers return (the two connections' calls may overlap).
    """

    def __init__(self, conninfo: str, handler: Callable[[Changes], None]):
        self.conninfo = conninfo
        self.handler = handler
        #: The threads' connection (:meth:`sync`) and the event loop's (:meth:`sync_async`,
        #: used on that loop only).
        self._threads = _Line()
        self._on_loop = _Line()
        self._cv = threading.Condition()
        self._running = False
        self._closed = False
        self._drainer: threading.Thread | None = None
        #: Round trips made and connections made (both connections), round trips on the loop's.
        self.round_trips = 0
        self.connects = 0
        self.loop_round_trips = 0
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._atask: asyncio.Task[None] | None = None

    @property
    def live(self) -> bool:
        """Whether the listening connection is up (False before the first :meth:`sync`)."""
        return self._threads.pgconn is not None

    def sync(self) -> bool:
        """Hand on every change committed before this call; False where that failed.

        Thread-safe; a caller waits for a round trip that began after it called.
        """
        line = self._threads
        with self._cv:
            line.asked += 1
            ticket = line.asked
            deadline = time.monotonic() + ASYNC_TIMEOUT_S
            while line.done < ticket:
                if self._running:
                    # Bounded: a stuck round trip sends its waiters the old way (False).
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cv.wait(left)
                    continue
                self._running = True
                upto = line.asked
                self._cv.release()
                ok = False
                try:
                    ok = self._round_trip()
                finally:
                    self._cv.acquire()
                    self._running = False
                    line.served(upto, ok)
                    self._cv.notify_all()
            return line.ok >= ticket

    async def sync_async(self) -> bool:
        """:meth:`sync` for an event loop, on a connection of its own, without blocking it.

        Callers on the loop share round trips as in :meth:`sync`; each round trip is a task of
        its own (a caller that goes away does not leave the connection half-way through a
        query), given up after :data:`ASYNC_TIMEOUT_S` seconds. The first loop to call it
        owns the connection; on any other loop it returns False.
        """
        loop = asyncio.get_running_loop()
        if self._aloop is None:
            self._aloop = loop
        if self._closed or loop is not self._aloop:
            return False
        line = self._on_loop
        line.asked += 1
        ticket = line.asked
        while line.done < ticket:
            task = self._atask
            if task is None:
                task = self._atask = loop.create_task(self._async_round(line.asked))
            await asyncio.shield(task)
        return line.ok >= ticket

    async def _async_round(self, upto: int) -> None:
        ok = False
        try:
            ok = await asyncio.wait_for(self._async_round_trip(), ASYNC_TIMEOUT_S)
        except Exception as exc:  # a timeout, the driver's errors: the connection is given up
            self._lost(self._on_loop, repr(exc))
        finally:
            self._on_loop.served(upto, ok)
            self._atask = None
            if self._closed:
                self._on_loop.drop()

    async def _async_round_trip(self) -> bool:
        """:meth:`_round_trip` on the loop's connection, awaiting its socket (the connect
        too, :meth:`_aopen`)."""
        line = self._on_loop
        reset = line.pgconn is None
        if reset:
            if not line.due():
                return False
            if not self._attach(line, await self._aopen()):
                return False
        self.loop_round_trips += 1
        return self._hand_on(line, reset, await _awaited(_empty_query(self._begin(line))))

    def _round_trip(self) -> bool:
        """One empty query on the listening connection (connecting first where needed), and
        the notifications that came before its answer handed on. One at a time."""
        if self._closed:
            return False
        line = self._threads
        reset = line.pgconn is None
        if reset and not (line.due() and self._attach(line, self._open())):
            return False
        try:
            ok = _waited(_empty_query(self._begin(line)), ASYNC_TIMEOUT_S)
        except Exception as exc:  # a timeout, the driver's errors: the connection is given up
            self._lost(line, repr(exc))
            return False
        return self._hand_on(line, reset, ok)

    def _attach(self, line: _Line, pgconn: PGconn | None) -> bool:
        """``pgconn`` (None: the attempt failed) made ``line``'s connection; whether there
        is one."""
        if pgconn is None:
            return False
        line.pgconn = pgconn
        self._start_drainer()
        return True

    def _begin(self, line: _Line) -> PGconn:
        """``line``'s connection, a round trip counted."""
        assert line.pgconn is not None
        self.round_trips += 1
        return line.pgconn

    def _hand_on(self, line: _Line, reset: bool, ok: bool) -> bool:
        """The end of a round trip on either connection: where its empty query failed
        (``ok`` False), the connection given up; else the notifications that came before
        the answer handed on (where there are any, or with ``reset``: the connection is new,
        whatever happened before its ``LISTEN`` went unseen)."""
        pgconn = line.pgconn
        assert pgconn is not None
        if not ok:
            self._lost(line, pgconn.get_error_message().strip())
            return False
        changes = Changes(reset=reset)
        while (note := pgconn.notifies()) is not None:
            changes.add(note.extra.decode("utf-8", "replace"))
        if changes.revs or changes.owners or changes.every or changes.reset:
            self.handler(changes)
        return True

    @staticmethod
    def _lost(line: _Line, error: str) -> None:
        log.warning("job_feed_lost", error=error)
        line.drop()

    def _open(self) -> PGconn | None:
        """A new connection listening on :data:`CHANNEL`, made in this thread (waiting on
        its socket, the GIL free: libpq's blocking connect holds it, and would stop the event
        loop too), or None (the reason logged; what it made is closed)."""
        try:
            timeout = _connect_timeout(self.conninfo)
            pgconn = _waited(_connecting(self.conninfo), timeout)
        except Exception as exc:  # a refusal, a timeout, an unusable connection string
            log.warning("job_feed_unavailable", error=_reason(exc))
            return None
        self.connects += 1
        return pgconn

    async def _aopen(self) -> PGconn | None:
        """:meth:`_open` on the running loop, awaiting the socket. Where the caller gives up
        (a cancel), what was made is closed at once."""
        try:
            timeout = _connect_timeout(self.conninfo)
            pgconn = await asyncio.wait_for(_awaited(_connecting(self.conninfo)), timeout)
        except Exception as exc:  # a refusal, a timeout, an unusable connection string
            log.warning("job_feed_unavailable", error=_reason(exc))
            return None
        self.connects += 1
        return pgconn

    def _start_drainer(self) -> None:
        with self._cv:
            if self._drainer is None:
                self._drainer = threading.Thread(
                    target=_drain, args=(weakref.ref(self),), name="job-feed", daemon=True
                )
                self._drainer.start()

    def drain(self) -> None:
        """Read what waits unread on either connection (the event loop's on its loop)."""
        if _readable(self._threads.pgconn):
            self.sync()
        loop = self._aloop
        if loop is not None and loop.is_closed():
            # Nothing runs on a closed loop any more (a round trip of it neither): its
            # connection goes.
            self._on_loop.drop()
        elif loop is not None and self._atask is None and _readable(self._on_loop.pgconn):
            sync = self.sync_async()
            try:
                asyncio.run_coroutine_threadsafe(sync, loop)
            except RuntimeError:  # the loop closed meanwhile
                sync.close()  # never to run: closed, not left for the collector to warn of
                self._on_loop.drop()

    def close(self) -> None:
        """Close the connections; :meth:`sync` returns False from now on.

        The event loop's connection is closed here when no round trip of it is under way
        (or its loop is closed), else by that round trip's end.
        """
        with self._cv:
            self._closed = True
            while self._running:
                self._cv.wait()
            self._threads.drop()
        loop = self._aloop
        if self._atask is None or (loop is not None and loop.is_closed()):
            self._on_loop.drop()


def _drain(ref: weakref.ref[ChangeFeed]) -> None:
    """Read notifications that arrive while no list is asked for, until the feed is closed
    or gone (connecting again is left to the next list asked for)."""
    while True:
        time.sleep(DRAIN_S)
        feed = ref()
        if feed is None or feed._closed:
            return
        feed.drain()
        del feed


def _finish(pgconn: PGconn | None) -> None:
    if pgconn is not None:
        pgconn.finish()


#: What a step of a connection's exchange waits for: a socket, and whether until it can be
#: written (else read).
Wait = tuple[int, bool]


def _connect_timeout(conninfo: str) -> float:
    """Seconds a connect may take: the connection string's ``connect_timeout`` as libpq
    reads it (at least 2), else :data:`ASYNC_TIMEOUT_S`. libpq's nonblocking connect leaves
    the timeout to its caller."""
    opts = {o.keyword: o.val for o in pq.Conninfo.parse(conninfo.encode())}
    value = (opts.get(b"connect_timeout") or b"").decode()
    if value.strip().isdigit() and int(value) > 0:
        return float(max(2, int(value)))
    return ASYNC_TIMEOUT_S


def _reason(exc: Exception) -> str:
    return str(exc).strip() or repr(exc)


def _connecting(conninfo: str) -> Generator[Wait, None, PGconn]:
    """A nonblocking connection listening on :data:`CHANNEL`, made without waiting: it
    yields where it waits for a socket (the socket may change as libpq tries addresses) and
    returns the connection. Raises ``psycopg.OperationalError`` where it fails; whenever it
    does not return the connection (an error, or closed half-way by a caller that gave up),
    it closes it. Run by :func:`_waited` (threads) or :func:`_awaited` (the event loop)."""
    pgconn = pq.PGconn.connect_start(conninfo.encode())
    try:
        while pgconn.status != pq.ConnStatus.BAD:
            state = pgconn.connect_poll()
            if state == pq.PollingStatus.OK:
                break
            if state == pq.PollingStatus.FAILED:
                break
            yield pgconn.socket, state == pq.PollingStatus.WRITING
        if pgconn.status != pq.ConnStatus.OK:
            raise OperationalError(pgconn.get_error_message().strip() or "cannot connect")
        pgconn.nonblocking = 1
        if not (yield from _query(pgconn, f"LISTEN {CHANNEL}".encode(), COMMAND_OK)):
            raise OperationalError(pgconn.get_error_message().strip() or "LISTEN failed")
    except BaseException:  # GeneratorExit too: the caller gave up
        pgconn.finish()
        raise
    return pgconn


def _query(pgconn: PGconn, sql: bytes, expect: pq.ExecStatus) -> Generator[Wait, None, bool]:
    """One query on nonblocking ``pgconn``, without its waits (it yields them, as
    :func:`_connecting`); whether every result had status ``expect`` and the connection is
    sound. Raises the driver's errors. The notifications that came before the answer are
    then in ``pgconn.notifies()``."""
    pgconn.send_query(sql)
    while pgconn.flush():
        yield pgconn.socket, True
    ok = True
    while True:
        while pgconn.is_busy():
            yield pgconn.socket, False
            pgconn.consume_input()
        res = pgconn.get_result()
        if res is None:
            break
        ok = ok and res.status == expect
    return ok and pgconn.status == pq.ConnStatus.OK


def _empty_query(pgconn: PGconn) -> Generator[Wait, None, bool]:
    """The round trip of both connections: an empty query (:func:`_query`)."""
    return _query(pgconn, b"", EMPTY_QUERY)


def _waited(steps: Generator[Wait, None, T], timeout: float) -> T:
    """``steps`` run to its end in this thread, waiting on its sockets at most ``timeout``
    seconds in all (then :class:`TimeoutError`); closed where it does not end."""
    deadline = time.monotonic() + timeout
    try:
        sock, write = next(steps)
        while True:
            if not _wait(sock, write, deadline - time.monotonic()):
                raise TimeoutError(f"no answer from the server in {timeout} s")
            sock, write = steps.send(None)
    except StopIteration as end:
        return cast(T, end.value)
    finally:
        steps.close()


async def _awaited(steps: Generator[Wait, None, T]) -> T:
    """``steps`` run to its end on the running loop, awaiting its sockets; closed where it
    does not end (a cancel)."""
    try:
        sock, write = next(steps)
        while True:
            await _ready(sock, write)
            sock, write = steps.send(None)
    except StopIteration as end:
        return cast(T, end.value)
    finally:
        steps.close()


def _wait(sock: int, write: bool, timeout: float) -> bool:
    """Whether socket ``sock`` is readable (``write``: writable), or closed or in error,
    within ``timeout`` seconds (0: now)."""
    poller = select.poll()
    poller.register(sock, select.POLLOUT if write else select.POLLIN)
    return bool(poller.poll(max(0.0, timeout) * 1000))


async def _ready(sock: int, write: bool = False) -> None:
    """Until socket ``sock`` is readable (``write``: writable), on the running loop."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def ready() -> None:
        if not done.done():
            done.set_result(None)

    if write:
        loop.add_writer(sock, ready)
    else:
        loop.add_reader(sock, ready)
    try:
        await done
    finally:
        if write:
            loop.remove_writer(sock)
        else:
            loop.remove_reader(sock)


def _readable(pgconn: PGconn | None) -> bool:
    """Whether ``pgconn``'s socket has something to read (notifications, an error)."""
    if pgconn is None:
        return False
    try:
        return _wait(pgconn.socket, False, 0)
    except Exception:  # a closed or broken connection
        return True  # let a round trip find out
