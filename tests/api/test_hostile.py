"""Hostile input (issue 14, items 3, 4 and 5): 4xx for bad input, never a 500; every 500 seen.

Each test runs on SQLite and PostgreSQL (``db_url``) where the database takes part.
"""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from caesar_rest.api.app import create_app

from tests.support.server import make_settings

API = "/caesar/api/v1.0"
SIMPLE_FITS = b"SIMPLE  =                    T" + b" " * 50


@pytest.fixture
def client(tmp_path: Path, db_url: str) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, db_url=db_url)
    with TestClient(create_app(settings, start_backends=False)) as c:
        yield c


def strict_json(text: str) -> object:
    """Parse as a strict JSON reader would (no NaN or Infinity)."""

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def assert_json_error(r, code: int) -> dict:  # type: ignore[no-untyped-def]
    assert r.status_code == code, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers.get("x-request-id")
    body = strict_json(r.text)
    assert isinstance(body, dict) and isinstance(body["status"], str)
    return body


def upload_fits(client: TestClient, tmp_path: Path) -> str:
    import numpy as np
    from astropy.io import fits

    path = tmp_path / "img.fits"
    fits.PrimaryHDU(np.zeros((8, 8), dtype="float32")).writeto(path)
    r = client.post(f"{API}/upload", files={"file": ("img.fits", path.read_bytes())})
    assert r.status_code == 200, r.text
    return str(r.json()["uuid"])


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_tag_is_refused(client: TestClient, tmp_path: Path, constant: str) -> None:
    fid = upload_fits(client, tmp_path)
    raw = f'{{"app": "sleep", "job_inputs": {{}}, "data_inputs": "{fid}", "tag": {constant}}}'
    r = client.post(f"{API}/job", content=raw, headers={"Content-Type": "application/json"})
    body = assert_json_error(r, 400)
    assert "NaN" in body["status"] or "not valid JSON" in body["status"]
    # Nothing stored: the job list stays valid (and empty) JSON.
    r = client.get(f"{API}/jobs")
    assert r.status_code == 200 and strict_json(r.text) == []


def test_non_finite_in_job_inputs_is_refused(client: TestClient, tmp_path: Path) -> None:
    fid = upload_fits(client, tmp_path)
    raw = f'{{"app": "sleep", "job_inputs": {{"seconds": NaN}}, "data_inputs": "{fid}"}}'
    r = client.post(f"{API}/job", content=raw, headers={"Content-Type": "application/json"})
    assert_json_error(r, 400)
    assert strict_json(client.get(f"{API}/jobs").text) == []


def test_nul_in_job_tag_is_refused(client: TestClient, tmp_path: Path) -> None:
    fid = upload_fits(client, tmp_path)
    raw = f'{{"app": "sleep", "data_inputs": "{fid}", "tag": {{"a\\u0000": "x\\u0000y"}}}}'
    r = client.post(f"{API}/job", content=raw, headers={"Content-Type": "application/json"})
    assert "NUL" in assert_json_error(r, 400)["status"]
    assert strict_json(client.get(f"{API}/jobs").text) == []


def test_json_nested_deep_is_400(client: TestClient) -> None:
    deep = "[" * 10_000 + "]" * 10_000
    r = client.post(f"{API}/job", content=deep, headers={"Content-Type": "application/json"})
    assert_json_error(r, 400)
    nested = '{"bytes": ' + deep + "}"
    r = client.put(
        f"{API}/admin/users/u1/quota", content=nested, headers={"Content-Type": "application/json"}
    )
    assert_json_error(r, 400)


@pytest.mark.parametrize("offset", [2**31, 2**63, 10**30])
def test_huge_offset_is_400(client: TestClient, offset: int) -> None:
    assert_json_error(client.get(f"{API}/jobs", params={"offset": offset}), 400)


def test_largest_offset_answers(client: TestClient) -> None:
    r = client.get(f"{API}/jobs", params={"offset": 2**31 - 1, "limit": 5})
    assert r.status_code == 200 and r.json() == []


