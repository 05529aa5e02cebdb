"""The user store under concurrent writes (SQLite, the embedded default)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import text

from caesar_rest.auth.oidc import Identity
from caesar_rest.auth.users import UserStore
from caesar_rest.db.engine import make_engine, make_sessionmaker
from caesar_rest.db.migrate import upgrade
from caesar_rest.settings import Settings


def test_read_then_write_transactions_survive_concurrent_writers(tmp_path: Path) -> None:
    # Another connection keeps committing writes while the store reads, then writes, users.
    # Without the write lock taken first, about a third of these calls failed at once with
    # "database is locked" (the busy timeout does not cover a stale read snapshot).
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    store = UserStore(Settings(datadir=tmp_path / "data"), sessions)
    store.set_limits("carol", 1, 1, 1)
    stop = threading.Event()
    writes: list[int] = []
    writer_errors: list[str] = []

    def writer() -> None:
        i = 0
        try:
            while not stop.is_set():
                with sessions.begin() as s:
                    s.execute(
                        text("UPDATE users SET quota_active_jobs = :v WHERE id = 'carol'"),
                        {"v": i},
                    )
                i += 1
                writes.append(i)
        except Exception as exc:  # noqa: BLE001 - reported below
            writer_errors.append(repr(exc))

    errors: list[str] = []
    t = threading.Thread(target=writer)
    t.start()
    try:
        # At least 300 rounds, and on until the writer has committed a few times alongside
        # (on a loaded machine its thread may start late or get little time).
        deadline = time.monotonic() + 20
        i = -1
        while i < 299 or (len(writes) <= 5 and time.monotonic() < deadline):
            i += 1
            try:
                store.set_limits("bob", i, 1, 1)
                store._touched.clear()  # touch writes at most once a minute otherwise
                store.touch(Identity(user_id=f"u{i % 7}", display_name="U", roles=frozenset()))
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(repr(exc))
    finally:
        stop.set()
        t.join()
        engine.dispose()
    assert errors == [] and writer_errors == []
    assert len(writes) > 5  # the writer did run alongside (dozens to hundreds of writes)
    assert store.limits("bob").bytes == i
