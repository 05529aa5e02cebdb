"""PostgreSQL's notifications of job changes (migration 0006) and the feed that reads them: what
each write sends, and that a sync hands on every change committed before it, through a lost
connection too; the job list kept by notification is never older than a commit its client
saw return."""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import time
import warnings
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import pq
from sqlalchemy import Engine, delete, select, update

from caesar_rest.db import pgfeed
from caesar_rest.db.engine import make_engine
from caesar_rest.db.fastread import make_reader
from caesar_rest.db.joblist import JobListStore
from caesar_rest.db.migrate import migrate_to
from caesar_rest.db.models import JobRecord
from caesar_rest.db.pgfeed import ChangeFeed, Changes, conninfo, notifications_sent
from caesar_rest.jobs.listing import JobLister

from tests.support.job_rows import insert_jobs, job_row, jobs_engine, old_job_list


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    with jobs_engine(pg_url, [job_row("alice", i) for i in range(5)] + [job_row("bob", 0)]) as eng:
        yield eng


class Seen:
    """A feed's handler that keeps what it was handed."""

    def __init__(self) -> None:
        self.changes: list[Changes] = []

    def __call__(self, changes: Changes) -> None:
        self.changes.append(changes)

    def take(self) -> Changes:
        """Everything handed on since the last call, in one."""
        out = Changes()
        changes, self.changes = self.changes, []
        for c in changes:
            out.revs += c.revs
            out.owners |= c.owners
            out.every |= c.every
            out.reset |= c.reset
        return out


@pytest.fixture
def feed(engine: Engine) -> Iterator[tuple[ChangeFeed, Seen]]:
    seen = Seen()
    f = ChangeFeed(conninfo(engine), seen)
    assert f.sync() and seen.take().reset  # connected: everything before is unknown
    yield f, seen
    f.close()


def _revs(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(select(JobRecord.id, JobRecord.list_rev)).all())


def test_payloads() -> None:
    c = Changes()
    for payload in ("r 17 abc", "r -3 a b", "s alice", "s bob smith", "r x y"):
        c.add(payload)
    assert c.revs == [("abc", 17), ("a b", -3)] and c.owners == {"alice", "bob smith"}
    assert c.reset and not c.every  # "r x y" is not a revision: forget everything
    c = Changes()
    c.add("s")
    assert c.every and not c.reset
    c.add("x")
    assert c.reset


def test_what_each_write_sends(engine: Engine, feed: tuple[ChangeFeed, Seen]) -> None:
    f, seen = feed
    assert notifications_sent(engine)
    row = job_row("alice", 9)
    insert_jobs(engine, [row])
    jid = row["id"]
    assert f.sync()
    got = seen.take()
    assert got.revs == [(jid, _revs(engine)[jid])] and got.owners == {"alice"}
    with engine.begin() as conn:  # a change of a document only
        conn.execute(update(JobRecord).where(JobRecord.id == jid).values(message="m"))
    assert f.sync()
    got = seen.take()
    assert got.revs == [(jid, _revs(engine)[jid])] and not got.owners and not got.reset
    with engine.begin() as conn:  # moved to another owner: both lists change
        conn.execute(update(JobRecord).where(JobRecord.id == jid).values(owner="bob"))
    assert f.sync()
    got = seen.take()
    assert got.revs == [(jid, _revs(engine)[jid])] and got.owners == {"alice", "bob"}
    last = _revs(engine)[jid]
    with engine.begin() as conn:
        conn.execute(delete(JobRecord).where(JobRecord.id == jid))
    assert f.sync()
    got = seen.take()
    assert got.revs == [(jid, last + 1)] and got.owners == {"bob"}
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE jobs CASCADE")
    assert f.sync() and seen.take().reset
    assert f.sync() and seen.changes == []  # nothing more


def test_a_rolled_back_write_sends_nothing(engine: Engine, feed: tuple[ChangeFeed, Seen]) -> None:
    f, seen = feed
    with engine.connect() as conn:
        conn.execute(update(JobRecord).values(message="never"))
        conn.rollback()
    assert f.sync() and seen.changes == []


def test_every_commit_before_a_sync_is_handed_on(
    engine: Engine, feed: tuple[ChangeFeed, Seen]
) -> None:
    """No pause between the writer's commit and the sync: the change is there every time."""
    f, seen = feed
    jid = sorted(_revs(engine))[0]
    with psycopg.connect(conninfo(engine), autocommit=True) as writer:
        for i in range(200):
            (rev,) = writer.execute(
                "UPDATE jobs SET elapsed = %s WHERE id = %s RETURNING list_rev", (i, jid)
            ).fetchone()  # type: ignore[misc]
            assert f.sync()
            assert seen.take().revs == [(jid, rev)]


