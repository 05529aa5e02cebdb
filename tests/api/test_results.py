"""The output model routes: list results, serve them by name (HTTP ranges), compare two jobs."""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from caesar_rest.db.models import JobRecord

from tests.support.app_jobs import API, png_size, run_job, service, upload, wait_state
from tests.support.server import LiveServer

CATALOGUE_NAMES = {
    "catalog": ("catalog.vot", "application/x-votable+xml"),
    "catalog-csv": ("catalog.csv", "text/csv"),
    "catalog-json": ("catalog.json", "application/json"),
    "regions": ("catalog.reg", "text/plain"),
    "preview": ("preview.png", "image/png"),
    "preview-thumb": ("preview-thumb.png", "image/png"),
    "summary": ("summary.json", "application/json"),
    "log": ("job.log", "text/plain"),
}


class Jobs:
    """One service with finished jobs shared by the tests of this module."""

    def __init__(self, client: TestClient, root: Path, s17: Path):
        self.client = client
        self.root = root
        self.file_id = upload(client, s17)
        self.other_file = upload(client, s17)  # same bytes, another file id
        self.sep, status = run_job(client, self.file_id, "sep", {})
        assert status["state"] == "SUCCESS"
        self.photutils, status = run_job(client, self.file_id, "photutils", {"no-preview": True})
        assert status["state"] == "SUCCESS"
        self.sleep_other, _ = run_job(client, self.other_file, "sleep", {"seconds": 0})
        self.failed, status = run_job(client, self.file_id, "sleep", {"seconds": 0, "exit-code": 3})
        assert status["state"] == "FAILURE"

    def job_dir(self, job_id: str) -> Path:
        ctx = self.client.app.state.ctx  # type: ignore[attr-defined]
        return Path(ctx.jobs.job_dir(ctx.jobs.get(ctx.settings.local_user, job_id)))


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory, s17: Path) -> Iterator[Jobs]:
    root = tmp_path_factory.mktemp("results-api")
    with service(root) as client:
        yield Jobs(client, root, s17)


def _get(jobs: Jobs, path: str, **kw: Any) -> httpx.Response:
    return jobs.client.get(f"{API}{path}", **kw)


def test_list_results(jobs: Jobs) -> None:
    r = _get(jobs, f"/job/{jobs.sep}/results")
    assert r.status_code == 200
    body = r.json()
    assert body["job_id"] == jobs.sep and body["app"] == "sep" and body["state"] == "SUCCESS"
    items = {i["name"]: i for i in body["results"]}
    jdir = jobs.job_dir(jobs.sep)
    for name, (filename, mime) in CATALOGUE_NAMES.items():
        item = items[name]
        assert (item["id"], item["filename"], item["mime"]) == (name, filename, mime)
        assert item["size"] == (jdir / filename).stat().st_size
        assert item["url"].endswith(f"/caesar/api/v1.0/job/{jobs.sep}/results/{name}")
    archive = items["archive"]
    assert archive["on_demand"] is True and archive["mime"] == "application/gzip"
    assert archive["filename"] == f"job_{jobs.sep}.tar.gz"
    # Each URL serves its file, byte for byte, with its MIME type.
    for name, (filename, mime) in CATALOGUE_NAMES.items():
        got = jobs.client.get(items[name]["url"])
        assert got.status_code == 200, name
        assert got.content == (jdir / filename).read_bytes(), name
        assert got.headers["content-type"].startswith(mime), name
        assert got.headers["accept-ranges"] == "bytes"
    thumb = png_size(_get(jobs, f"/job/{jobs.sep}/results/preview-thumb").content)
    assert max(thumb) == 256 and thumb[0] == thumb[1]  # the image is square
    # Components are listed only for apps that have them; no preview when switched off.
    names = {i["name"] for i in _get(jobs, f"/job/{jobs.photutils}/results").json()["results"]}
    assert "components" not in names and "preview" not in names and "catalog" in names


