"""pyvo, the astronomers' UWS client, reads our documents and drives our jobs."""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from fastapi.testclient import TestClient
from pyvo.dal.exceptions import DALServiceError
from pyvo.dal.tap import AsyncTAPJob
from pyvo.io.uws import parse_job, parse_job_list

from caesar_rest.api.app import create_app

from tests.support.server import LiveServer, make_settings
from tests.uws.uws_support import create, job_json, upload


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path))) as c:
        yield c


def _final(client: TestClient, url: str) -> dict:
    deadline = time.time() + 60
    while True:
        doc = job_json(client, url, WAIT="5")
        if doc["phase"] in ("COMPLETED", "ERROR", "ABORTED"):
            return doc
        assert time.time() < deadline


def test_pyvo_parses_job_list_and_jobs(client: TestClient, s17: Path) -> None:
    fid = upload(client, s17)
    ok = create(client, app="sleep", file=fid, seconds="0", PHASE="RUN", RUNID="pyvo-ok")
    bad = create(client, app="sleep", file=fid, seconds="0", **{"exit-code": "2"}, PHASE="RUN")
    pending = create(client, app="sleep", file=fid, seconds="5", EXECUTIONDURATION="120")
    _final(client, ok)
    _final(client, bad)

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        jobs = parse_job_list(io.BytesIO(client.get("/uws/jobs").content))
        for url in (ok, bad, pending):
            parse_job(io.BytesIO(client.get(url).content))
    assert [str(w.message) for w in seen] == []  # nothing pyvo finds odd

    assert [j.jobid for j in jobs] == [u.rsplit("/", 1)[1] for u in (ok, bad, pending)]
    assert [j.phase for j in jobs] == ["COMPLETED", "ERROR", "PENDING"]
    assert jobs[0].runid == "pyvo-ok" and jobs[0].ownerid == "anonymous"
    assert jobs[0].creationtime is not None

    job = parse_job(io.BytesIO(client.get(ok).content))
    assert job.version == "1.1"
    assert job.jobid == ok.rsplit("/", 1)[1] and job.runid == "pyvo-ok"
    assert job.phase == "COMPLETED" and job.ownerid == "anonymous"
    assert job.creationtime is not None and job.starttime is not None
    assert job.endtime is not None and job.destruction is not None
    assert job.quote is None
    assert int(job.executionduration.value) == 3600
    params = {p.id_: p.content for p in job.parameters}
    assert params == {"app": "sleep", "file": fid, "seconds": "0.0"}
    results = {r.id_: r for r in job.results}
    assert set(results) == {"result", "log"}
    assert results["result"].href == f"{ok}/results/result"
    assert results["result"].size == 5 and results["result"].mimetype == "text/plain"
    assert job.errorsummary is None

    failed = parse_job(io.BytesIO(client.get(bad).content))
    assert failed.phase == "ERROR"
    assert failed.errorsummary.type_ == "fatal" and failed.errorsummary.has_detail
    assert "return code 2" in failed.errorsummary.message.content

    waiting = parse_job(io.BytesIO(client.get(pending).content))
    assert waiting.phase == "PENDING" and int(waiting.executionduration.value) == 120
    assert waiting.starttime is None and waiting.endtime is None and list(waiting.results) == []


def test_pyvo_drives_a_sep_job_on_a_live_server(tmp_path: Path, s17: Path) -> None:
    """Create, run, wait (pyvo uses WAIT=-1), fetch the catalogue as a table, delete."""
    srv = LiveServer(tmp_path, CAESAR_REST_UWS_WAIT_MAX="20").start()
    try:
        session = requests.Session()
        with open(s17, "rb") as fh:
            fid = session.post(f"{srv.api}/upload", files={"file": fh}).json()["uuid"]
        # pyvo has no generic "create": POST the parameters; the 303 leads to the job.
        r = session.post(f"{srv.url}/uws/jobs", data={"app": "sep", "file": fid, "seedthr": "5"})
        assert r.status_code == 200 and r.history and r.history[0].status_code == 303
        job = AsyncTAPJob(r.url, session=session)
        assert job.phase == "PENDING"
        assert job.uws_version == "1.1"
        assert job.owner == "anonymous"
        job.execution_duration = 600
        assert int(job.execution_duration.value) == 600
        started = time.monotonic()
        job.run()
        job.wait(timeout=120)
        assert time.monotonic() - started < 60
        job.raise_if_error()
        assert job.phase == "COMPLETED"
        ids = [r.id_ for r in job.results]
        assert ids[0] == "result"  # the alias of the VOTable catalogue, for TAP-minded clients
        assert {"catalog", "catalog-csv", "catalog-json", "regions", "preview", "log"} <= set(ids)
        table = job.fetch_result().to_table()
        assert len(table) == 59  # a deterministic run
        assert {"name", "ra", "dec", "peak_flux", "flux"} <= set(table.colnames)
        by_id = {r.id_: r for r in job.results}
        png = session.get(by_id["preview"].href)
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
        url = job.url
        job.delete()
        assert session.get(url).status_code == 404
        with pytest.raises(DALServiceError):
            AsyncTAPJob(url, session=session)
    finally:
        srv.stop()
