"""The UWS 1.1 job tree over the in-process app: documents, controls, filters, errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import xmlschema
from fastapi.testclient import TestClient

from caesar_rest.api.app import create_app
from caesar_rest.api.deps import current_user

from tests.support.server import make_settings
from tests.uws.uws_support import create, job_json, load_uws_schema, upload

FINAL = {"COMPLETED", "ERROR", "ABORTED"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    """An in-process service with small limits, so clamping is visible."""
    settings = make_settings(
        tmp_path, max_job_time_limit=600, max_destruction_days=2.0, destruction_days=1.0
    )
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="session")
def uws_schema() -> xmlschema.XMLSchema:
    return load_uws_schema()


@pytest.fixture
def file_id(client: TestClient, s17: Path) -> str:
    return upload(client, s17)


def wait_final(client: TestClient, url: str, timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        doc = job_json(client, url, WAIT="5")
        if doc["phase"] in FINAL:
            return doc
    raise AssertionError(f"{url} did not end")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_job_document_is_valid_uws_and_results_are_served(
    client: TestClient, file_id: str, uws_schema: xmlschema.XMLSchema
) -> None:
    url = create(client, app="sleep", file=file_id, seconds="0.2", PHASE="RUN", RUNID="my-run")
    doc = wait_final(client, url)
    assert doc["phase"] == "COMPLETED", doc
    r = client.get(url)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/xml")
    uws_schema.validate(r.text)
    assert 'version="1.1"' in r.text
    assert "<uws:runId>my-run</uws:runId>" in r.text
    # JSON mirror
    assert doc["version"] == "1.1" and doc["runId"] == "my-run"
    assert doc["ownerId"] == "anonymous"
    assert doc["parameters"] == {"app": "sleep", "file": file_id, "seconds": "0.2"}
    assert doc["errorSummary"] is None
    assert doc["creationTime"].endswith("Z") and doc["startTime"] and doc["endTime"]
    ids = [res["id"] for res in doc["results"]]
    assert ids == ["result", "log"]
    for res in doc["results"]:
        assert res["href"] == f"{url}/results/{res['id']}"
        got = client.get(res["href"])
        assert got.status_code == 200
        assert len(got.content) == res["size"]
        assert got.headers["content-type"].startswith(res["mimeType"])
    assert client.get(f"{url}/results/result").text == "done\n"
    # The sub-resources
    results = client.get(f"{url}/results")
    uws_schema.validate(results.text)
    params = client.get(f"{url}/parameters")
    uws_schema.validate(params.text)
    assert '<uws:parameter id="seconds">0.2</uws:parameter>' in params.text
    assert client.get(f"{url}/parameters", headers={"Accept": "application/json"}).json() == {
        "parameters": doc["parameters"]
    }
    assert client.get(f"{url}/phase").text == "COMPLETED"
    assert client.get(f"{url}/owner").text == "anonymous"
    assert client.get(f"{url}/quote").text == ""
    assert doc["executionDuration"] == 600  # the default (3600 s) clamped to this maximum
    assert client.get(f"{url}/executionduration").text == "600"
    dest = client.get(f"{url}/destruction").text
    assert parse_time(dest) == parse_time(doc["destruction"])
    assert client.get(f"{url}/phase", headers={"Accept": "application/json"}).json() == {
        "phase": "COMPLETED"
    }
    assert client.get(f"{url}/error").status_code == 404
    assert client.get(f"{url}/results/nope").status_code == 404
    # The list
    listing = client.get("/uws/jobs")
    uws_schema.validate(listing.text)
    assert f'xlink:href="{url}"' in listing.text


def test_pending_run_abort_and_error(
    client: TestClient, file_id: str, uws_schema: xmlschema.XMLSchema
) -> None:
    url = create(client, app="sleep", file=file_id, seconds="60")
    assert client.get(f"{url}/phase").text == "PENDING"
    uws_schema.validate(client.get(url).text)
    r = client.post(f"{url}/phase", data={"PHASE": "RUN"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == url
    assert client.get(f"{url}/phase").text in ("QUEUED", "EXECUTING")
    # RUN again changes nothing
    assert (
        client.post(f"{url}/phase", data={"phase": "run"}, follow_redirects=False).status_code
        == 303
    )
    r = client.post(f"{url}/phase", data={"PHASE": "ABORT"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == url
    doc = job_json(client, url)
    assert doc["phase"] == "ABORTED"
    assert doc["errorSummary"]["type"] == "fatal"
    assert "canceled" in doc["errorSummary"]["message"]
    xml = client.get(url).text
    uws_schema.validate(xml)
    assert '<uws:errorSummary type="fatal" hasDetail="true">' in xml
    assert client.get(f"{url}/error").text.startswith("ABORTED:")
    # ABORT again is harmless; RUN after the end is refused
    assert (
        client.post(f"{url}/phase", data={"PHASE": "ABORT"}, follow_redirects=False).status_code
        == 303
    )
    r = client.post(f"{url}/phase", data={"PHASE": "RUN"})
    assert r.status_code == 403 and "status" in r.json()


def test_failed_job_has_error_summary_and_log(
    client: TestClient, file_id: str, uws_schema: xmlschema.XMLSchema
) -> None:
    url = create(client, app="sleep", file=file_id, seconds="0", **{"exit-code": "3"}, phase="RUN")
    doc = wait_final(client, url)
    assert doc["phase"] == "ERROR"
    assert doc["errorSummary"] == {
        "type": "fatal",
        "hasDetail": True,
        "message": "Process terminated with return code 3",
    }
    assert doc["jobInfo"]["exitCode"] == 3 and doc["jobInfo"]["state"] == "FAILURE"
    assert [r["id"] for r in doc["results"]] == ["result", "log"]  # results untrusted in ERROR
    uws_schema.validate(client.get(url).text)
    detail = client.get(f"{url}/error")
    assert detail.status_code == 200
    assert "return code 3" in detail.text and "sleeping 0.0 s" in detail.text


def test_execution_duration_is_clamped(client: TestClient, file_id: str) -> None:
    url = create(client, app="sleep", file=file_id, EXECUTIONDURATION="5")
    assert client.get(f"{url}/executionduration").text == "5"
    for asked, got in (("100000", "600"), ("0", "600"), ("42", "42")):
        r = client.post(
            f"{url}/executionduration", data={"EXECUTIONDURATION": asked}, follow_redirects=False
        )
        assert r.status_code == 303 and r.headers["location"] == url
        assert client.get(f"{url}/executionduration").text == got
    assert job_json(client, url)["executionDuration"] == 42
    url2 = create(client, app="sleep", file=file_id, executionDuration="99999")
    assert client.get(f"{url2}/executionduration").text == "600"
    # Only while PENDING
    client.post(f"{url}/phase", data={"PHASE": "RUN"})
    r = client.post(f"{url}/executionduration", data={"EXECUTIONDURATION": "10"})
    assert r.status_code == 403
    client.post(f"{url}/phase", data={"PHASE": "ABORT"})


def test_destruction_default_and_clamps(client: TestClient, file_id: str) -> None:
    url = create(client, app="sleep", file=file_id)
    doc = job_json(client, url)
    created, destroyed = parse_time(doc["creationTime"]), parse_time(doc["destruction"])
    assert abs((destroyed - created) - timedelta(days=1)) < timedelta(seconds=1)
    far = (datetime.now(UTC) + timedelta(days=365)).isoformat()
    r = client.post(f"{url}/destruction", data={"DESTRUCTION": far}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == url
    got = parse_time(client.get(f"{url}/destruction").text)
    assert abs(got - (datetime.now(UTC) + timedelta(days=2))) < timedelta(seconds=5)
    soon = (datetime.now(UTC) + timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    client.post(f"{url}/destruction", data={"destruction": soon})
    assert abs(parse_time(job_json(client, url)["destruction"]) - parse_time(soon)) < timedelta(
        milliseconds=2
    )
    url2 = create(client, app="sleep", file=file_id, DESTRUCTION=far)
    got2 = parse_time(job_json(client, url2)["destruction"])
    assert got2 <= datetime.now(UTC) + timedelta(days=2)


def test_case_insensitive_names_and_flags(client: TestClient, file_id: str) -> None:
    url = create(client, aPp="sleep", File=file_id, SECONDS="0.1", pHaSe="rUn", RunId="x")
    doc = wait_final(client, url)
    assert doc["phase"] == "COMPLETED" and doc["runId"] == "x"
    assert doc["parameters"]["seconds"] == "0.1"
    listing = client.get(
        "/uws/jobs",
        params={"phase": "completed", "Last": "1"},
        headers={"Accept": "application/json"},
    )
    assert [j["id"] for j in listing.json()["jobs"]] == [doc["jobId"]]
    # file_id is an alias of file; values reach the app typed
    url2 = create(client, app="sleep", file_id=file_id, seconds="1e-1", **{"EXIT-CODE": "0"})
    assert job_json(client, url2)["parameters"]["exit-code"] == "0"


def test_list_filters(client: TestClient, file_id: str, uws_schema: xmlschema.XMLSchema) -> None:
    urls = [create(client, app="sleep", file=file_id) for _ in range(3)]
    ids = [u.rsplit("/", 1)[1] for u in urls]
    client.post(f"{urls[0]}/phase", data={"PHASE": "ABORT"})

    def listing(*params: tuple[str, str]) -> list[str]:
        r = client.get("/uws/jobs", params=list(params), headers={"Accept": "application/json"})
        assert r.status_code == 200, r.text
        return [j["id"] for j in r.json()["jobs"]]

    assert listing() == ids
    assert listing(("PHASE", "PENDING")) == ids[1:]
    assert listing(("PHASE", "ABORTED")) == ids[:1]
    assert listing(("PHASE", "PENDING"), ("PHASE", "ABORTED")) == ids
    assert listing(("PHASE", "EXECUTING")) == []
    assert listing(("LAST", "2")) == [ids[2], ids[1]]
    created = job_json(client, urls[0])["creationTime"]
    assert listing(("AFTER", created)) == ids[1:]
    assert listing(("AFTER", created), ("PHASE", "ABORTED")) == []
    assert listing(("AFTER", "2000-01-01T00:00:00Z"), ("LAST", "1")) == [ids[2]]
    r = client.get("/uws/jobs", params={"PHASE": "PENDING"})
    uws_schema.validate(r.text)
    assert r.text.count("<uws:jobref ") == 2


def test_inline_upload_creates_the_file_and_runs(client: TestClient, s17: Path) -> None:
    with open(s17, "rb") as fh:
        r = client.post(
            "/uws/jobs",
            data={"app": "sleep", "seconds": "0.1", "PHASE": "RUN"},
            files={"file": (s17.name, fh, "application/fits")},
            follow_redirects=False,
        )
    assert r.status_code == 303, r.text
    doc = wait_final(client, r.headers["location"])
    assert doc["phase"] == "COMPLETED"
    files = client.get("/caesar/api/v1.0/fileids").json()
    assert [f["fileid"] for f in files] == [doc["parameters"]["file"]]
    assert files[0]["filename_orig"] == s17.name
    assert files[0]["size_bytes"] == s17.stat().st_size


def test_inline_upload_refused_leaves_nothing(
    client: TestClient, s17: Path, tmp_path: Path
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n")
    with open(text, "rb") as fh:
        r = client.post("/uws/jobs", data={"app": "sleep"}, files={"file": ("notes.txt", fh)})
    assert r.status_code == 415 and "status" in r.json()
    with open(s17, "rb") as fh:  # bad options are refused before the file is stored
        r = client.post("/uws/jobs", data={"app": "sleep", "seconds": "-5"}, files={"file": fh})
    assert r.status_code == 400 and "seconds" in r.json()["status"]
    assert client.get("/caesar/api/v1.0/fileids").json() == []
    incoming = client.app.state.ctx.settings.datadir / ".incoming"  # type: ignore[attr-defined]
    assert not any(incoming.glob("*.part"))


def test_delete_and_action_delete(client: TestClient, file_id: str) -> None:
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    for how in ("DELETE", "ACTION"):
        url = create(client, app="sleep", file=file_id, seconds="60", PHASE="RUN")
        job = ctx.jobs.get_any(url.rsplit("/", 1)[1])
        folder = ctx.jobs.job_dir(job)
        assert folder.is_dir()
        if how == "DELETE":
            r = client.delete(url, follow_redirects=False)
        else:
            r = client.post(url, data={"action": "delete"}, follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["location"].endswith("/uws/jobs")
        assert client.get(url).status_code == 404
        assert client.get(f"{url}/phase").status_code == 404
        assert not folder.exists()
    assert client.delete(url).status_code == 404
    assert (
        client.post(url.rsplit("/", 1)[0] + "/" + "0" * 32, data={"ACTION": "DELETE"}).status_code
        == 404
    )


def test_another_owners_job_is_404(client: TestClient, file_id: str) -> None:
    url = create(client, app="sleep", file=file_id, seconds="60")
    app = client.app
    app.dependency_overrides[current_user] = lambda: "mallory"  # type: ignore[attr-defined]
    try:
        for sub in (
            "",
            "/phase",
            "/parameters",
            "/results",
            "/results/log",
            "/owner",
            "/error",
            "/quote",
            "/executionduration",
            "/destruction",
        ):
            r = client.get(url + sub)
            assert r.status_code == 404, (sub, r.text)
            assert "status" in r.json()
        assert client.get(url, params={"WAIT": "2"}).status_code == 404
        assert client.post(f"{url}/phase", data={"PHASE": "ABORT"}).status_code == 404
        assert (
            client.post(
                f"{url}/destruction", data={"DESTRUCTION": "2030-01-01T00:00:00Z"}
            ).status_code
            == 404
        )
        assert client.delete(url).status_code == 404
        listing = client.get("/uws/jobs", headers={"Accept": "application/json"}).json()
        assert listing["jobs"] == []
        # Nor can the other owner use the file
        r = client.post("/uws/jobs", data={"app": "sleep", "file": file_id})
        assert r.status_code == 400
    finally:
        app.dependency_overrides.clear()  # type: ignore[attr-defined]
    assert client.get(f"{url}/phase").text == "PENDING"


BAD_CREATE = [
    ({}, 400, "app"),
    ({"app": "nope", "file": "0" * 32}, 400, "Unknown app"),
    ({"app": "sleep"}, 400, "file"),
    ({"app": "sleep", "file": "../../etc/passwd"}, 400, "file id"),
    ({"app": "sleep", "file": "0" * 32}, 400, "No uploaded file"),
    ({"app": "sleep", "file": "FILE", "colour": "red"}, 400, "colour"),
    ({"app": "sleep", "file": "FILE", "seconds": "soon"}, 400, "seconds"),
    ({"app": "sleep", "file": "FILE", "seconds": "1e9"}, 400, "seconds"),
    ({"app": "sleep", "file": "FILE", "PHASE": "EXECUTING"}, 400, "PHASE"),
    ({"app": "sleep", "file": "FILE", "EXECUTIONDURATION": "-1"}, 400, "EXECUTIONDURATION"),
    ({"app": "sleep", "file": "FILE", "EXECUTIONDURATION": "ten"}, 400, "EXECUTIONDURATION"),
    ({"app": "sleep", "file": "FILE", "DESTRUCTION": "tomorrow"}, 400, "DESTRUCTION"),
    ({"app": "sleep", "file": "FILE", "RUNID": "x" * 65}, 400, "RUNID"),
    ({"app": "sleep", "file": "FILE", "file_id": "1" * 32}, 400, "FILE"),
]


@pytest.mark.parametrize(("params", "code", "words"), BAD_CREATE)
def test_bad_creation_is_a_json_error(
    client: TestClient, file_id: str, params: dict, code: int, words: str
) -> None:
    data = {k: (file_id if v == "FILE" else v) for k, v in params.items()}
    r = client.post("/uws/jobs", data=data)
    assert r.status_code == code, r.text
    assert words in r.json()["status"]
    assert client.get("/uws/jobs", headers={"Accept": "application/json"}).json()["jobs"] == []


def test_other_bad_input_is_a_json_error(client: TestClient, file_id: str) -> None:
    url = create(client, app="sleep", file=file_id)
    cases = [
        client.get("/uws/jobs", params={"PHASE": "DONE"}),
        client.get("/uws/jobs", params={"LAST": "0"}),
        client.get("/uws/jobs", params={"LAST": "many"}),
        client.get("/uws/jobs", params={"AFTER": "yesterday"}),
        client.get(url, params={"WAIT": "soon"}),
        client.get(url, params={"WAIT": "1", "PHASE": "SLEEPING"}),
        client.post(f"{url}/phase", data={"PHASE": "SUSPEND"}),
        client.post(f"{url}/phase", data={}),
        client.post(f"{url}/executionduration", data={}),
        client.post(f"{url}/destruction", data={"DESTRUCTION": "2030-13-45"}),
        client.post(url, data={"ACTION": "PAUSE"}),
        client.post(
            "/uws/jobs", content=b'{"app": "sleep"}', headers={"Content-Type": "application/json"}
        ),
        client.post(
            "/uws/jobs",
            content=b"\xff\xfe=1",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
        client.post(
            "/uws/jobs",
            content=b"--x\r\nbroken",
            headers={"Content-Type": "multipart/form-data; boundary=x"},
        ),
        client.post(f"{url}/phase", content=b"PHASE=RUN", headers={"Content-Type": "text/plain"}),
    ]
    for r in cases:
        assert 400 <= r.status_code < 500, (r.request.url, r.status_code, r.text)
        assert isinstance(r.json()["status"], str)
    for bad in ("nope", "0" * 32, "..%2F..%2Fetc", "a" * 300):
        assert client.get(f"/uws/jobs/{bad}").status_code == 404
    assert client.get(f"{url}/phase").text == "PENDING"


def test_accept_negotiation(client: TestClient, file_id: str) -> None:
    url = create(client, app="sleep", file=file_id)
    for accept, kind in (
        ("application/json", "json"),
        ("application/xml,text/plain", "xml"),
        ("*/*", "xml"),
        ("", "xml"),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "xml"),
        ("application/json;q=0.5, application/xml", "xml"),
        ("application/xml;q=0.5, application/json", "json"),
    ):
        r = client.get(url, headers={"Accept": accept})
        assert r.headers["content-type"].startswith(
            "application/json" if kind == "json" else "application/xml"
        ), accept
