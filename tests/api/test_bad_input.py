"""Bad input: every case gets JSON with the right status code, never a 500 or HTML."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

API = "/caesar/api/v1.0"


def upload(client: TestClient, path: Path) -> str:
    with open(path, "rb") as fh:
        r = client.post(f"{API}/upload", files={"file": (path.name, fh)})
    assert r.status_code == 200, r.text
    return str(r.json()["uuid"])


def assert_json_error(r, code: int, contains: str = "") -> dict:  # type: ignore[no-untyped-def]
    assert r.status_code == code, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body["status"], str) and body["status"]
    assert contains.lower() in body["status"].lower(), body
    return body


def stored_files(root: Path) -> list[Path]:
    return [p for p in (root / "data").rglob("*") if p.is_file()]


def test_non_fits_upload_is_415(app_client: TestClient, tmp_path: Path) -> None:
    r = app_client.post(f"{API}/upload", files={"file": ("notes.txt", b"hello, not an image")})
    assert_json_error(r, 415, "not an image")
    r = app_client.post(f"{API}/upload", files={"file": ("fake.fits", b"x" * 5000)})
    assert_json_error(r, 415, "FITS")
    assert stored_files(tmp_path) == []
    assert app_client.get(f"{API}/fileids").json() == []


def test_fits_without_image_is_415(app_client: TestClient, tmp_path: Path) -> None:
    from astropy.io import fits

    buf = io.BytesIO()
    fits.PrimaryHDU().writeto(buf)
    r = app_client.post(f"{API}/upload", files={"file": ("empty.fits", buf.getvalue())})
    assert_json_error(r, 415, "no 2-D image")
    assert stored_files(tmp_path) == []


def test_oversized_upload_is_413_and_leaves_nothing(tmp_path: Path) -> None:
    from caesar_rest.api.app import create_app

    from tests.support.server import make_settings

    with TestClient(create_app(make_settings(tmp_path, max_upload_mib=1))) as client:
        big = b"SIMPLE  =                    T" + b" " * (2 * 1024 * 1024)
        r = client.post(f"{API}/upload", files={"file": ("big.fits", big)})
        assert_json_error(r, 413, "too large")

        # Without a Content-Length the limit is enforced while streaming.
        def gen():  # type: ignore[no-untyped-def]
            yield b'--bnd\r\nContent-Disposition: form-data; name="file"; filename="b.fits"'
            yield b"\r\n\r\n"
            for _ in range(40):
                yield b"\0" * 65536
            yield b"\r\n--bnd--\r\n"

        r = client.post(
            f"{API}/upload",
            content=gen(),
            headers={"Content-Type": "multipart/form-data; boundary=bnd"},
        )
        assert_json_error(r, 413, "too large")
        assert client.get(f"{API}/fileids").json() == []
    assert stored_files(tmp_path) == []


def test_upload_without_file_part_is_400(app_client: TestClient) -> None:
    r = app_client.post(f"{API}/upload", data={"tag": "x"}, files={"other": ("a.fits", b"SIMPLE")})
    assert_json_error(r, 400, "file")
    r = app_client.post(
        f"{API}/upload", content=b"{}", headers={"Content-Type": "application/json"}
    )
    assert_json_error(r, 400, "multipart")


@pytest.fixture
def file_id(app_client: TestClient, s17: Path) -> str:
    return upload(app_client, s17)


def submit(client: TestClient, body: object, raw: bytes | None = None):  # type: ignore[no-untyped-def]
    if raw is not None:
        return client.post(f"{API}/job", content=raw, headers={"Content-Type": "application/json"})
    return client.post(f"{API}/job", json=body)


def test_unknown_app(app_client: TestClient, file_id: str) -> None:
    r = submit(app_client, {"app": "nosuchapp", "job_inputs": {}, "data_inputs": file_id})
    body = assert_json_error(r, 400, "Unknown app nosuchapp")
    assert body["state"] == "ABORTED" and body["job_id"] == ""
    assert_json_error(app_client.get(f"{API}/app/nosuchapp/describe"), 400, "unknown app")


def test_unknown_option_is_named(app_client: TestClient, file_id: str) -> None:
    r = submit(
        app_client,
        {
            "app": "sep",
            "job_inputs": {"seedthr": 5, "bogus": 1, "zz": True},
            "data_inputs": file_id,
        },
    )
    body = assert_json_error(r, 400, "bogus")
    assert "zz" in body["status"]


def test_out_of_range_value(app_client: TestClient, file_id: str) -> None:
    r = submit(app_client, {"app": "sep", "job_inputs": {"seedthr": -3}, "data_inputs": file_id})
    assert_json_error(r, 400, "below its minimum")
    r = submit(app_client, {"app": "sep", "job_inputs": {"seedthr": 1e9}, "data_inputs": file_id})
    assert_json_error(r, 400, "above its maximum")


def test_boolean_for_int_is_refused(app_client: TestClient, file_id: str) -> None:
    r = submit(app_client, {"app": "sep", "job_inputs": {"npixmin": True}, "data_inputs": file_id})
    assert_json_error(r, 400, "not a boolean")
    r = submit(app_client, {"app": "sep", "job_inputs": {"npixmin": 2.5}, "data_inputs": file_id})
    assert_json_error(r, 400, "integer")
    r = submit(app_client, {"app": "sep", "job_inputs": {"globalbkg": 1}, "data_inputs": file_id})
    assert_json_error(r, 400, "flag")


def test_missing_data_inputs(app_client: TestClient) -> None:
    r = submit(app_client, {"app": "sep", "job_inputs": {"seedthr": 5}})
    assert_json_error(r, 400, "data_inputs")


def test_unknown_file_id(app_client: TestClient) -> None:
    r = submit(app_client, {"app": "sep", "job_inputs": {}, "data_inputs": "0" * 32})
    assert_json_error(r, 400, "Cannot find file")
    assert_json_error(app_client.get(f"{API}/download/{'0' * 32}"), 404, "not found")
    assert_json_error(app_client.get(f"{API}/delete/{'0' * 32}"), 404, "not found")


@pytest.mark.parametrize("bad", ["..%2F..%2Fetc%2Fpasswd", "..", "abc.fits", "%2E%2E", "a" * 40])
def test_file_id_with_path_characters(app_client: TestClient, bad: str) -> None:
    for route in ("download", "delete"):
        r = app_client.get(f"{API}/{route}/{bad}")
        assert r.status_code in (400, 404), r.text
        assert r.headers["content-type"].startswith("application/json")
    r = submit(app_client, {"app": "sep", "job_inputs": {}, "data_inputs": "../../etc/passwd"})
    assert_json_error(r, 400, "file id")


def test_cancel_of_finished_job(app_client: TestClient, file_id: str) -> None:
    from tests.support.server import wait_state

    r = submit(app_client, {"app": "sleep", "job_inputs": {"seconds": 0}, "data_inputs": file_id})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    wait_state(app_client, job_id, {"SUCCESS"}, prefix=API)
    r = app_client.post(f"{API}/job/{job_id}/cancel")
    assert r.status_code == 200
    assert "already completed" in r.json()["status"]
    assert app_client.get(f"{API}/job/{job_id}/status").json()["state"] == "SUCCESS"


def test_body_that_is_not_json(app_client: TestClient) -> None:
    assert_json_error(submit(app_client, None, raw=b"{not json"), 400, "not valid JSON")
    assert_json_error(submit(app_client, None, raw=b"[1, 2]"), 400, "JSON object")
    assert_json_error(submit(app_client, None, raw=b""), 400, "JSON object")


def test_job_inputs_not_an_object(app_client: TestClient, file_id: str) -> None:
    r = submit(app_client, {"app": "sep", "job_inputs": [1], "data_inputs": file_id})
    assert_json_error(r, 400, "job_inputs")


def test_unknown_job_and_route(app_client: TestClient) -> None:
    assert_json_error(app_client.get(f"{API}/job/{'a' * 32}/status"), 404, "not found")
    assert_json_error(app_client.get(f"{API}/job/{'a' * 32}/output"), 404, "not found")
    assert_json_error(app_client.get(f"{API}/job/../status"), 404)
    assert_json_error(app_client.get(f"{API}/nothing-here"), 404, "No such route")
    assert_json_error(app_client.delete(f"{API}/upload"), 405)


def test_picture_is_refused_for_sep(app_client: TestClient) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 100
    r = app_client.post(f"{API}/upload", files={"file": ("pic.png", png)})
    assert r.status_code == 200
    fid = r.json()["uuid"]
    r = submit(app_client, {"app": "sep", "job_inputs": {}, "data_inputs": fid})
    assert_json_error(r, 400, "needs a FITS image")


def test_unknown_extended_method_is_400(app_client: TestClient, file_id: str) -> None:
    # No silent fallback: a method (or contour, or initial contour) the caesar app lacks.
    for name, value in (
        ("extsfinder", "SP-KMEANS"),
        ("activecontour", "GAC"),
        ("ac-levelset", "SQUARE"),
    ):
        r = submit(
            app_client, {"app": "caesar", "job_inputs": {name: value}, "data_inputs": file_id}
        )
        assert_json_error(r, 400, f"option '{name}' must be one of")
