"""The Python client: token sources and errors (mock transport), and a live round trip."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from caesar_rest.client import (
    AppOption,
    CaesarClient,
    CaesarError,
    CaesarTimeout,
    FileInfo,
    Job,
    JobRef,
    ResultInfo,
)

from tests.support.server import LiveServer


# --- without a server ----------------------------------------------------------------------
def _echo_auth() -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"apps": [], "details": []})

    return httpx.MockTransport(handler), seen


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in ("CAESAR_REST_TOKEN", "CAESAR_REST_TOKEN_FILE", "CAESAR_REST_URL"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_token_sources(no_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tfile = tmp_path / "token"
    tfile.write_text("from-file\n")
    other = tmp_path / "other"
    other.write_text("from-env-file")

    def auth(**kw: object) -> str | None:
        transport, seen = _echo_auth()
        with CaesarClient("http://svc", transport=transport, **kw) as c:  # type: ignore[arg-type]
            c.apps()
        return seen[0].headers.get("authorization")

    assert auth() is None
    assert auth(token="tok") == "Bearer tok"
    assert auth(token_file=tfile) == "Bearer from-file"
    no_env.setenv("CAESAR_REST_TOKEN_FILE", str(other))
    assert auth() == "Bearer from-env-file"
    no_env.setenv("CAESAR_REST_TOKEN", "from-env")
    assert auth() == "Bearer from-env"
    assert auth(token_file=tfile) == "Bearer from-file"  # an explicit file beats the env
    assert auth(token="tok") == "Bearer tok"
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    with pytest.raises(CaesarError, match="empty"):
        CaesarClient("http://svc", token_file=empty)
    with pytest.raises(CaesarError, match="cannot read"):
        CaesarClient("http://svc", token_file=tmp_path / "missing")


def test_url_from_env_and_errors(no_env: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(404, json={"status": "No job 0123", "job_id": "0123"})

    no_env.setenv("CAESAR_REST_URL", "http://example.org:9999/")
    with CaesarClient(transport=httpx.MockTransport(handler)) as c:
        assert c.url == "http://example.org:9999"
        with pytest.raises(CaesarError) as err:
            c.status("0123")
    assert err.value.status == 404 and err.value.message == "No job 0123"
    assert seen[0].url == "http://example.org:9999/uws/jobs/0123"
    assert seen[0].headers["accept"] == "application/json"
    with (
        CaesarClient("http://svc", transport=httpx.MockTransport(handler)) as c,
        pytest.raises(CaesarError, match="not a job id"),
    ):
        c.status("../files")
    with (
        CaesarClient("http://127.0.0.1:9", timeout=2) as c,
        pytest.raises(CaesarError, match="cannot reach"),
    ):
        c.apps()


def test_models_round_trip_to_json() -> None:
    job = Job.from_json(
        {
            "jobId": "a" * 32,
            "phase": "ERROR",
            "creationTime": "2026-01-02T03:04:05.678Z",
            "executionDuration": 60,
            "parameters": {"app": "sep"},
            "results": [{"id": "log", "href": "http://x/log", "size": 3, "mimeType": "text/plain"}],
            "errorSummary": {"type": "fatal", "hasDetail": True, "message": "boom"},
            "jobInfo": {"app": "sep", "message": "boom"},
        }
    )
    assert job.finished and not job.succeeded and job.error == "boom" and job.app == "sep"
    assert job.creation_time == datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    data = json.loads(json.dumps(job.to_dict()))
    assert data["creation_time"] == "2026-01-02T03:04:05.678000+00:00"
    assert data["results"][0]["mime_type"] == "text/plain"


# --- against a live server -----------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path_factory.mktemp("client-srv")).start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server: LiveServer, no_env: pytest.MonkeyPatch) -> Iterator[CaesarClient]:
    with CaesarClient(server.url) as c:
        yield c


def test_round_trip(client: CaesarClient, s17: Path, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    info = client.upload(s17, tag="client", progress=lambda d, t: seen.append((d, t)))
    assert isinstance(info, FileInfo)
    assert info.size == s17.stat().st_size and info.filename == s17.name and info.tag == "client"
    assert seen[0] == (0, info.size) and seen[-1] == (info.size, info.size)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)

    apps = {a.name: a for a in client.apps()}
    assert {"sep", "sleep"} <= set(apps)
    options = {o.name: o for o in client.describe("sep")}
    assert isinstance(options["seedthr"], AppOption) and options["seedthr"].type == "float"
    assert options["filter"].is_flag

    job = client.submit("sleep", info.file_id, {"seconds": 0.3}, run_id="rt")
    assert job.phase in ("QUEUED", "EXECUTING") and job.run_id == "rt"
    changes: list[str] = []
    done = client.wait(job.job_id, timeout=60, on_change=lambda j: changes.append(j.phase))
    assert done.phase == "COMPLETED" and done.succeeded
    assert changes[-1] == "COMPLETED"
    assert done.parameters["seconds"] == "0.3" and done.parameters["file"] == info.file_id

    results = client.results(job.job_id)
    assert all(isinstance(r, ResultInfo) for r in results)
    assert [r.id for r in results] == ["result", "log"]
    files = client.download(job.job_id, tmp_path / "out")
    assert sorted(f.name for f in files) == ["job.log", "result.txt"]
    assert (tmp_path / "out" / "result.txt").read_text() == "done\n"
    got: list[tuple[str, int, int | None]] = []
    only = client.download(
        job.job_id, tmp_path / "only", names=["log"], progress=lambda *a: got.append(a)
    )
    assert [f.name for f in only] == ["job.log"] and got[-1][0] == "log"
    with pytest.raises(CaesarError):
        client.download(job.job_id, tmp_path / "x", names=["nope"])

    refs = client.jobs(phases=["completed"])
    assert job.job_id in [r.job_id for r in refs] and all(isinstance(r, JobRef) for r in refs)
    mine = next(r for r in refs if r.job_id == job.job_id)
    assert (mine.app, mine.input_file, mine.input_name) == ("sleep", info.file_id, s17.name)
    bare = next(r for r in client.jobs(inputs=False) if r.job_id == job.job_id)
    assert (bare.app, bare.input_name) == ("", "")
    assert client.jobs(last=1)[0].job_id == job.job_id
    assert client.jobs(after=datetime.now(UTC) + timedelta(hours=1)) == []


def test_inline_submit_cancel_run_delete(client: CaesarClient, s17: Path) -> None:
    sent: list[int] = []
    job = client.submit("sleep", s17, {"seconds": 60}, progress=lambda d, t: sent.append(d))
    assert sent[-1] == s17.stat().st_size
    assert job.parameters["file"] and job.phase in ("QUEUED", "EXECUTING")
    with pytest.raises(CaesarTimeout):
        client.wait(job.job_id, timeout=1)
    aborted = client.cancel(job.job_id)
    assert aborted.phase == "ABORTED" and aborted.error
    assert client.wait(job.job_id).phase == "ABORTED"

    pending = client.submit("sleep", job.parameters["file"], {"seconds": 0}, run=False)
    assert pending.phase == "PENDING"
    with pytest.raises(CaesarError, match="PENDING"):
        client.wait(pending.job_id)
    assert client.run(pending.job_id).phase in ("QUEUED", "EXECUTING", "COMPLETED")
    assert client.wait(pending.job_id, timeout=60).succeeded

    client.delete(pending.job_id)
    with pytest.raises(CaesarError) as err:
        client.status(pending.job_id)
    assert err.value.status == 404
    with pytest.raises(CaesarError) as err:
        client.submit("sleep", "f" * 32)  # no such file
    assert err.value.status == 400
    with pytest.raises(CaesarError, match="no such file"):
        client.submit("sleep", "/nonexistent/image.fits")
