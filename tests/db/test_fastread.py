"""The direct sqlite3 reader gives the rows an SQLAlchemy connection gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import bindparam, create_engine, insert, select

from caesar_rest.db.engine import make_engine
from caesar_rest.db.fastread import EngineReader, SQLiteReader, make_reader
from caesar_rest.db.migrate import upgrade
from caesar_rest.db.models import JobEvent, JobRecord

STATUS = select(
    JobRecord.id,
    JobRecord.owner,
    JobRecord.tag,
    JobRecord.options,
    JobRecord.exit_code,
    JobRecord.created_at,
    JobRecord.started_at,
    JobRecord.ended_at,
).where(JobRecord.id == bindparam("job_id"))
EVENTS = (
    select(JobEvent.at, JobEvent.from_phase, JobEvent.to_phase, JobEvent.message)
    .where(JobEvent.job_id == bindparam("job_id"))
    .order_by(JobEvent.id)
)


def test_reader_matches_sqlalchemy(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    upgrade(engine)
    t0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    with engine.begin() as conn:
        for i, tag in enumerate([{"run": "α", "n": 1}, None]):
            conn.execute(
                insert(JobRecord).values(
                    id=f"job{i}",
                    owner="ana",
                    app="sep",
                    options={"seedthr": 5.0},
                    tag=tag,
                    backend="local",
                    phase="COMPLETED",
                    message="done",
                    exit_code=0 if i == 0 else None,
                    time_limit=60,
                    reldir=f"job{i}",
                    created_at=t0,
                    started_at=t0 + timedelta(seconds=1) if i == 0 else None,
                    ended_at=None,
                    updated_at=t0,
                )
            )
        for k in range(3):
            conn.execute(
                insert(JobEvent).values(
                    job_id="job0", at=t0 + timedelta(seconds=k), to_phase="QUEUED", message=str(k)
                )
            )
    reader = SQLiteReader.for_engine(engine)
    assert reader is not None
    try:
        for job in ("job0", "job1", "missing"):
            with engine.connect() as conn:
                want = conn.execute(STATUS, {"job_id": job}).first()
                want_events = conn.execute(EVENTS, {"job_id": job}).all()
            got = reader.first(STATUS, {"job_id": job})
            assert (got is None) == (want is None)
            if want is not None:
                assert tuple(got) == tuple(want)
                assert got.tag == want.tag and got.created_at == want.created_at
            assert [tuple(e) for e in reader.all(EVENTS, {"job_id": job})] == [
                tuple(e) for e in want_events
            ]
        # A row written after the reader's connection was opened is seen (no stale snapshot).
        with engine.begin() as conn:
            conn.execute(
                insert(JobEvent).values(job_id="job0", at=t0, to_phase="EXECUTING", message="x")
            )
        assert len(reader.all(EVENTS, {"job_id": "job0"})) == 4
    finally:
        reader.close()
        engine.dispose()


def test_no_reader_for_memory_or_postgres(pg_url: str) -> None:
    memory = create_engine("sqlite://")
    assert SQLiteReader.for_engine(memory) is None
    assert isinstance(make_reader(memory), EngineReader)  # the engine itself, kept open
    engine = make_engine(pg_url)
    upgrade(engine)
    reader = make_reader(engine)
    try:
        assert SQLiteReader.for_engine(engine) is None
        # A server gets its own autocommit engine: one round trip a read, same rows.
        assert isinstance(reader, EngineReader) and not reader.inline
        assert reader.engine is not engine
        with reader.engine.connect() as conn:
            assert conn.connection.dbapi_connection.autocommit is True  # type: ignore[union-attr]
        now = datetime.now(UTC)
        with engine.begin() as conn:
            conn.execute(
                insert(JobRecord).values(
                    id="j",
                    owner="ana",
                    app="sep",
                    options={},
                    backend="local",
                    phase="QUEUED",
                    message="",
                    time_limit=60,
                    reldir="j",
                    created_at=now,
                    updated_at=now,
                )
            )
            conn.execute(
                insert(JobEvent).values(job_id="j", at=now, to_phase="QUEUED", message="m")
            )
        assert [e.message for e in reader.all(EVENTS, {"job_id": "j"})] == ["m"]
    finally:
        reader.close()
        engine.dispose()