def test_ranges(jobs: Jobs) -> None:
    url = f"/job/{jobs.sep}/results/catalog"
    full = _get(jobs, url).content
    size = len(full)
    r = _get(jobs, url, headers={"Range": "bytes=0-99"})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes 0-99/{size}"
    assert r.headers["content-length"] == "100" and r.content == full[:100]
    r = _get(jobs, url, headers={"Range": "bytes=-50"})
    assert r.status_code == 206 and r.content == full[-50:]
    r = _get(jobs, url, headers={"Range": f"bytes={size - 10}-"})
    assert r.status_code == 206 and r.content == full[-10:]
    assert r.headers["content-range"] == f"bytes {size - 10}-{size - 1}/{size}"
    r = _get(jobs, url, headers={"Range": "bytes=0-9,20-29"})
    assert r.status_code == 206
    assert r.headers["content-type"].startswith("multipart/byteranges; boundary=")
    assert full[:10] in r.content and full[20:30] in r.content
    # Unsatisfiable and malformed ranges: JSON errors.
    r = _get(jobs, url, headers={"Range": f"bytes={size}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}"
    assert "not satisfiable" in r.json()["status"]
    for bad in ("items=0-10", "bytes=20-10", "bytes", "bytes=a-b", f"bytes={size}-,{size + 9}-"):
        r = _get(jobs, url, headers={"Range": bad})
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}", bad
        assert "not satisfiable" in r.json()["status"]
    # HEAD: size and range support without the body.
    r = jobs.client.head(f"{API}{url}")
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-length"] == str(size) and r.headers["accept-ranges"] == "bytes"
    # If-Range with a stale validator: the whole file.
    r = _get(jobs, url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert r.status_code == 200 and r.content == full


def test_archive_on_demand(jobs: Jobs) -> None:
    listing = {i["name"]: i for i in _get(jobs, f"/job/{jobs.sep}/results").json()["results"]}
    r = _get(jobs, f"/job/{jobs.sep}/results/archive")
    assert r.status_code == 200 and r.headers["content-type"] == "application/gzip"
    assert f'filename="job_{jobs.sep}.tar.gz"' in r.headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        names = set(tar.getnames())
    assert f"job_{jobs.sep}/catalog.vot" in names and f"job_{jobs.sep}/job.log" in names
    size = len(r.content)
    part = _get(jobs, f"/job/{jobs.sep}/results/archive", headers={"Range": "bytes=0-1"})
    assert part.status_code == 206 and part.content == b"\x1f\x8b"  # gzip magic
    listing = {i["name"]: i for i in _get(jobs, f"/job/{jobs.sep}/results").json()["results"]}
    assert listing["archive"]["size"] == size
    # The legacy /output route serves the same archive.
    assert _get(jobs, f"/job/{jobs.sep}/output").content == r.content


def test_errors_and_owner_scoping(jobs: Jobs) -> None:
    r = _get(jobs, f"/job/{jobs.sep}/results/nosuch")
    assert r.status_code == 404 and "nosuch" in r.json()["status"]
    assert "catalog" in r.json()["status"]  # lists what exists
    assert _get(jobs, "/job/not-a-job/results").status_code == 400
    assert _get(jobs, f"/job/{'0' * 32}/results").status_code == 404
    # A failed job still lists what it wrote (the test app's result.txt), its log and archive.
    names = {i["name"] for i in _get(jobs, f"/job/{jobs.failed}/results").json()["results"]}
    assert names == {"result", "log", "archive"}
    # Another owner's job is not found, whatever the route.
    ctx = jobs.client.app.state.ctx  # type: ignore[attr-defined]
    foreign, _ = run_job(jobs.client, jobs.file_id, "sleep", {"seconds": 0})
    with ctx.sessions.begin() as s:
        s.execute(update(JobRecord).where(JobRecord.id == foreign).values(owner="someone-else"))
    for path in (f"/job/{foreign}/results", f"/job/{foreign}/results/log"):
        r = _get(jobs, path)
        assert r.status_code == 404 and "not found" in r.json()["status"]
    r = _get(jobs, "/compare", params={"job_a": jobs.sep, "job_b": foreign})
    assert r.status_code == 404


def test_unfinished_job_answers_202(jobs: Jobs) -> None:
    r = jobs.client.post(
        f"{API}/job",
        json={"app": "sleep", "job_inputs": {"seconds": 30}, "data_inputs": jobs.file_id},
    )
    job_id = r.json()["job_id"]
    try:
        for path in (f"/job/{job_id}/results", f"/job/{job_id}/results/log"):
            r = _get(jobs, path)
            assert r.status_code == 202, path
            assert r.json()["state"] in ("PENDING", "STARTED", "RUNNING")
            assert "not yet completed" in r.json()["status"]
        r = _get(jobs, "/compare", params={"job_a": jobs.sep, "job_b": job_id})
        assert r.status_code == 202 and r.json()["job_id"] == job_id
    finally:
        jobs.client.post(f"{API}/job/{job_id}/cancel")
        wait_state(jobs.client, job_id, {"CANCELED", "SUCCESS", "FAILURE"}, timeout=30)


def test_compare_jobs(jobs: Jobs) -> None:
    params = {"job_a": jobs.sep, "job_b": jobs.photutils}
    r = _get(jobs, "/compare", params=params)
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["job_a"] == {"job_id": jobs.sep, "app": "sep"}
    assert rep["job_b"] == {"job_id": jobs.photutils, "app": "photutils"}
    assert rep["input_file"] == jobs.file_id and rep["catalog"] == "catalog"
    assert rep["radius_arcsec"] == pytest.approx(6.5, abs=1e-3)  # the beam, from summary.json
    assert rep["radius_rule"] == "beam FWHM"
    na = len(_get(jobs, f"/job/{jobs.sep}/sources").json()["sources"])
    nb = len(_get(jobs, f"/job/{jobs.photutils}/sources").json()["sources"])
    assert (rep["n_a"], rep["n_b"]) == (na, nb)
    assert rep["n_matched"] + rep["n_unmatched_a"] == na
    assert rep["n_matched"] + rep["n_unmatched_b"] == nb
    assert rep["n_matched"] >= 0.5 * na  # two segmentation finders agree on most sources
    assert rep["offset_arcsec"]["median_separation"] < 1.5
    assert 0.7 < rep["flux_ratio_b_over_a"]["median"] < 1.3
    assert len(rep["unmatched_a"]) == rep["n_unmatched_a"]
    png = jobs.client.get(rep["plot_url"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png_size(png.content)[0] > 1000
    r = _get(jobs, "/compare", params={**params, "radius": 2.0})
    assert r.json()["radius_arcsec"] == 2.0 and r.json()["radius_rule"] == "given"
    assert r.json()["n_matched"] <= rep["n_matched"]
    # Refusals.
    r = _get(jobs, "/compare", params={"job_a": jobs.sep, "job_b": jobs.sleep_other})
    assert r.status_code == 400 and "different input files" in r.json()["status"]
    r = _get(jobs, "/compare", params={"job_a": jobs.sep, "job_b": jobs.failed})
    assert r.status_code == 400 and "FAILURE" in r.json()["status"]
    r = _get(jobs, "/compare", params={**params, "catalog": "components"})
    assert r.status_code == 404 and "components" in r.json()["status"]
    for bad in ({"radius": -1}, {"format": "gif"}, {"job_b": "x"}):
        assert _get(jobs, "/compare", params={**params, **bad}).status_code == 400, bad
    assert _get(jobs, "/compare", params={"job_a": jobs.sep}).status_code == 400


def test_legacy_routes_read_the_model(jobs: Jobs) -> None:
    jdir = jobs.job_dir(jobs.sep)
    assert (
        _get(jobs, f"/job/{jobs.sep}/output-sources").content == (jdir / "catalog.csv").read_bytes()
    )
    assert _get(jobs, f"/job/{jobs.sep}/output-plot").content == (jdir / "preview.png").read_bytes()
    assert (
        _get(jobs, f"/job/{jobs.sep}/sources").json()
        == _get(jobs, f"/job/{jobs.sep}/results/catalog-json").json()
    )
    assert _get(jobs, f"/job/{jobs.sep}/source-components").status_code == 404  # sep has none


def test_range_over_http(tmp_path: Path, s17: Path) -> None:
    """A real server process and real HTTP range requests over TCP."""
    srv = LiveServer(tmp_path / "srv").start()
    try:
        with srv.client() as c:
            with open(s17, "rb") as fh:
                fid = c.post("/upload", files={"file": (s17.name, fh)}).json()["uuid"]
            job = c.post("/job", json={"app": "sep", "job_inputs": {}, "data_inputs": fid}).json()
            deadline = time.time() + 120
            while c.get(f"/job/{job['job_id']}/status").json()["state"] != "SUCCESS":
                assert time.time() < deadline
                time.sleep(0.3)
            url = f"/job/{job['job_id']}/results/preview"
            full = c.get(url).content
            r = c.get(url, headers={"Range": "bytes=8-23"})
            assert r.status_code == 206 and r.content == full[8:24]
            assert r.headers["content-range"] == f"bytes 8-23/{len(full)}"
            assert r.content[4:8] == b"IHDR"
            r = c.get(url, headers={"Range": f"bytes={len(full) + 5}-"})
            assert r.status_code == 416 and r.json()["status"].startswith("Requested range")
    finally:
        srv.stop()
