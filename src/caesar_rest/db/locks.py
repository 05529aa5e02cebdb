"""Locks shared by several processes: the monitor's per-backend pass lock, the job claim and
the per-user quota lock.

PostgreSQL advisory locks share one 64-bit key space; the keys in use (one table):

=========================================  ==============================================
key                                         held by
=========================================  ==============================================
``crc32("caesar-rest-monitor:<backend>")``  a reconciliation pass over one backend
``CLAIM_KEY`` (7426002)                     the local runner's claim of a QUEUED job
``crc32(owner) + USER_KEY_BASE``            a user's quota check (:func:`user_lock`)
=========================================  ==============================================

On SQLite a pass lock is a file lock beside the database file, and the claim and the quota check
are serialised by the write lock (``BEGIN IMMEDIATE``); an in-memory database is private to its
process.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, Engine, text

#: Advisory key of the local runner's claim transaction.
CLAIM_KEY = 7426002
#: Offset of the per-user keys, above every crc32 (the pass keys) and the claim key.
USER_KEY_BASE = 7_000_000_000


def pass_key(name: str) -> int:
    """The advisory key of backend ``name``'s reconciliation pass."""
    return zlib.crc32(f"caesar-rest-monitor:{name}".encode())


def claim_lock(conn: Connection) -> None:
    """Serialise job claims (PostgreSQL; on SQLite the write lock already does)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CLAIM_KEY})


def user_key(owner: str) -> int:
    """The advisory key of ``owner``'s quota checks."""
    return zlib.crc32(owner.encode()) + USER_KEY_BASE


def user_lock(conn: Connection, owner: str) -> None:
    """Serialise the quota checks of one user until the transaction ends.

    Parameters
    ----------
    conn
        The connection of a transaction that already holds SQLite's write lock
        (:func:`caesar_rest.db.engine.write_first`); PostgreSQL takes an advisory lock here.
    owner
        The user whose checks are serialised.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": user_key(owner)})


@contextlib.contextmanager
def pass_lock(engine: Engine, name: str, wait: float = 0.0) -> Iterator[bool]:
    """Try (for up to ``wait`` s) to take the reconciliation lock of backend ``name``.

    Yields
    ------
    bool
        Whether the lock was taken (always True for an in-memory database).
    """
    deadline = time.monotonic() + wait
    if engine.dialect.name == "postgresql":
        with _pg_lock(engine, pass_key(name), deadline) as got:
            yield got
        return
    db = engine.url.database
    if engine.dialect.name == "sqlite" and db and db != ":memory:":
        with _file_lock(Path(f"{db}.{name}.lock"), deadline) as got:
            yield got
        return
    yield True


@contextlib.contextmanager
def _pg_lock(engine: Engine, key: int, deadline: float) -> Iterator[bool]:
    with engine.connect() as conn:
        while True:
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
            conn.commit()
            if got or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        try:
            yield got
        finally:
            if got:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()


@contextlib.contextmanager
def _file_lock(path: Path, deadline: float) -> Iterator[bool]:
    with open(path, "a+b") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.1)
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