def test_concurrent_syncs_share_round_trips(engine: Engine, feed: tuple[ChangeFeed, Seen]) -> None:
    f, _ = feed
    before = f.round_trips
    results: list[bool] = []

    def ask() -> None:
        for _ in range(50):
            results.append(f.sync())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 400
    assert f.round_trips - before < 400  # callers waiting together shared a round trip


def _kill(engine: Engine, f: ChangeFeed) -> None:
    """End the feed's connection from the server side."""
    assert f._threads.pgconn is not None
    with engine.begin() as conn:
        conn.exec_driver_sql(f"SELECT pg_terminate_backend({f._threads.pgconn.backend_pid})")


def test_a_lost_connection_is_made_again_and_everything_forgotten(
    engine: Engine, feed: tuple[ChangeFeed, Seen]
) -> None:
    f, seen = feed
    _kill(engine, f)
    assert not f.sync() and not f.live  # the caller reads without the feed
    assert not f.sync()  # (the next attempt to connect waits RETRY_S)
    f._threads.retry_at = 0.0
    assert f.sync() and f.live and f.connects == 2
    assert seen.take().reset


def test_no_server_no_feed(engine: Engine) -> None:
    seen = Seen()
    f = ChangeFeed("postgresql://postgres@127.0.0.1:1/none?connect_timeout=2", seen)
    assert not f.sync() and not f.live and seen.changes == []
    f.close()


def test_lists_never_older_than_a_commit_seen(engine: Engine) -> None:
    """A writer commits a change, then the list is asked for at once: the answer shows it,
    every time; inserts and deletes too; after a lost connection as well."""
    lister = JobLister(JobListStore(make_reader(engine)), answers=False)
    assert lister.feed is not None
    other = make_engine(str(engine.url.render_as_string(hide_password=False)))
    try:
        first = lister.page("alice", 3)
        jid = first.body.decode().split('"job_id":"', 2)[1].split('"', 1)[0]
        for i in range(100):
            with other.begin() as conn:
                conn.execute(update(JobRecord).where(JobRecord.id == jid).values(message=f"#{i}"))
            assert f'"status":"#{i}"' in lister.page("alice", 3).body.decode()
            if i % 10 == 0:
                assert b"".join(lister.stream("alice")) == old_job_list(engine, "alice").encode()
        insert_jobs(other, [job_row("alice", 50)])
        assert b"".join(lister.stream("alice")) == old_job_list(engine, "alice").encode()
        with other.begin() as conn:
            conn.execute(delete(JobRecord).where(JobRecord.id == jid))
        assert jid.encode() not in lister.page("alice", 3).body
        assert lister.lists.hits > 0 and lister.feed.live
        _kill(engine, lister.feed)
        with other.begin() as conn:
            conn.execute(update(JobRecord).where(JobRecord.owner == "alice").values(elapsed=7.5))
        # The feed is gone: answers are read without it (and the reconnect waits RETRY_S).
        assert b"".join(lister.stream("alice")) == old_job_list(engine, "alice").encode()
    finally:
        other.dispose()
        lister.close()