@pytest.mark.parametrize(
    "body",
    [
        {"bytes": 2**63},
        {"bytes": 10**30},
        {"active_jobs": 2**31},
        {"time_limit": 2**31},
        {"active_jobs": 10**30},
    ],
)
def test_huge_quota_numbers_are_400(client: TestClient, body: dict[str, int]) -> None:
    assert_json_error(client.put(f"{API}/admin/users/u1/quota", json=body), 400)


def test_largest_quota_numbers_are_stored(client: TestClient) -> None:
    body = {"bytes": 2**53, "active_jobs": 2**31 - 1, "time_limit": 2**31 - 1}
    r = client.put(f"{API}/admin/users/u1/quota", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["quota"] == body


def test_nul_in_upload_tag_is_400(client: TestClient, tmp_path: Path) -> None:
    import numpy as np
    from astropy.io import fits

    path = tmp_path / "img.fits"
    fits.PrimaryHDU(np.zeros((8, 8), dtype="float32")).writeto(path)
    r = client.post(
        f"{API}/upload",
        files={"file": ("img.fits", path.read_bytes())},
        data={"tag": "a\x00b"},
    )
    assert "NUL" in assert_json_error(r, 400)["status"]
    assert client.get(f"{API}/fileids").json() == []
    assert [p for p in (tmp_path / "data").rglob("*") if p.is_file()] == []


def test_full_disk_during_upload_is_507(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from caesar_rest.storage import upload as upload_mod

    def full(self: object, parts: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(upload_mod._HashingWriter, "write", full)
    r = client.post(f"{API}/upload", files={"file": ("img.fits", SIMPLE_FITS * 100)})
    body = assert_json_error(r, 507)
    assert "space" in body["status"].lower()
    assert client.get(f"{API}/fileids").json() == []
    assert [p for p in (tmp_path / "data").rglob("*") if p.is_file()] == []


# --- item 4: unhandled errors are seen --------------------------------------------------------


@pytest.fixture
def failing_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """An app whose file list raises an unexpected error."""
    from caesar_rest.storage.files import FileService

    def boom(*_: object, **__: object) -> None:
        raise RuntimeError("unexpected failure for the test")

    monkeypatch.setattr(FileService, "list", boom)
    app = create_app(make_settings(tmp_path), start_backends=False)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_unhandled_error_is_json_500_with_request_id(
    failing_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    r = failing_client.get(f"{API}/fileids", headers={"X-Request-ID": "rid-500-test"})
    body = assert_json_error(r, 500)
    assert r.headers["x-request-id"] == "rid-500-test"
    assert body["request_id"] == "rid-500-test"
    # A new id when the client sends none, the same in the header and the body.
    r = failing_client.get(f"{API}/fileids")
    assert r.status_code == 500 and r.json()["request_id"] == r.headers["x-request-id"]


def test_unhandled_error_is_logged_with_request_id(
    failing_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    failing_client.get(f"{API}/fileids", headers={"X-Request-ID": "rid-log-test"})
    events = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    errors = [e for e in events if e.get("event") == "unhandled_error"]
    assert errors, events
    # The traceback line itself names the request.
    assert errors[0]["request_id"] == "rid-log-test"
    assert "RuntimeError: unexpected failure" in errors[0]["exception"]
    # The access line (pre-rendered JSON) says 500, not 0.
    lines = [json.loads(r.msg) for r in caplog.records if r.name == "caesar_rest.access"]
    access = [e for e in lines if e.get("request_id") == "rid-log-test"]
    assert access and access[-1]["status"] == 500, lines


def test_unhandled_error_is_counted_as_500(failing_client: TestClient) -> None:
    failing_client.get(f"{API}/fileids")
    text = failing_client.get("/metrics").text
    counted = [
        line
        for line in text.splitlines()
        if line.startswith("caesar_http_requests_total{")
        and 'route="/caesar/api/v1.0/fileids"' in line
    ]
    assert any('status="500"' in line for line in counted), counted
    assert not any('status="0"' in line for line in text.splitlines()), counted
