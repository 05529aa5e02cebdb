"""The job list assembled from documents kept by row revision sends the same bytes as the list
read and rendered whole (the code before the revisions), on edge values, after changes, on
SQLite and PostgreSQL; the row cache keeps to its budget."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, delete, update

from caesar_rest.db.fastread import make_reader
from caesar_rest.db.joblist import JobListStore
from caesar_rest.db.models import JobRecord
from caesar_rest.db.pgfeed import Changes
from caesar_rest.jobs.listing import JobLister, RowCache

from tests.support.job_rows import BASE, insert_jobs, job_row, jobs_engine, old_job_list

ME = "alice"

#: Values that JSON escaping, number formatting and NULL handling could get wrong.
MESSAGES = [
    'quotes " and \\ backslash',
    "ünïcode «guillemets» — dash",
    "astral 😀 𝄞",
    "controls \n\t\r\x01\x1f and DEL \x7f",  # (PostgreSQL text holds no NUL)
    "",
    "</script><b>&amp;",
]
INPUTS: list[Any] = [
    {"big": 10**30, "neg": -(2**63), "f": 0.1 + 0.2, "tiny": 1e-7, "huge": 1e300},
    {"negzero": -0.0, "s": 'é"\\\n', "list": [None, True, False], "emoji": "😀"},
    None,
    [],
    "just text",
    5,
]
TAGS: list[Any] = [None, "t", 'quote"tag', {"k": "ü"}, [1, 2.5, None], ""]
ELAPSED = [None, 0.0, 0.1 + 0.2, 1e-7, 1e16, 1.5e300, 31.5, float(2**53 + 1), -0.0, 12345.678901234]
EXIT = [None, 0, -9, 255, 2**31 - 1, 1]


def edge_rows(owner: str, n: int) -> list[dict[str, Any]]:
    """``n`` jobs of ``owner`` cycling through the edge values (and same-instant twins)."""
    rows = []
    for i in range(n):
        row = job_row(owner, i)
        row.update(
            message=MESSAGES[i % len(MESSAGES)],
            job_inputs=INPUTS[i % len(INPUTS)],
            tag=TAGS[(i // 2) % len(TAGS)],
            elapsed=ELAPSED[i % len(ELAPSED)],
            exit_code=EXIT[(i // 3) % len(EXIT)],
            pid=None if i % 3 else 2**31 - 1,
            backend_job_id='slurm-"7"\\' if i % 4 == 1 else row["backend_job_id"],
            input_file_id=None if i % 5 == 0 else row["input_file_id"],
            # Pairs created in the same microsecond (the id breaks the tie), some on the second.
            created_at=BASE + timedelta(seconds=i // 2, microseconds=0 if i % 3 else 250_001),
        )
        rows.append(row)
    return rows


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """The database with the edge jobs of alice and a few of bob's."""
    with jobs_engine(db_url, edge_rows(ME, 40) + edge_rows("bob", 4)) as eng:
        yield eng


def listers(engine: Engine) -> tuple[JobLister, JobLister]:
    """The lister by revision (no whole answers kept) and one that reads and renders every
    job, as the list did before revisions (and as it still does without the triggers)."""
    new = JobLister(JobListStore(make_reader(engine)), answers=False)
    old = JobLister(JobListStore(make_reader(engine)), answers=False)
    old.store.revisions = False
    assert new.store.revisions
    return new, old


def answers(lister: JobLister) -> list[bytes]:
    """The full list (in batches of 7 and of 1000), and pages along cursors both ways."""
    out = [b"".join(lister.stream(ME, 7)), b"".join(lister.stream(ME))]
    for descending in (False, True):
        page = lister.page(ME, 9, descending=descending)
        out.append(page.body)
        while page.next:
            page = lister.page(ME, 9, cursor=page.next)
            out += [page.body, str(page.next).encode(), str(page.prev).encode()]
        assert page.prev is not None
        back = lister.page(ME, 9, cursor=page.prev)
        out += [back.body, str(back.next).encode()]
    out.append(lister.page(ME, 5, offset=3).body)
    return out


def test_same_bytes_as_the_whole_rendering_on_edge_values(engine: Engine) -> None:
    new, old = listers(engine)
    expected = answers(old)
    assert answers(new) == expected  # every row rendered anew
    assert new.rows.misses == 40 and len(new.rows) == 40
    assert answers(new) == expected  # every row from its kept document
    assert new.rows.misses == 40
    assert json.loads(expected[0]) == json.loads(old_job_list(engine, ME))