def test_without_the_triggers_no_feed(engine: Engine) -> None:
    assert migrate_to(engine, "0005") == "0005"
    assert not notifications_sent(engine)
    lister = JobLister(JobListStore(make_reader(engine)))
    assert lister.feed is None
    assert migrate_to(engine, "head") == "0006" and notifications_sent(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE jobs DISABLE TRIGGER jobs_list_notify")
    assert JobLister(JobListStore(make_reader(engine))).feed is None


def test_the_event_loop_sync_hands_on_every_commit_before_it(
    engine: Engine, feed: tuple[ChangeFeed, Seen]
) -> None:
    """``sync_async``: its own connection, the same guarantee, round trips shared by the
    callers waiting together, a lost connection made again; another loop is refused."""
    f, seen = feed
    jid = sorted(_revs(engine))[0]

    async def run() -> None:
        assert await f.sync_async() and seen.take().reset  # its connection: a reset
        with psycopg.connect(conninfo(engine), autocommit=True) as writer:
            for i in range(100):
                (rev,) = writer.execute(
                    "UPDATE jobs SET elapsed = %s WHERE id = %s RETURNING list_rev", (i, jid)
                ).fetchone()  # type: ignore[misc]
                assert await f.sync_async()
                # (the drain may hand on the threads' connection's copies too, older ones)
                assert max(seen.take().revs) == (jid, rev)
        before = f.loop_round_trips
        assert await asyncio.gather(*(f.sync_async() for _ in range(20))) == [True] * 20
        assert f.loop_round_trips - before == 2  # one under way when the others asked, one after
        assert f._on_loop.pgconn is not None
        with engine.begin() as conn:
            conn.exec_driver_sql(f"SELECT pg_terminate_backend({f._on_loop.pgconn.backend_pid})")
        assert not await f.sync_async()
        f._on_loop.retry_at = 0.0
        assert await f.sync_async() and seen.take().reset

    asyncio.run(run())
    assert not asyncio.run(f.sync_async())  # not the loop that owns the connection


def test_notifications_nobody_asks_for_are_read(
    engine: Engine, feed: tuple[ChangeFeed, Seen]
) -> None:
    """The drain (the feed's thread, every DRAIN_S) reads both connections' waiting
    notifications: the threads' at once, the event loop's on its loop."""
    f, seen = feed
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    try:
        assert asyncio.run_coroutine_threadsafe(f.sync_async(), loop).result(30)
        seen.take()
        jid = sorted(_revs(engine))[0]
        with engine.begin() as conn:
            conn.execute(update(JobRecord).where(JobRecord.id == jid).values(message="d"))
        rev = _revs(engine)[jid]
        got: list[tuple[str, int]] = []
        deadline = time.monotonic() + 30
        while len(got) < 2:  # no sync asked for: the drain alone reads them
            assert time.monotonic() < deadline
            f.drain()
            time.sleep(0.01)
            got += seen.take().revs
        assert got == [(jid, rev), (jid, rev)]  # once a connection
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join()
        loop.close()


def test_the_feed_connection_gives_up_on_a_silent_network() -> None:
    # Timeouts and keepalives are added unless the URL sets its own.
    info = conninfo(make_engine("postgresql+psycopg://postgres@127.0.0.1:5432/x?keepalives_idle=7"))
    assert "connect_timeout=5" in info and "tcp_user_timeout=10000" in info
    assert "keepalives_idle=7" in info and "keepalives_idle=30" not in info
    assert info.startswith("postgresql://")


def test_a_stuck_round_trip_does_not_hold_other_callers(monkeypatch: pytest.MonkeyPatch) -> None:
    import caesar_rest.db.pgfeed as pgfeed

    monkeypatch.setattr(pgfeed, "ASYNC_TIMEOUT_S", 0.3)
    release = threading.Event()
    f = ChangeFeed("postgresql://postgres@127.0.0.1:1/none", lambda _c: None)
    monkeypatch.setattr(f, "_round_trip", lambda: release.wait(5) and False)
    first = threading.Thread(target=f.sync)
    first.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    assert f.sync() is False  # waited for the stuck one at most the timeout, then gave up
    assert time.monotonic() - t0 < 1.0
    release.set()
    first.join(5)


class Silent:
    """A listener that takes TCP connections and never answers (a server that hangs, as a
    connect timeout sees it): :meth:`ends` reads what each client sent, until its end."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=8)
        self.port = self.sock.getsockname()[1]

    def url(self, timeout: int) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/x?connect_timeout={timeout}"

    def ends(self, within: float) -> int:
        """How many clients connected and then closed their end, each within ``within`` s
        of this call (a client still connected fails the test)."""
        self.sock.setblocking(False)
        ended = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return ended
            with conn:
                conn.settimeout(within)
                while conn.recv(4096):  # the startup request, then the client's end
                    pass
                ended += 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def silent() -> Iterator[Silent]:
    server = Silent()
    yield server
    server.close()


def test_a_connect_that_times_out_leaves_nothing_open(
    silent: Silent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The threads' sync fails after the URL's ``connect_timeout`` (2 s, libpq's least),
    without holding the GIL meanwhile (libpq's blocking connect did: every thread, the
    event loop's too, stopped for the timeout); its attempt is closed."""
    f = ChangeFeed(silent.url(2), Seen())
    ticks = 0
    done = threading.Event()

    def tick() -> None:
        nonlocal ticks
        while not done.is_set():
            time.sleep(0.01)
            ticks += 1

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        t0 = time.monotonic()
        assert not f.sync() and not f.live
        took = time.monotonic() - t0
    finally:
        done.set()
        ticker.join()
        f.close()
    assert 1.8 < took < 5 and ticks > 50  # ~200 ticks of 10 ms in 2 s: the GIL was free
    assert silent.ends(within=1) == 1 and f.connects == 0


@pytest.mark.parametrize("loop_ends", [False, True], ids=["loop-goes-on", "loop-ends"])
def test_a_connect_the_loop_gives_up_is_closed_at_once(
    silent: Silent, monkeypatch: pytest.MonkeyPatch, loop_ends: bool
) -> None:
    """The event loop's round trip gives up (ASYNC_TIMEOUT_S) while its connection is being
    made: the attempt is closed then, not at the URL's longer connect_timeout nor left to
    the collector, whether the loop goes on or ends at once (``asyncio.run`` returns); the
    loop ran other tasks meanwhile."""
    monkeypatch.setattr(pgfeed, "ASYNC_TIMEOUT_S", 0.3)
    f = ChangeFeed(silent.url(30), Seen())
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def run() -> None:
        ticker = asyncio.create_task(tick())
        assert not await f.sync_async()  # given up after 0.3 s
        ticker.cancel()
        if not loop_ends:
            await asyncio.sleep(0.2)

    try:
        t0 = time.monotonic()
        asyncio.run(run())
        assert time.monotonic() - t0 < 2 and ticks > 10
        assert silent.ends(within=1) == 1 and f.connects == 0
    finally:
        f.close()


def _feed_backends(engine: Engine, name: str, expect: int = 0) -> int:
    """Server processes of connections named ``name`` (``application_name``): polled for at
    most 5 s until there are ``expect`` (a closed connection's process ends soon after)."""
    deadline = time.monotonic() + 5
    while True:
        with engine.connect() as conn:
            n = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %(n)s",
                {"n": name},
            ).scalar_one()
        if n == expect or time.monotonic() > deadline:
            return int(n)
        time.sleep(0.05)


