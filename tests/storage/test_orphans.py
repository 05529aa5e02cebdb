"""Stored files without a record are set aside at start-up, never deleted."""

from __future__ import annotations

import os
import time
from pathlib import Path

from caesar_rest.db.engine import make_engine, make_sessionmaker
from caesar_rest.db.migrate import upgrade
from caesar_rest.db.models import FileRecord
from caesar_rest.storage.orphans import ORPHANS, quarantine_orphans
from caesar_rest.timeutil import utcnow


def _file(path: Path, age: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"SIMPLE  = T")
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_old_unregistered_files_are_moved_aside(tmp_path: Path) -> None:
    data = tmp_path / "data"
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    registered = _file(data / "alice" / "a1.fits", age=7200)
    with sessions.begin() as s:
        s.add(
            FileRecord(
                id="a1",
                owner="alice",
                filename_orig="x.fits",
                fileext="fits",
                kind="image",
                size=11,
                sha256="0" * 64,
                relpath="alice/a1.fits",
                tag="",
                info={},
                created_at=utcnow(),
            )
        )
    orphan = _file(data / "alice" / "b2.fits", age=7200)
    fresh = _file(data / "bob" / "c3.fits", age=5)  # its record may be about to commit
    jobs = _file(data / "jobs" / "j1" / "out.txt", age=7200)  # a job folder kept in data
    loose = _file(data / "jobs" / "old.tar.gz", age=7200)
    partial = _file(data / ".incoming" / "h-1-x.part", age=7200)  # sweep_incoming's business

    moved = quarantine_orphans(data, sessions, grace=3600, keep=(data / "jobs",))

    assert moved == ["alice/b2.fits"]
    assert not orphan.exists() and (data / ORPHANS / "alice" / "b2.fits").is_file()
    assert registered.exists() and fresh.exists() and jobs.exists() and loose.exists()
    assert partial.exists()
    # A second start finds nothing more to do.
    assert quarantine_orphans(data, sessions, grace=3600, keep=(data / "jobs",)) == []
    engine.dispose()
