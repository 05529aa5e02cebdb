"""``GET /jobs`` answers served from the list cache stay right: any committed change to a job,
by this process, another engine or another process, shows in the next answer (SQLite: whole
answers kept; PostgreSQL: the ids of pages kept by notification, ``db/pgfeed``)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, update

from caesar_rest.db.engine import make_engine
from caesar_rest.db.models import JobRecord
from caesar_rest.jobs.listing import AnswerCache, JobLister

from tests.support.job_rows import insert_jobs, job_row, listing_client, old_job_list

API = "/caesar/api/v1.0"
ME = "alice"
N = 30


@pytest.fixture
def client(tmp_path: Path, db_url: str) -> Iterator[TestClient]:
    """The app (backends not started) with N jobs of alice and 3 of another user."""
    with listing_client(tmp_path, db_url, {ME: N, "bob": 3}, ME) as c:
        yield c


def _lister(client: TestClient) -> JobLister:
    lister: JobLister = client.app.state.ctx.job_lists  # type: ignore[attr-defined]
    return lister


def _answers(client: TestClient) -> tuple[bytes, bytes]:
    """The full list and the first page of 10, as sent."""
    full = client.get(f"{API}/jobs")
    page = client.get(f"{API}/jobs?limit=10")
    assert full.status_code == 200 and page.status_code == 200
    return full.content, page.content


def _check_fresh(client: TestClient, db_url: str) -> None:
    """Both answers equal the predecessor's list read now."""
    engine = client.app.state.ctx.engine  # type: ignore[attr-defined]
    full, page = _answers(client)
    expected = json.loads(old_job_list(engine, ME))
    assert json.loads(full) == expected
    assert json.loads(page) == expected[:10]


def test_repeated_answers_come_from_the_cache_with_the_same_bytes(
    client: TestClient, db_url: str
) -> None:
    lister = _lister(client)
    first = _answers(client)
    hits, lists_hits = lister.cache.hits, lister.lists.hits
    again = [_answers(client) for _ in range(3)]
    assert again == [first] * 3
    full = client.get(f"{API}/jobs")
    assert "content-length" not in full.headers  # still streamed (chunked) when cached
    if db_url.startswith("sqlite"):
        assert lister.cache.hits - hits == 7 and lister.cache.size == len(first[0]) + len(first[1])
    else:  # no whole answers on a database server: ids kept while notified unchanged
        assert lister.cache.hits == 0 and lister.cache.size == 0
        # Both answers on the event loop: its feed connection only.
        assert lister.feed is not None and lister.feed.connects == 1 and not lister.feed.live
        assert lister.lists.hits - lists_hits == 7 and lister.rows.misses == N


def test_changes_through_another_engine_show_at_once(client: TestClient, db_url: str) -> None:
    """Another engine (another pool of connections, as another server process has) inserts,
    updates and deletes jobs; every answer after each commit shows it."""
    _check_fresh(client, db_url)
    _answers(client)  # cached now (on SQLite)
    other = make_engine(db_url)
    try:
        insert_jobs(other, [job_row(ME, N + 1)])
        _check_fresh(client, db_url)
        first_id = json.loads(_answers(client)[1])[0]["job_id"]
        with other.begin() as conn:
            conn.execute(
                update(JobRecord)
                .where(JobRecord.id == first_id)
                .values(phase="ERROR", reason="failed", message="changed")
            )
        _check_fresh(client, db_url)
        assert json.loads(_answers(client)[1])[0]["status"] == "changed"
        with other.begin() as conn:
            conn.execute(delete(JobRecord).where(JobRecord.id == first_id))
        _check_fresh(client, db_url)
        # A change to another user's job or any other table also renews the answers.
        with other.begin() as conn:
            conn.execute(update(JobRecord).where(JobRecord.owner == "bob").values(message="x"))
        _check_fresh(client, db_url)
    finally:
        other.dispose()


def test_changes_through_the_service_engine_show_at_once(client: TestClient, db_url: str) -> None:
    engine = client.app.state.ctx.engine  # type: ignore[attr-defined]
    _answers(client)
    with engine.begin() as conn:
        conn.execute(update(JobRecord).where(JobRecord.owner == ME).values(elapsed=1.25))
    full, page = _answers(client)
    assert {d["elapsed_time"] for d in json.loads(full)} == {1.25}
    assert {d["elapsed_time"] for d in json.loads(page)} == {1.25}


WRITER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
with conn:
    conn.execute("UPDATE jobs SET message = 'from another process' WHERE owner = 'alice'")
conn.close()
"""


def test_a_change_by_another_process_shows_at_once(client: TestClient, db_url: str) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("the cache is SQLite's (PostgreSQL: covered by the engine test)")
    _answers(client)
    before = _lister(client).cache.hits
    assert _answers(client) and _lister(client).cache.hits == before + 2  # served cached
    path = db_url.removeprefix("sqlite:///")
    subprocess.run([sys.executable, "-c", WRITER, path], check=True, timeout=60)  # noqa: S603
    full, page = _answers(client)
    assert {d["status"] for d in json.loads(full)} == {"from another process"}
    assert {d["status"] for d in json.loads(page)} == {"from another process"}


def test_cache_budget_and_long_answers() -> None:
    cache = AnswerCache(max_bytes=100, max_entry=60)
    cache.put("a", 1, b"x" * 50, 50)
    cache.put("b", 1, b"y" * 40, 40)
    assert cache.get("a", 1) == b"x" * 50 and cache.size == 90
    cache.put("c", 1, b"z" * 30, 30)  # over budget: the least recently used ("b") goes
    assert cache.get("b", 1) is None and cache.get("a", 1) is not None and cache.size == 80
    cache.put("d", 1, b"w" * 61, 61)  # longer than an entry may be: not kept
    assert cache.get("d", 1) is None
    assert cache.get("a", 2) is None  # another marker: stale
    cache.put("e", None, b"v", 1)  # no marker: never kept
    assert cache.get("e", None) is None and cache.size == 80


def test_a_list_longer_than_an_entry_is_streamed_each_time(client: TestClient, db_url: str) -> None:
    lister = _lister(client)
    lister.cache.max_entry = 100
    chunks = list(lister.stream(ME, batch=7))
    assert len(chunks) == 2 + (N + 6) // 7 and lister.cache.size == 0
    assert list(lister.stream(ME, batch=7)) == chunks
