"""``jobs.list_rev`` changes with every write, whoever makes it (migration 0005's triggers), on
SQLite and PostgreSQL; the store's (id, revision) reads and reads by id."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session

from caesar_rest.db.fastread import make_reader
from caesar_rest.db.joblist import JobListStore, ListKey, ListQuery, revisions_kept
from caesar_rest.db.models import JobRecord

from tests.support.job_rows import BASE, insert_jobs, job_row, jobs_engine


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    with jobs_engine(db_url, [job_row("alice", i) for i in range(6)] + [job_row("bob", 0)]) as eng:
        yield eng


def revs(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(select(JobRecord.id, JobRecord.list_rev)).all())


def test_every_write_gives_the_row_a_new_revision(engine: Engine) -> None:
    assert revisions_kept(engine)
    before = revs(engine)
    assert len(set(before.values())) == len(before)  # inserts: each its own revision
    alice = sorted(before)[0]
    # A Core update of a listed column, of an unlisted one, an ORM change, raw SQL.
    with engine.begin() as conn:
        conn.execute(update(JobRecord).where(JobRecord.id == alice).values(message="a"))
    after_core = revs(engine)
    assert after_core[alice] != before[alice]
    assert {k: v for k, v in after_core.items() if k != alice} == {
        k: v for k, v in before.items() if k != alice
    }
    with engine.begin() as conn:
        conn.execute(update(JobRecord).where(JobRecord.id == alice).values(run_requested=False))
    after_unlisted = revs(engine)[alice]
    assert after_unlisted != after_core[alice]
    with Session(engine) as s, s.begin():
        job = s.get(JobRecord, alice)
        assert job is not None
        job.elapsed = 9.5
    after_orm = revs(engine)[alice]
    assert after_orm != after_unlisted
    with engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE jobs SET tag = NULL WHERE id = '{alice}'")
    assert revs(engine)[alice] != after_orm


def test_a_job_inserted_again_under_its_id_gets_another_revision(engine: Engine) -> None:
    row = job_row("alice", 99)
    insert_jobs(engine, [row])
    first = revs(engine)[row["id"]]
    with engine.begin() as conn:
        conn.execute(delete(JobRecord).where(JobRecord.id == row["id"]))
    insert_jobs(engine, [row])
    assert revs(engine)[row["id"]] != first


def test_keys_follow_the_page_order_and_by_id_keeps_to_the_owner(engine: Engine) -> None:
    store = JobListStore(make_reader(engine))
    rows = store.page(ListQuery("alice", 10))
    current = revs(engine)
    assert store.keys(ListQuery("alice", 10)) == [(r[0], current[r[0]]) for r in rows]
    after = ListKey(BASE + timedelta(seconds=2), rows[2][0])
    assert [k for k, _ in store.keys(ListQuery("alice", 2, after))] == [
        r[0] for r in store.page(ListQuery("alice", 2, after))
    ]
    assert [k for k, _ in store.keys(ListQuery("alice", 3, descending=True, offset=1))] == [
        r[0] for r in store.page(ListQuery("alice", 3, descending=True, offset=1))
    ]
    bob = next(k for k in current if k not in {r[0] for r in rows})
    found = store.by_id("alice", [rows[1][0], rows[4][0], bob, "f" * 32])
    assert sorted(found) == sorted((r, current[r[0]]) for r in (rows[1], rows[4]))