def test_a_failure_after_connecting_closes_the_connection(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection is made, then its ``LISTEN`` fails (a channel name the server refuses):
    both connections' syncs return False (not an error), and nothing is left connected."""
    name = f"feed_test_{time.monotonic_ns()}"
    f = ChangeFeed(conninfo(engine) + f"&application_name={name}", Seen())
    monkeypatch.setattr(pgfeed, "CHANNEL", "not a channel")
    try:
        assert not f.sync() and not f.live
        assert not asyncio.run(f.sync_async())
        assert f.connects == 0 and _feed_backends(engine, name) == 0
        monkeypatch.undo()
        f._threads.retry_at = 0.0
        assert f.sync() and _feed_backends(engine, name, expect=1) == 1  # the next one connects
    finally:
        f.close()
    assert _feed_backends(engine, name) == 0


def test_a_drain_after_the_loop_closed_leaves_no_coroutine(
    engine: Engine, feed: tuple[ChangeFeed, Seen]
) -> None:
    """Notifications wait on the connection of a loop that has been closed: the drain closes
    that connection and leaves no coroutine un-awaited (no RuntimeWarning)."""
    f, _ = feed
    loop = asyncio.new_event_loop()
    assert loop.run_until_complete(f.sync_async())
    loop.close()
    with engine.begin() as conn:
        conn.execute(update(JobRecord).values(message="after the loop"))
    assert f._on_loop.pgconn is not None
    deadline = time.monotonic() + 10
    while not pgfeed._readable(f._on_loop.pgconn):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f.drain()
        gc.collect()
    assert [w for w in caught if issubclass(w.category, RuntimeWarning)] == []
    assert f._on_loop.pgconn is None  # its loop is gone: closed
    assert f.sync()  # the threads' connection is unaffected


def test_a_round_trip_without_an_answer_in_time_gives_the_connection_up(
    feed: tuple[ChangeFeed, Seen], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The threads' round trip waits on the socket at most ASYNC_TIMEOUT_S (here the socket
    never becomes ready): False, and the connection is closed, to be made again."""
    f, seen = feed
    pgconn = f._threads.pgconn
    assert pgconn is not None
    monkeypatch.setattr(pgfeed, "_wait", lambda sock, write, timeout: False)
    assert not f.sync() and not f.live
    assert pgconn.status == pq.ConnStatus.BAD  # finished
    monkeypatch.undo()
    f._threads.retry_at = 0.0
    assert f.sync() and f.live and seen.take().reset
