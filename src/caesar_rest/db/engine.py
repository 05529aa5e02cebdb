"""Engine and session factory.

SQLite runs in WAL mode with a busy timeout so that several API worker processes, the local
runner and the command-line tools can share one database file.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` with the settings this service needs."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
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
            cur.execute("PRAGMA busy_timeout=30000")
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
