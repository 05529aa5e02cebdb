"""Engine and session factory.

SQLite runs in WAL mode with a busy timeout so that several API worker processes, the local
runner and the command-line tools can share one database file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from caesar_rest.errors import Unavailable
from caesar_rest.logconfig import get_logger

log = get_logger(__name__)

T = TypeVar("T")

#: Seconds a client is told to wait (``Retry-After``) when the database is busy or down.
RETRY_AFTER = 5


def make_engine(url: str, *, busy_timeout: float = 30.0, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` with the settings this service needs.

    ``busy_timeout`` is how long (s) a SQLite statement waits for another connection's write
    lock before it fails with "database is locked" (setting ``db_busy_timeout``).
    """
    if url.startswith("sqlite"):
        busy_ms = max(1, int(busy_timeout * 1000))
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": busy_timeout},
            pool_size=8,
            max_overflow=16,
            **kwargs,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
            # Let SQLAlchemy emit BEGIN itself so that transactions are real ones.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={busy_ms}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # IMMEDIATE takes the write lock at the start, so read-then-write transactions
            # (state transitions, job claims) cannot interleave between processes.
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    # pool_recycle instead of pool_pre_ping: a ping is one more round trip on every checkout.
    return create_engine(url, pool_recycle=1800, pool_size=10, max_overflow=20, **kwargs)


def write_first(session: Session) -> Connection:
    """Open a read-then-write transaction with SQLite's write lock taken at once.

    In WAL mode a transaction that reads and then writes fails at once with "database is
    locked" (the busy timeout does not apply) when another connection has written since its
    read began. ``BEGIN IMMEDIATE`` takes the write lock first, waiting for it under the busy
    timeout. Call it first in the transaction; elsewhere than SQLite it does nothing more than
    open the connection.

    Parameters
    ----------
    session
        A session whose transaction has not yet used its connection.

    Returns
    -------
    Connection
        The transaction's connection.
    """
    return session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Session factory; objects stay usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is the database being busy or out of reach, not a bad statement.

    SQLite's "database is locked" (a write lock held past the busy timeout) and PostgreSQL's
    refused, dropped or timed-out connections are ``OperationalError`` or ``InterfaceError``;
    any DBAPI error that invalidated its connection counts too. Trying again later may succeed.
    """
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def unavailable(exc: BaseException) -> Unavailable | None:
    """The 503 answer (with ``Retry-After``) for a busy or unreachable database, else None.

    The one mapping of database faults to HTTP: the API's handler of unexpected exceptions
    answers with it when it is not None.
    """
    if not is_transient(exc):
        return None
    return Unavailable(
        "The database is busy or unreachable; try again shortly",
        headers={"Retry-After": str(RETRY_AFTER)},
        retry_after=RETRY_AFTER,
    )


def retry_until_done(
    what: str,
    action: Callable[[], T],
    *,
    first: float = 0.2,
    longest: float = 5.0,
    keep_going: Callable[[], bool] = lambda: True,
) -> T:
    """Run ``action`` until it gets past the database's transient faults.

    A state write that must not be lost (a job's final state, its pid) runs here: each try is
    bounded by the busy timeout (or the connection timeout), and between tries the pause
    doubles from ``first`` to ``longest`` seconds. Other exceptions propagate at once, and so
    does the last transient one when ``keep_going()`` turns False (the service is stopping:
    the next start settles the job from its folder).

    Parameters
    ----------
    what
        What is written, for the log.
    action
        The write; it must be safe to repeat.
    first, longest
        The first and the longest pause between tries (s).
    keep_going
        Asked after each failed try.

    Returns
    -------
    T
        What ``action`` returned.
    """
    pause = first
    tries = 0
    while True:
        try:
            return action()
        except Exception as exc:
            if not is_transient(exc):
                raise
            tries += 1
            if not keep_going():
                raise
            log.warning("db_write_retry", what=what, tries=tries, pause=pause, error=str(exc))
            time.sleep(pause)
            pause = min(longest, pause * 2)


def db_error(exc: Exception) -> str:
    """One line saying why the database could not be opened (the driver's first line)."""
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    return lines[0] if lines else type(orig).__name__
