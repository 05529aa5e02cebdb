"""``GET /jobs``: the predecessor's full list (streamed, unchanged) and keyset pages with
``Link`` headers, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete

from caesar_rest.db.models import JobRecord
from caesar_rest.jobs.listing import DEFAULT_PAGE, MAX_PAGE

from tests.support.job_rows import BASE, insert_jobs, job_row, listing_client, old_job_list

API = "/caesar/api/v1.0"
ME, OTHER = "alice", "mallory"
N = 45
DOC_KEYS = [
    "job_id",
    "submit_date",
    "app",
    "job_inputs",
    "data_inputs",
    "metadata",
    "tag",
    "scheduler",
    "state",
    "status",
    "pid",
    "elapsed_time",
    "exit_code",
]
LINK = re.compile(r'<([^>]+)>; rel="(next|prev)"')


@pytest.fixture
def client(tmp_path: Path, db_url: str) -> Iterator[TestClient]:
    """The app (backends not started) with N jobs of alice and 5 of another user."""
    with listing_client(tmp_path, db_url, {ME: N, OTHER: 5}, ME) as c:
        yield c


def _engine(client: TestClient):  # type: ignore[no-untyped-def]
    return client.app.state.ctx.engine  # type: ignore[attr-defined]


def links(r: object) -> dict[str, str]:
    """``rel -> path?query`` of a response's ``Link`` header."""
    header = r.headers.get("link", "")  # type: ignore[attr-defined]
    return {rel: re.sub(r"^https?://[^/]+", "", url) for url, rel in LINK.findall(header)}


def walk(client: TestClient, first: str, rel: str = "next") -> list[list[str]]:
    """The pages (job ids) from ``first`` along ``rel`` links."""
    pages, url = [], first
    while url:
        r = client.get(url)
        assert r.status_code == 200, r.text
        pages.append([d["job_id"] for d in r.json()])
        url = links(r).get(rel, "")
        assert len(pages) <= N + 1
    return pages


def test_full_list_is_streamed_and_equals_the_old_output(client: TestClient) -> None:
    r = client.get(f"{API}/jobs")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert "content-length" not in r.headers  # streamed (chunked)
    assert "link" not in r.headers
    assert json.loads(r.content) == json.loads(old_job_list(_engine(client), ME))
    docs = r.json()
    assert len(docs) == N and [list(d) for d in docs] == [DOC_KEYS] * N
    # The predecessor's value types, the states all there, fields pinned for one job.
    assert {d["state"] for d in docs} == {
        "SUCCESS", "TIMED-OUT", "FAILURE", "CANCELED", "ABORTED", "RUNNING", "PENDING",
    }  # fmt: skip
    one = docs[3]
    assert one["submit_date"] == "2025-01-01T00:00:03.000757+00:00"
    assert (one["pid"], one["state"], one["exit_code"], one["elapsed_time"]) == (
        "1003",
        "CANCELED",
        0,
        0.1 + 3 / 7,
    )
    assert docs[0]["submit_date"] == "2025-01-01T00:00:00+00:00" and docs[0]["pid"] == "slurm-0"


def test_streamed_in_batches_equals_one_read(client: TestClient) -> None:
    lister = client.app.state.ctx.job_lists  # type: ignore[attr-defined]
    chunks = list(lister.stream(ME, batch=7))
    assert len(chunks) == 2 + (N + 6) // 7  # "[", one chunk per batch, "]"
    assert json.loads(b"".join(chunks)) == json.loads(old_job_list(_engine(client), ME))
    assert list(lister.stream("nobody", batch=7)) == [b"[", b"]"]


def test_walk_covers_every_job_once_in_order(client: TestClient) -> None:
    everyone = [d["job_id"] for d in json.loads(old_job_list(_engine(client), ME))]
    pages = walk(client, f"{API}/jobs?limit=10")
    assert [len(p) for p in pages] == [10, 10, 10, 10, 5]
    assert [j for p in pages for j in p] == everyone
    # Back from the last page along prev: the same pages.
    r = client.get(f"{API}/jobs?limit=10&cursor=" + _last_cursor(client, 10))
    back = walk(client, f"{API}/jobs?limit=10&cursor=" + _last_cursor(client, 10), "prev")
    assert r.json()[-1]["job_id"] == everyone[-1]
    assert [j for p in reversed(back) for j in p] == everyone[len(everyone) - sum(map(len, back)) :]
    # Newest first, and the default page size once paging.
    newest = walk(client, f"{API}/jobs?order=desc&limit=20")
    assert [j for p in newest for j in p] == everyone[::-1]
    assert len(client.get(f"{API}/jobs?order=asc").json()) == N  # default page: 100


def _last_cursor(client: TestClient, limit: int) -> str:
    """A cursor of the page that ends with the newest job (from the walk's last next link)."""
    url, last = f"{API}/jobs?limit={limit}", ""
    while url:
        r = client.get(url)
        url = links(r).get("next", "")
        last = url or last
    return last.split("cursor=")[1]


