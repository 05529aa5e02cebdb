"""Cross-site requests (issue 14, item 6): a page on another site changes nothing.

The three attacks (a job from a ``text/plain`` JSON body, an upload, a UWS job created and
started with an inline file) are refused from a foreign ``Origin`` and store nothing; the same
requests from the service's own origin, from the Python client, from curl (no ``Origin``) and
as pyvo sends them pass. CORS is off unless ``cors_origins`` lists origins.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from caesar_rest.api.app import create_app
from caesar_rest.api.crossorigin import is_json_type, parse_origin
from caesar_rest.client.core import CaesarClient

from tests.deploy.deploy_support import small_fits
from tests.support.server import LiveServer, make_settings

API = "/caesar/api/v1.0"
EVIL = "https://evil.example"
SELF = "http://testserver"  # the TestClient's origin
FITS = small_fits(16)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path))) as c:
        yield c


def stored(root: Path) -> list[Path]:
    return [p for p in (root / "data").rglob("*") if p.is_file()]


def job_body(file_id: str = "0" * 32) -> str:
    return json.dumps({"app": "sleep", "job_inputs": {"seconds": 0}, "data_inputs": file_id})


def attack_job(c: TestClient, headers: dict[str, str], file_id: str = "0" * 32) -> httpx.Response:
    """``fetch(url, {method: "POST", body: json})``: a text/plain body, no preflight."""
    return c.post(
        f"{API}/job", content=job_body(file_id), headers={"Content-Type": "text/plain", **headers}
    )


def attack_upload(c: TestClient, headers: dict[str, str]) -> httpx.Response:
    """A multipart form post of an image (an HTML form on the foreign page)."""
    return c.post(f"{API}/upload", files={"file": ("x.fits", FITS)}, headers=headers)


def attack_uws(c: TestClient, headers: dict[str, str]) -> httpx.Response:
    """One multipart form post that creates a UWS job with an inline image and starts it."""
    return c.post(
        "/uws/jobs",
        data={"app": "sleep", "seconds": "0", "PHASE": "RUN"},
        files={"file": ("x.fits", FITS)},
        headers=headers,
        follow_redirects=False,
    )


def assert_refused(r: httpx.Response) -> None:
    assert r.status_code == 403, r.text
    assert r.headers["content-type"] == "application/json"
    assert "cross-site request refused" in r.json()["status"].lower()
    assert r.headers["x-request-id"]  # inside the request-id middleware: logged and traced


def assert_nothing_stored(c: TestClient, root: Path) -> None:
    assert stored(root) == []
    assert c.get(f"{API}/fileids").json() == []
    assert c.get(f"{API}/jobs").json() == []
    assert "<uws:jobref" not in c.get("/uws/jobs").text


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": EVIL},
        {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
        {"Referer": f"{EVIL}/page.html"},  # a browser that left Origin out
        {"Origin": "null"},  # a sandboxed frame or a data: page
        {"Origin": "http://testserver:8081"},  # another port is another origin
        {"Origin": "https://testserver"},  # another scheme too
    ],
    ids=["origin", "fetch-site", "referer", "null", "port", "scheme"],
)
def test_the_three_attacks_are_refused(
    client: TestClient, tmp_path: Path, headers: dict[str, str]
) -> None:
    fid = client.post(
        f"{API}/upload", files={"file": ("own.fits", FITS)}, headers={"Origin": SELF}
    ).json()["uuid"]
    before = stored(tmp_path)
    assert_refused(attack_job(client, headers, fid))
    assert_refused(attack_upload(client, headers))
    assert_refused(attack_uws(client, headers))
    # The other state-changing posts are guarded the same way.
    assert_refused(client.post(f"{API}/delete/{fid}", headers=headers))
    assert stored(tmp_path) == before
    assert [f["fileid"] for f in client.get(f"{API}/fileids").json()] == [fid]
    assert client.get(f"{API}/jobs").json() == []
    assert "<uws:jobref" not in client.get("/uws/jobs").text


def test_uws_job_changes_from_a_foreign_page_are_refused(client: TestClient) -> None:
    fid = attack_upload(client, {}).json()["uuid"]
    r = client.post(
        "/uws/jobs", data={"app": "sleep", "file": fid, "seconds": "30"}, follow_redirects=False
    )
    url = r.headers["location"]
    foreign = {"Origin": EVIL}
    assert_refused(client.post(f"{url}/phase", data={"PHASE": "RUN"}, headers=foreign))
    assert_refused(
        client.post(f"{url}/executionduration", data={"EXECUTIONDURATION": "5"}, headers=foreign)
    )
    assert_refused(client.post(url, data={"ACTION": "DELETE"}, headers=foreign))
    assert_refused(client.delete(url, headers=foreign))
    assert client.get(f"{url}/phase").text == "PENDING"
    assert client.get(f"{url}/executionduration").text != "5"


def test_json_routes_take_only_json(client: TestClient, tmp_path: Path) -> None:
    """Without any Origin (curl), a body that is not declared JSON is 415 and stores nothing."""
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None):
        headers = {"Content-Type": ctype} if ctype else {}
        r = client.post(f"{API}/job", content=job_body(), headers=headers)
        assert r.status_code == 415, (ctype, r.text)
        assert r.headers["content-type"] == "application/json"
        assert "application/json" in r.json()["status"]
    r = client.put(
        f"{API}/admin/users/u1/quota",
        content='{"bytes": 5}',
        headers={"Content-Type": "text/plain"},
    )
    assert r.status_code == 415, r.text
    assert "u1" not in client.get(f"{API}/admin/users").text
    assert_nothing_stored(client, tmp_path)
    # JSON types, parameters included, are accepted.
    assert client.put(f"{API}/admin/users/u1/quota", json={"bytes": 5}).status_code == 200
    r = client.put(
        f"{API}/admin/users/u1/quota",
        content='{"bytes": 6}',
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text
    assert [
        is_json_type(t)
        for t in ("application/json; charset=utf-8", "application/x+json", "text/json", "")
    ] == [True, True, False, False]


def test_the_same_requests_from_the_services_own_page_pass(client: TestClient) -> None:
    own = {"Origin": SELF, "Sec-Fetch-Site": "same-origin"}
    r = attack_upload(client, own)
    assert r.status_code == 200, r.text
    fid = r.json()["uuid"]
    r = client.post(
        f"{API}/job", content=job_body(fid), headers={"Content-Type": "application/json", **own}
    )
    assert r.status_code == 202, r.text
    assert attack_uws(client, own).status_code == 303
    # The page's forms: Referer only (Origin left out) and Origin only both pass.
    r = attack_upload(client, {"Referer": f"{SELF}/"})
    assert r.status_code == 200, r.text
    r = client.post(
        f"{API}/download", data={"uuid": fid}, headers={"Origin": SELF}, follow_redirects=False
    )
    assert r.status_code == 302, r.text
    page = client.get("/").text
    assert 'action="caesar/api/v1.0/upload"' in page


def test_behind_a_proxy_the_browser_verdict_or_public_url_pass(tmp_path: Path) -> None:
    """Behind nginx the Host lacks the public port and a unix socket hides the scheme: the
    browser's ``Sec-Fetch-Site: same-origin`` passes, and so does ``public_url``'s origin."""
    public = "https://caesar.example.org:8443"
    with TestClient(create_app(make_settings(tmp_path, public_url=f"{public}/sub/"))) as c:
        assert attack_upload(c, {"Origin": public}).status_code == 200
        assert attack_upload(c, {"Origin": "https://caesar.example.org"}).status_code == 403
        assert attack_upload(c, {"Origin": SELF}).status_code == 200  # as served, still
    with TestClient(create_app(make_settings(tmp_path / "b"))) as c:
        r = attack_upload(c, {"Origin": public, "Sec-Fetch-Site": "same-origin"})
        assert r.status_code == 200, r.text
        assert_refused(attack_upload(c, {"Origin": public, "Sec-Fetch-Site": "same-site"}))


def test_non_browser_clients_pass(client: TestClient, tmp_path: Path) -> None:
    """No Origin and no Referer (curl, pyvo's requests session): not a browser's cross-site
    post. A custom header passes even with a foreign Origin: a page could only send it after
    a CORS preflight that this service does not grant."""
    r = client.post(f"{API}/upload", files={"file": ("x.fits", FITS)})
    assert r.status_code == 200
    fid = r.json()["uuid"]
    # pyvo's AsyncTAPJob posts form-encoded PHASE=RUN with requests: no Origin.
    r = client.post(
        "/uws/jobs", data={"app": "sleep", "file": fid, "seconds": "0"}, follow_redirects=False
    )
    assert r.status_code == 303
    r = client.post(f"{r.headers['location']}/phase", data={"PHASE": "RUN"}, follow_redirects=False)
    assert r.status_code == 303
    for header in ("X-CAESAR-Client", "X-Requested-With"):
        r = attack_upload(client, {"Origin": EVIL, header: "1"})
        assert r.status_code == 200, (header, r.text)


def test_the_python_client_sends_its_header_and_works(client: TestClient, tmp_path: Path) -> None:
    image = tmp_path / "img.fits"
    image.write_bytes(FITS)
    with CaesarClient(SELF, transport=client._transport) as c:
        assert c._http.headers["x-caesar-client"]
        # Even if something in between added a foreign Origin, the client's header passes.
        c._http.headers["Origin"] = EVIL
        info = c.upload(image)
        job = c.submit("sleep", image, {"seconds": 0}, run=False)
    assert info.file_id and job.job_id


def test_cors_is_off_by_default(client: TestClient) -> None:
    r = client.options(
        f"{API}/job",
        headers={
            "Origin": EVIL,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert "access-control-allow-origin" not in r.headers
    assert r.status_code == 405
    r = client.get(f"{API}/apps", headers={"Origin": EVIL})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_cors_answers_only_the_configured_origins(tmp_path: Path) -> None:
    friend = "https://portal.example.org"
    with TestClient(create_app(make_settings(tmp_path, cors_origins=[friend]))) as c:
        pre: dict[str, Any] = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-caesar-client",
        }
        r = c.options(f"{API}/job", headers={"Origin": friend, **pre})
        assert r.status_code == 200, r.text
        assert r.headers["access-control-allow-origin"] == friend
        assert "POST" in r.headers["access-control-allow-methods"]
        assert "access-control-allow-credentials" not in r.headers  # bearer tokens, no cookies
        r = c.options(f"{API}/job", headers={"Origin": EVIL, **pre})
        assert "access-control-allow-origin" not in r.headers
        # The configured origin also passes the cross-site check; others do not.
        r = attack_upload(c, {"Origin": friend})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == friend
        assert_refused(attack_upload(c, {"Origin": EVIL}))
        # A page of the job list: its Link header (next/prev pages) is readable by the page.
        r = c.get(f"{API}/jobs", params={"limit": 1}, headers={"Origin": friend})
        assert "link" in r.headers["access-control-expose-headers"].lower()


def test_parse_origin() -> None:
    assert parse_origin("HTTPS://Host.Example:443/x?y") == ("https", "host.example", 443)
    assert parse_origin("http://h") == ("http", "h", 80)
    assert parse_origin("http://[::1]:8080") == ("http", "::1", 8080)
    for bad in ("null", "file:///etc", "ftp://h", "http://h:99999", "", "//h"):
        assert parse_origin(bad) is None, bad


def test_a_live_server_behind_its_own_origin_and_curl(tmp_path: Path) -> None:
    """A real server (real Host header): the page's form post from its own origin, curl with
    no Origin, and the same form post from a foreign page."""
    image = tmp_path / "img.fits"
    image.write_bytes(FITS)
    srv = LiveServer(tmp_path / "srv").start()
    try:

        def curl(*args: str) -> int:
            out = subprocess.run(  # noqa: S603
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *args],  # noqa: S607
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            return int(out.stdout)

        form = ["-F", f"file=@{image}", f"{srv.api}/upload"]
        assert curl(*form) == 200
        assert curl("-H", f"Origin: {srv.url}", *form) == 200
        assert curl("-H", f"Origin: {EVIL}", *form) == 403
        assert (
            curl(
                "-H",
                f"Origin: {EVIL}",
                "-F",
                "app=sleep",
                "-F",
                f"file=@{image}",
                "-F",
                "PHASE=RUN",
                f"{srv.url}/uws/jobs",
            )
            == 403
        )
        assert len(httpx.get(f"{srv.api}/fileids").json()) == 2
    finally:
        srv.stop()
