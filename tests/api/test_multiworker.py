"""Several API worker processes share one database (SQLite and PostgreSQL)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.support.server import LiveServer, wait_state


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def exercise(srv: LiveServer, image: Path) -> None:
    with srv.client() as c:
        with ThreadPoolExecutor(4) as pool:
            ids = list(
                pool.map(
                    lambda _: c.post(
                        "/upload", files={"file": ("img.fits", image.read_bytes())}
                    ).json()["uuid"],
                    range(4),
                )
            )
        assert len(set(ids)) == 4
        assert {f["fileid"] for f in c.get("/fileids").json()} == set(ids)

        def submit(i: int) -> str:
            r = c.post(
                "/job",
                json={"app": "sleep", "job_inputs": {"seconds": 0.6}, "data_inputs": ids[i % 4]},
            )
            assert r.status_code == 202, r.text
            return str(r.json()["job_id"])

        with ThreadPoolExecutor(6) as pool:
            jobs = list(pool.map(submit, range(8)))
        spans = []
        for j in jobs:
            st = wait_state(c, j, {"SUCCESS", "FAILURE"}, timeout=90)
            assert st["state"] == "SUCCESS", st
            spans.append(
                (datetime.fromisoformat(st["start_date"]), datetime.fromisoformat(st["end_date"]))
            )
        # The concurrency limit (2) holds across both worker processes.
        assert max_overlap(spans) <= 2
        listed = c.get("/jobs").json()
        assert sorted(j["job_id"] for j in listed) == sorted(jobs)
    # Request metrics are summed over both worker processes, whichever answers the scrape.
    text = httpx.get(f"{srv.url}/metrics").text
    uploads = [
        line
        for line in text.splitlines()
        if line.startswith(
            'caesar_http_requests_total{method="POST",route="/caesar/api/v1.0/upload",status="200"}'
        )
    ]
    assert len(uploads) == 1 and float(uploads[0].split()[-1]) == 4.0
    # The process metrics of the server's processes, one series per pid: `serve` (uvicorn's
    # supervisor) and its children (the two workers, and multiprocessing's resource tracker).
    rss = {
        int(line.split('pid="')[1].split('"')[0])
        for line in text.splitlines()
        if line.startswith("process_resident_memory_bytes{")
    }
    assert srv.proc is not None
    pid = srv.proc.pid
    children = {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    assert len(children) >= 2 and rss == {pid} | children, (rss, pid, children)


def start(tmp: Path, db_url: str | None) -> LiveServer:
    return LiveServer(
        tmp, db_url=db_url, CAESAR_REST_WORKERS="2", CAESAR_REST_MAX_CONCURRENT_JOBS="2"
    ).start()


def test_two_workers_sqlite(tmp_path: Path, s17: Path) -> None:
    srv = start(tmp_path / "srv", None)
    try:
        exercise(srv, s17)
    finally:
        srv.stop()


@pytest.mark.postgres
def test_two_workers_postgres(tmp_path: Path, s17: Path, pg_url: str) -> None:
    srv = start(tmp_path / "srv", pg_url)
    try:
        exercise(srv, s17)
    finally:
        srv.stop()


def test_workers_really_are_two_processes(tmp_path: Path) -> None:
    srv = start(tmp_path / "srv", None)
    try:
        assert srv.proc is not None
        children = Path(f"/proc/{srv.proc.pid}/task/{srv.proc.pid}/children").read_text().split()
        assert len(children) >= 2
        assert httpx.get(f"{srv.url}/readyz").json()["status"] == "ok"
    finally:
        srv.stop()