def test_link_headers(client: TestClient) -> None:
    r = client.get(f"{API}/jobs", params={"limit": 20})
    first = links(r)
    assert set(first) == {"next"} and first["next"].startswith(f"{API}/jobs?limit=20&cursor=")
    assert re.fullmatch(r'<http://testserver/[^>]+>; rel="next"', r.headers["link"])
    second = client.get(first["next"])
    assert set(links(second)) == {"next", "prev"}
    third = client.get(links(second)["next"])
    assert set(links(third)) == {"prev"} and len(third.json()) == 5
    # prev of the second page is the first page.
    assert client.get(links(second)["prev"]).json() == r.json()
    # A cursor without a limit: the default page size, which its links carry on.
    cursor = first["next"].split("cursor=")[1]
    r = client.get(f"{API}/jobs", params={"cursor": cursor})
    assert len(r.json()) == N - 20 and links(r)["prev"].startswith(
        f"{API}/jobs?limit={DEFAULT_PAGE}&cursor="
    )
    # One page holding everything: no links.
    whole = client.get(f"{API}/jobs", params={"limit": MAX_PAGE})
    assert len(whole.json()) == N and "link" not in whole.headers
    # offset still pages (the web page's request): its next link continues by cursor.
    r = client.get(f"{API}/jobs", params={"limit": 10, "offset": 30})
    ids = [d["job_id"] for d in r.json()]
    rest = walk(client, links(r)["next"])
    assert len(ids) + sum(map(len, rest)) == N - 30 and "prev" in links(r)


def test_pages_are_stable_under_inserts_and_deletes(client: TestClient) -> None:
    engine = _engine(client)
    before = [d["job_id"] for d in json.loads(old_job_list(engine, ME))]
    seen: list[str] = []
    url = f"{API}/jobs?limit=8"
    k = 0
    while url:
        r = client.get(url)
        seen += [d["job_id"] for d in r.json()]
        # New jobs arrive while the client walks (created now, so after every old one).
        insert_jobs(engine, [job_row(ME, 100 + k, BASE + timedelta(days=1, seconds=k))])
        k += 1
        url = links(r).get("next", "")
        assert k < 30
    assert seen[:N] == before and len(seen) == len(set(seen))
    assert len(seen) == N + k - 1  # the new ones at the end, each once (the last after the end)
    # A job deleted after its page was read does not shift the next page.
    r = client.get(f"{API}/jobs?limit=10")
    with engine.begin() as conn:
        conn.execute(delete(JobRecord).where(JobRecord.id.in_(before[:10])))
    assert [d["job_id"] for d in client.get(links(r)["next"]).json()] == before[10:20]


def _cursor(doc: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        "",
        "A" * 300,
        _cursor([1, "a", "n", "2025-01-01T00:00:00+00:00", "not-a-job-id"]),
        _cursor([2, "a", "n", "2025-01-01T00:00:00+00:00", "0" * 32]),
        _cursor([1, "x", "n", "2025-01-01T00:00:00+00:00", "0" * 32]),
        _cursor([1, "a", "n", "yesterday", "0" * 32]),
        _cursor([1, "a", "n", "2025-01-01T00:00:00", "0" * 32]),  # no offset
        _cursor({"k": 1}),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
    ids=lambda c: c[:12],
)
def test_bad_cursor_is_400_json(client: TestClient, cursor: str) -> None:
    r = client.get(f"{API}/jobs", params={"cursor": cursor})
    assert r.status_code == 400 and r.headers["content-type"] == "application/json"
    assert r.json()["status"].startswith("Invalid cursor")


def test_cursor_conflicts_and_limit_bounds(client: TestClient) -> None:
    nxt = links(client.get(f"{API}/jobs?limit=5"))["next"]
    cursor = nxt.split("cursor=")[1]
    for query, word in (
        (f"cursor={cursor}&offset=3", "offset"),
        (f"cursor={cursor}&order=desc", "order"),
        ("order=up", "order"),
        ("limit=0", "limit"),
        (f"limit={MAX_PAGE + 1}", "limit"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("offset=99999999999999999999999", "offset"),
    ):
        r = client.get(f"{API}/jobs?{query}")
        assert r.status_code == 400, (query, r.text)
        assert word in r.json()["status"], (query, r.json())
    assert len(client.get(f"{API}/jobs?limit=1").json()) == 1
    assert client.get(f"{API}/jobs?limit={MAX_PAGE}&offset=2147483647").json() == []


def test_pages_never_show_another_users_jobs(client: TestClient) -> None:
    theirs = {d["job_id"] for d in json.loads(old_job_list(_engine(client), OTHER))}
    mine = [j for p in walk(client, f"{API}/jobs?limit=7") for j in p]
    assert len(mine) == N and not theirs & set(mine)


def test_openapi_describes_the_parameters(client: TestClient) -> None:
    op = client.get("/openapi.json").json()["paths"][f"{API}/jobs"]["get"]
    params = {p["name"]: p["schema"] for p in op["parameters"]}
    assert params["limit"] == {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}
    assert params["order"]["enum"] == ["asc", "desc"] and "cursor" in params
    assert "Link" in op["responses"]["200"]["headers"] and "400" in op["responses"]
