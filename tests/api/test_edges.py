"""Issue 14, item 10: ranges, HEAD and Allow, the OpenAPI contract, /metrics under --aai,
the Host header, /readyz on a full disk."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from caesar_rest.api.app import create_app
from caesar_rest.settings import OIDCSettings
from caesar_rest.storage.paths import new_id

from tests.support.fuzz import StubValidator
from tests.support.server import LiveServer, make_settings, wait_state

API = "/caesar/api/v1.0"
#: Range headers that cannot be served: past the end, reversed, another unit, malformed,
#: several ranges none of which starts inside the file.
BAD_RANGES = (
    "bytes={size}-",
    "bytes=20-10",
    "items=0-9",
    "bytes",
    "bytes=x-y",
    "bytes={size}-,{big}-",
)


def upload(client: TestClient | httpx.Client, image: Path, url: str = f"{API}/upload") -> str:
    with open(image, "rb") as fh:
        r = client.post(url, files={"file": ("a.fits", fh)})
    assert r.status_code == 200, r.text
    return str(r.json()["uuid"])


def assert_bad_ranges(client: TestClient | httpx.Client, url: str, size: int) -> None:
    for bad in BAD_RANGES:
        header = bad.format(size=size, big=size + 100)
        r = client.get(url, headers={"Range": header})
        assert r.status_code == 416, (url, header, r.status_code)
        assert r.headers["content-type"] == "application/json", header
        assert r.headers["content-range"] == f"bytes */{size}", header
        assert r.json()["status"].startswith("Requested range not satisfiable"), header


def test_ranges_on_downloads_outputs_and_uws_results(app_client: TestClient, s17: Path) -> None:
    fid = upload(app_client, s17)
    size = s17.stat().st_size
    url = f"{API}/download/{fid}"
    assert_bad_ranges(app_client, url, size)
    r = app_client.get(url, headers={"Range": "bytes=0-9"})
    assert r.status_code == 206 and r.content == s17.read_bytes()[:10]
    r = app_client.get(url, headers={"Range": "bytes=0-9,20-29"})
    assert r.status_code == 206 and r.headers["content-type"].startswith("multipart/byteranges")
    job = app_client.post(
        f"{API}/job", json={"app": "sleep", "job_inputs": {"seconds": 0.1}, "data_inputs": fid}
    ).json()["job_id"]
    wait_state(app_client, job, {"SUCCESS"}, prefix=API)
    out = app_client.get(f"{API}/job/{job}/output")
    assert out.status_code == 200
    assert_bad_ranges(app_client, f"{API}/job/{job}/output", len(out.content))
    log = app_client.get(f"/uws/jobs/{job}/results/log")
    assert log.status_code == 200
    assert_bad_ranges(app_client, f"/uws/jobs/{job}/results/log", len(log.content))


def test_head_answers_every_get_route_like_get(app_client: TestClient, s17: Path) -> None:
    fid = upload(app_client, s17)
    paths = [
        p for p, ops in app_client.get("/openapi.json").json()["paths"].items() if "get" in ops
    ]
    assert len(paths) > 15
    for path in [*paths, "/metrics", "/docs", "/openapi.json"]:
        url = re.sub(r"\{file_uuid\}", fid, re.sub(r"\{[^}]+\}", "caesar", path))
        got, head = app_client.get(url), app_client.head(url)
        assert head.status_code == got.status_code, url
        assert head.content == b"", url
        assert head.headers.get("content-type") == got.headers.get("content-type"), url
        if "content-length" in got.headers and path != "/metrics":
            assert head.headers["content-length"] == got.headers["content-length"], url
    r = app_client.head(f"{API}/download/{fid}")
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-length"] == str(s17.stat().st_size)


def test_405_names_every_allowed_method_in_json(app_client: TestClient) -> None:
    for method, url, allow in (
        ("PUT", "/healthz", "GET, HEAD"),
        ("DELETE", f"{API}/job/{new_id()}/cancel", "GET, HEAD, POST"),
        ("PATCH", f"{API}/upload", "POST"),
        ("PUT", "/uws/jobs", "GET, HEAD, POST"),
    ):
        r = app_client.request(method, url)
        assert r.status_code == 405, url
        assert r.headers["allow"] == allow, url
        assert r.json()["status"].endswith(f"allowed: {allow}"), url


def aai_app(root: Path, **kw: object) -> TestClient:
    oidc = OIDCSettings(issuer="http://127.0.0.1:9/realm", audience="caesar-rest")
    return TestClient(create_app(make_settings(root, aai=True, oidc=oidc, **kw)))


def test_openapi_declares_security_id_patterns_and_error_codes(
    app_client: TestClient, tmp_path: Path
) -> None:
    off = app_client.get("/openapi.json").json()
    assert "securitySchemes" not in off.get("components", {})
    with aai_app(tmp_path / "on") as client:
        doc = client.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An OIDC access token of the configured provider",
    }
    assert schemes["oidc"]["openIdConnectUrl"] == (
        "http://127.0.0.1:9/realm/.well-known/openid-configuration"
    )
    paths = doc["paths"]
    assert paths[f"{API}/jobs"]["get"]["security"] == [{"bearerAuth": []}]
    assert "security" not in paths["/healthz"]["get"]
    status = paths[f"{API}/job/{{job_id}}/status"]["get"]
    pattern = status["parameters"][0]["schema"]["pattern"]
    assert re.match(pattern, new_id()) and re.match(
        pattern, "0" * 8 + "-0000-0000-0000-" + "0" * 12
    )
    assert not re.match(pattern, "caesar")
    download = paths[f"{API}/download/{{file_uuid}}"]["get"]
    assert download["parameters"][0]["schema"]["pattern"] == "^[0-9a-f]{32}$"
    error = {"$ref": "#/components/schemas/ErrorBody"}
    for code in ("401", "416", "500", "503"):
        assert download["responses"][code]["content"]["application/json"]["schema"] == error
    assert {"401", "403", "413", "415", "429", "503"} <= set(
        paths[f"{API}/job"]["post"]["responses"]
    )
    assert {"413", "507"} <= set(paths[f"{API}/upload"]["post"]["responses"])
    assert "401" not in off["paths"][f"{API}/jobs"]["get"]["responses"]


def test_metrics_need_the_metrics_token_or_an_admin_under_aai(
    app_client: TestClient, tmp_path: Path
) -> None:
    assert app_client.get("/metrics").status_code == 200  # authentication off: open
    with aai_app(tmp_path, metrics_token="scrape-secret") as client:
        client.app.state.ctx.validator = StubValidator()  # type: ignore[attr-defined]
        r = client.get("/metrics")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["status"].startswith("authentication required")
        r = client.get("/metrics", headers={"Authorization": "Bearer user-token"})
        assert r.status_code == 403
        assert r.json()["status"] == "/metrics needs the admin role or the metrics token"
        r = client.get("/metrics", headers={"Authorization": "Bearer wrong-secret"})
        assert r.status_code == 401
        for token in ("admin-token", "scrape-secret"):
            r = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200 and "caesar_http_requests_total" in r.text, token


def test_readyz_is_not_ready_on_a_nearly_full_disk(tmp_path: Path) -> None:
    """The real free space of the test's disk, against a threshold above any disk's size."""
    with TestClient(create_app(make_settings(tmp_path / "a"))) as client:
        assert client.get("/readyz").json()["status"] == "ok"
    with TestClient(create_app(make_settings(tmp_path / "b", ready_min_free_mib=2**40))) as client:
        r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["status"] == "not ready"
    checks = r.json()["checks"]
    assert checks["database"] == "ok"
    for name in ("datadir", "jobdir"):
        assert re.fullmatch(
            r"error: disk nearly full \(\d+ MiB free, ready_min_free_mib 1099511627776\)",
            checks[name],
        ), checks


def test_hostile_host_header_is_never_echoed(tmp_path: Path, s17: Path) -> None:
    """A real server: redirects and links name the socket's address, or public_url."""
    evil = {"Host": "evil.example:666"}
    srv = LiveServer(tmp_path / "plain").start()
    try:
        with httpx.Client(base_url=srv.url) as c:
            fid = upload(c, s17, f"{srv.api}/upload")
            r = c.get(f"{srv.api}/download", params={"uuid": fid}, headers=evil)
            assert r.status_code == 302
            assert r.headers["location"] == f"{srv.url}/caesar/api/v1.0/download/{fid}"
            r = c.get(f"{srv.api}/jobs/", headers=evil)  # the trailing-slash redirect
            assert "evil" not in r.headers.get("location", "") and "evil" not in r.text
            form = {"app": "sleep", "file": fid, "seconds": "0.1"}
            r = c.post("/uws/jobs", data=form, headers=evil)
            assert r.status_code == 303, r.text
            assert r.headers["location"].startswith(f"{srv.url}/uws/jobs/")
            assert "evil" not in c.get("/uws/jobs", headers=evil).text
            assert_bad_ranges(c, f"{srv.api}/download/{fid}", s17.stat().st_size)
    finally:
        srv.stop()
    public = "https://caesar.example.org"
    srv = LiveServer(tmp_path / "public", CAESAR_REST_PUBLIC_URL=public).start()
    try:
        r = httpx.get(f"{srv.api}/download", params={"uuid": new_id()}, headers=evil)
        assert r.status_code == 302 and r.headers["location"].startswith(f"{public}/caesar/api/")
    finally:
        srv.stop()


@pytest.mark.parametrize("header", ["bytes=0-0", "bytes=-1"])
def test_good_ranges_still_served(app_client: TestClient, s17: Path, header: str) -> None:
    fid = upload(app_client, s17)
    r = app_client.get(f"{API}/download/{fid}", headers={"Range": header})
    assert r.status_code == 206 and len(r.content) == 1