def test_a_change_renders_only_that_job_again(engine: Engine) -> None:
    new, old = listers(engine)
    answers(new)
    ids = [d["job_id"] for d in json.loads(b"".join(new.stream(ME)))]
    misses = new.rows.misses
    with engine.begin() as conn:
        conn.execute(
            update(JobRecord)
            .where(JobRecord.id == ids[5])
            .values(message='changé "now"', elapsed=2.5, phase="ERROR", reason="timeout")
        )
    assert answers(new) == answers(old)
    assert new.rows.misses == misses + 1
    doc = json.loads(b"".join(new.stream(ME)))[5]
    assert (doc["status"], doc["elapsed_time"], doc["state"]) == ('changé "now"', 2.5, "TIMED-OUT")


def test_inserts_deletes_and_other_owners(engine: Engine) -> None:
    new, old = listers(engine)
    answers(new)
    ids = [d["job_id"] for d in json.loads(b"".join(new.stream(ME)))]
    with engine.begin() as conn:
        conn.execute(delete(JobRecord).where(JobRecord.id.in_(ids[10:13])))
        conn.execute(update(JobRecord).where(JobRecord.owner == "bob").values(message="x"))
    insert_jobs(engine, edge_rows(ME, 3))
    assert answers(new) == answers(old)
    listed = {d["job_id"] for d in json.loads(b"".join(new.stream(ME)))}
    assert len(listed) == 40 and not listed & set(ids[10:13])
    # A job moved to another owner is no longer listed, even with its document kept.
    with engine.begin() as conn:
        conn.execute(update(JobRecord).where(JobRecord.id == ids[0]).values(owner="bob"))
    assert ids[0] not in {d["job_id"] for d in json.loads(b"".join(new.stream(ME)))}
    assert answers(new) == answers(old)


def test_without_the_triggers_every_job_is_read_again(engine: Engine) -> None:
    """A database whose triggers are gone (dropped by hand, a table rebuilt) keeps revisions
    that no longer change: the store sees it and renders every job each time."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("DROP TRIGGER jobs_list_rev_insert")
            conn.exec_driver_sql("DROP TRIGGER jobs_list_rev_update")
        else:
            conn.exec_driver_sql("ALTER TABLE jobs DISABLE TRIGGER jobs_list_rev")
    lister = JobLister(JobListStore(make_reader(engine)), answers=False)
    assert not lister.store.revisions
    first = b"".join(lister.stream(ME))
    with engine.begin() as conn:
        conn.execute(update(JobRecord).where(JobRecord.owner == ME).values(message="later"))
    docs = json.loads(b"".join(lister.stream(ME)))
    assert first != b"".join(lister.stream(ME)) and {d["status"] for d in docs} == {"later"}
    assert len(lister.rows) == 0


def test_row_cache_budget() -> None:
    cache = RowCache(max_bytes=3 * (RowCache.OVERHEAD + 10))
    cache.put([("a", "t", "x" * 10, 1), ("b", "t", "y" * 10, 1), ("c", "t", "z" * 10, 1)])
    assert len(cache) == 3 and cache.size == 3 * (RowCache.OVERHEAD + 10)
    cache.put([("a", "t", "w" * 10, 2)])  # renewed: the old revision goes, same size
    assert cache.get(("a", 2)) == ("a", "t", "w" * 10, 2) and cache.get(("a", 1)) is None
    assert len(cache) == 3
    cache.put([("d", "t", "v" * 10, 1)])  # over budget: the oldest ("b") goes
    assert cache.get(("b", 1)) is None and cache.get(("c", 1)) is not None and len(cache) == 3
    assert cache.size == 3 * (RowCache.OVERHEAD + 10)


def test_owner_list_markers_are_bounded_and_never_repeat(engine: Engine) -> None:
    """The feed's handler counts list changes per owner: past ``MAX_OWNER_GENS`` owners (or
    on an every-owner change, a reset) the counts are dropped, and no marker handed out
    before comes back (a list kept under it would be served out of date)."""
    lister = JobLister(JobListStore(make_reader(engine)), answers=False)
    lister.MAX_OWNER_GENS = 3
    owners = [f"u{i}" for i in range(5)]
    seen = {o: [lister._list_marker(o)] for o in owners}
    changes = [Changes(owners={o}) for o in owners * 3] + [Changes(every=True), Changes(reset=True)]
    for change in changes:
        lister._changed(change)
        assert len(lister._owner_gens) <= lister.MAX_OWNER_GENS
        for o in owners:
            marker = lister._list_marker(o)
            if o in change.owners or change.every or change.reset:
                assert marker not in seen[o]  # a change renews the marker
            else:
                assert marker == seen[o][-1] or marker not in seen[o]  # never an old one
            seen[o].append(marker)
