"""The predecessor's job requests and texts (issue 15): run-control keys, ``inputfile``, cores,
``/login``, ``serve --help`` and the compatibility page."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from caesar_rest.apps.base import OptionError
from caesar_rest.jobs.folder import LOG_FILE
from caesar_rest.jobs.service import InputFileNotFound

from tests.support.oidc_provider import OIDCProvider, auth_env
from tests.support.paths import REPO
from tests.support.server import LiveServer, wait_state
from tests.support.synth_images import STANDARD_SOURCES, write_synth

API = "/caesar/api/v1.0"


@pytest.fixture
def file_id(app_client: TestClient, tmp_path: Path) -> str:
    image = write_synth(tmp_path / "field.fits", STANDARD_SOURCES[:3], n=96).path
    with open(image, "rb") as fh:
        r = app_client.post(f"{API}/upload", files={"file": (image.name, fh)})
    assert r.status_code == 200, r.text
    return str(r.json()["uuid"])


def _owner(client: TestClient) -> str:
    return str(client.get("/login").json()["user"])


def test_core_reservation_reads_the_option_that_takes_effect(
    app_client: TestClient, file_id: str
) -> None:
    ctx = app_client.app.state.ctx  # type: ignore[attr-defined]
    owner = _owner(app_client)
    cores = {}
    for inputs in ({"nthreads": 1, "nproc": 4}, {"nthreads": 3}, {"nproc": 2}):
        body = {"app": "caesar", "job_inputs": {**inputs, "no-extendedsearch": True}}
        r = app_client.post(f"{API}/job", json={**body, "data_inputs": file_id})
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        cores[tuple(inputs.items())] = ctx.jobs.get(owner, job_id).cores
        # nthreads has no effect in the caesar app: named so in the answer.
        assert ("nthreads" in r.json()["ineffective_options"]) == ("nthreads" in inputs)
        wait_state(app_client, job_id, {"SUCCESS"}, timeout=120, prefix=API)
    assert list(cores.values()) == [4, 1, 2]


def test_run_control_keys_on_any_app(app_client: TestClient, file_id: str) -> None:
    """The keys are accepted for every app, named in the answer and at the top of job.log,
    and never reach the program (the job succeeds; its command line lacks them)."""
    ctx = app_client.app.state.ctx  # type: ignore[attr-defined]
    inputs = {
        "seedthr": 5,
        "run": True,
        "envfile": "/home/u/setvars.sh",
        "no-mpi": True,
        "no-logredir": True,
        "jobmemory": 4,
        "inputfile": "/opt/caesar-rest/data/0123.fits",  # data_inputs wins: without effect
    }
    r = app_client.post(
        f"{API}/job", json={"app": "sep", "job_inputs": inputs, "data_inputs": file_id}
    )
    assert r.status_code == 202, r.text
    sub = r.json()
    names = ["envfile", "inputfile", "jobmemory", "no-logredir", "no-mpi", "run"]
    assert sub["ineffective_options"] == names
    assert sub["job_inputs"] == inputs and sub["data_inputs"] == file_id
    wait_state(app_client, sub["job_id"], {"SUCCESS"}, timeout=120, prefix=API)
    job = ctx.jobs.get(_owner(app_client), sub["job_id"])
    assert job.options == {"seedthr": 5.0}
    log = (ctx.jobs.job_dir(job) / LOG_FILE).read_text()
    assert (
        log.splitlines()[0] == f"[caesar-rest] job_inputs without effect here: {', '.join(names)}"
    )
    spec = (ctx.jobs.job_dir(job) / "job.json").read_text()
    assert "envfile" not in spec and "no-mpi" not in spec
    # Without such keys the answer lists nothing and the log has no such line.
    r = app_client.post(f"{API}/job", json={"app": "sep", "job_inputs": {}, "data_inputs": file_id})
    assert r.json()["ineffective_options"] == []
    job = ctx.jobs.get(_owner(app_client), r.json()["job_id"])
    wait_state(app_client, job.id, {"SUCCESS"}, timeout=120, prefix=API)
    assert "[caesar-rest] job_inputs" not in (ctx.jobs.job_dir(job) / LOG_FILE).read_text()


def test_names_no_version_had_stay_400(app_client: TestClient, file_id: str) -> None:
    body = {"app": "sep", "job_inputs": {"run": True, "colour": 1, "envfile": "e"}}
    r = app_client.post(f"{API}/job", json={**body, "data_inputs": file_id})
    assert r.status_code == 400, r.text
    assert r.json()["errors"] == ["unknown option(s) for app 'sep': colour"]
    assert r.json()["state"] == "ABORTED"
    assert app_client.get(f"{API}/jobs").json() == []


def test_inputfile_reaches_only_the_callers_files(app_client: TestClient, file_id: str) -> None:
    """``inputfile`` resolves among the caller's own files: another user's id (by path or
    bare) is "not found", whatever folder the path names; the path itself is never read."""
    ctx = app_client.app.state.ctx  # type: ignore[attr-defined]
    owner = _owner(app_client)
    own_path = ctx.settings.datadir / f"{file_id}.fits"
    assert ctx.jobs.input_from_inputfile(owner, str(own_path)) == file_id
    for ref in (file_id, f"/opt/caesar-rest/data/{owner}/{file_id}.fits", str(own_path)):
        with pytest.raises(InputFileNotFound):
            ctx.jobs.input_from_inputfile("intruder", ref)
        with pytest.raises(InputFileNotFound):
            ctx.jobs.create("intruder", "sep", {"inputfile": ref}, None, compat=True)
    assert app_client.get(f"{API}/jobs").json() == []


def test_other_apis_keep_refusing_run_control_keys(app_client: TestClient, file_id: str) -> None:
    """Only the v1.0 API (``compat=True``) accepts them: UWS and the service default refuse."""
    ctx = app_client.app.state.ctx  # type: ignore[attr-defined]
    with pytest.raises(OptionError, match="unknown option.*envfile, run"):
        ctx.jobs.create(_owner(app_client), "sep", {"run": True, "envfile": "e"}, file_id)
    r = app_client.post(
        "/uws/jobs", data={"app": "sep", "file": file_id, "envfile": "e"}, follow_redirects=False
    )
    assert r.status_code == 400 and "envfile" in r.text, r.text
    r = app_client.post("/uws/jobs", data={"app": "sep", "file": file_id}, follow_redirects=False)
    assert r.status_code == 303, r.text  # the same request without the key is fine


def test_login_without_authentication(app_client: TestClient) -> None:
    r = app_client.get("/login")
    assert r.status_code == 200
    assert r.json()["status"] == "authentication is off"


def test_login_with_aai_tells_the_truth(oidc: OIDCProvider, tmp_path: Path) -> None:
    srv = LiveServer(tmp_path / "srv", **auth_env(oidc)).start()
    try:
        token = oidc.token("alice")
        r = httpx.get(f"{srv.url}/login", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "authenticated by a valid bearer token", "user": "alice"}
        r = httpx.get(f"{srv.url}/login")
        assert r.status_code == 401 and "authentication is off" not in r.text
    finally:
        srv.stop()


def test_serve_help_and_compatibility_page_on_aai() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "caesar_rest.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    aai = " ".join(out.split("--aai ", 1)[1].split("\n\n", 1)[0].split())
    assert "refused" not in aai and "not yet" not in aai
    assert "OIDC" in aai and "CAESAR_REST_OIDC_ISSUER" in aai
    text = " ".join((REPO / "docs" / "compatibility.md").read_text().split())
    assert "`--aai` is refused" not in text
    assert "`--aai` turns on OIDC bearer-token authentication" in text


def test_compatibility_page_names_the_first_app() -> None:
    from caesar_rest.apps.registry import default_registry

    first = default_registry().names()[0]
    text = " ".join((REPO / "docs" / "compatibility.md").read_text().split())
    assert "The first app is `sep`" not in text
    assert f"`/apps` lists `{first}` first" in text
