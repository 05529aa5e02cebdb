"""The predecessor's 23 routes exist with their methods; OpenAPI and the web page are served."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from fastapi.testclient import TestClient

from caesar_rest.api.app import STATIC_DIR, create_app

from tests.support.server import make_settings

API = "/caesar/api/v1.0"

LEGACY = {
    "/": {"GET"},
    "/login": {"GET"},
    "/logout": {"GET"},
    f"{API}/upload": {"POST"},
    f"{API}/fileids": {"GET"},
    f"{API}/download": {"GET", "POST"},
    f"{API}/download/{{file_uuid}}": {"GET", "POST"},
    f"{API}/delete/{{file_uuid}}": {"GET", "POST"},
    f"{API}/apps": {"GET"},
    f"{API}/app/{{app_name}}/describe": {"GET"},
    f"{API}/job": {"POST"},
    f"{API}/jobs": {"GET"},
    f"{API}/job/{{job_id}}/status": {"GET"},
    f"{API}/job/{{job_id}}/cancel": {"GET", "POST"},
    f"{API}/job/{{job_id}}/output": {"GET"},
    f"{API}/job/{{job_id}}/sources": {"GET"},
    f"{API}/job/{{job_id}}/output-sources": {"GET"},
    f"{API}/job/{{job_id}}/source-components": {"GET"},
    f"{API}/job/{{job_id}}/output-components": {"GET"},
    f"{API}/job/{{job_id}}/preview": {"GET"},
    f"{API}/job/{{job_id}}/output-plot": {"GET"},
    f"{API}/accounting": {"GET"},
    f"{API}/appstats": {"GET"},
}


def test_all_legacy_routes_and_methods(app_client: TestClient) -> None:
    """Each route answers each of its methods (not 405, not 'No such route')."""
    assert len(LEGACY) == 23
    for path, methods in LEGACY.items():
        url = path.format(file_uuid="0" * 32, job_id="0" * 32, app_name="sep")
        for method in methods:
            r = app_client.request(method, url)
            assert r.status_code != 405, (method, url)
            if r.headers["content-type"].startswith("application/json"):
                body = r.json()
                assert not (isinstance(body, dict) and body.get("status") == "No such route")


def test_openapi_and_docs(app_client: TestClient) -> None:
    spec = app_client.get("/openapi.json").json()
    assert spec["info"]["title"] == "caesar-rest"
    job = spec["paths"][f"{API}/job"]["post"]
    schema = job["requestBody"]["content"]["application/json"]["schema"]
    # data_inputs may be left out for the predecessor's job_inputs.inputfile (issue 15).
    assert set(schema["required"]) == {"app"}
    assert "inputfile" in schema["properties"]["data_inputs"]["description"]
    assert "202" in job["responses"]
    ops = [op["operationId"] for p in spec["paths"].values() for op in p.values()]
    assert len(ops) == len(set(ops))
    assert app_client.get("/docs").status_code == 200


def test_docs_assets_are_served_by_the_service(tmp_path: Path) -> None:
    """/docs works without internet: every URL of the page is the service's own (under its
    root path), and the script, style sheet and icon answer with their media types."""
    settings = make_settings(tmp_path, root_path="/caesar-rest")
    with TestClient(create_app(settings)) as client:
        r = client.get("/docs")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*'([^']+)'""", r.text)
        urls = [a or b for a, b in urls]
        assert not [u for u in urls if "//" in u], urls  # no other origin
        kinds = {
            "swagger-ui-bundle.js": "text/javascript",
            "swagger-ui.css": "text/css",
            "favicon-32x32.png": "image/png",
        }
        assets = [u for u in urls if u.rsplit("/", 1)[-1] in kinds]
        assert len(assets) == 3 and all(u.startswith("/caesar-rest/docs/static/") for u in assets)
        assert "'/caesar-rest/openapi.json'" in r.text
        for url in assets:
            a = client.get(url.removeprefix("/caesar-rest"))
            assert a.status_code == 200, url
            assert a.headers["content-type"].startswith(kinds[url.rsplit("/", 1)[-1]])
            assert len(a.content) > 500
        assert b"SwaggerUIBundle" in client.get("/docs/static/swagger-ui-bundle.js").content
        # Only those files: no path out of the folder, no other file of it.
        for name in ("SOURCE.txt", "LICENSE", "..%2F..%2Fapp.py"):
            assert client.get(f"/docs/static/{name}").status_code == 404
        assert client.get("/docs/oauth2-redirect").status_code == 200


def test_redoc_assets_are_served_by_the_service(tmp_path: Path) -> None:
    """/redoc works without internet: its script and icon are the service's own (no CDN, no
    Google Fonts) and are served; the page loads the service's own OpenAPI document."""
    settings = make_settings(tmp_path, root_path="/caesar-rest")
    with TestClient(create_app(settings)) as client:
        r = client.get("/redoc")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        urls = re.findall(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']""", r.text)
        assert not [u for u in urls if "//" in u], urls  # no other origin
        assert "googleapis" not in r.text and "cdn." not in r.text
        assert sorted(urls) == [
            "/caesar-rest/docs/static/favicon-32x32.png",
            "/caesar-rest/docs/static/redoc.standalone.js",
            "/caesar-rest/openapi.json",
        ]
        js = client.get("/docs/static/redoc.standalone.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        digest = hashlib.sha256(js.content).hexdigest()
        source = (STATIC_DIR / "redoc" / "SOURCE.txt").read_text()
        assert digest in source and "redoc@2.5.4" in source  # the recorded, unchanged file
        assert client.get("/docs/static/favicon-32x32.png").status_code == 200
        assert client.get("/openapi.json").json()["info"]["title"] == "caesar-rest"
        assert client.get("/docs/static/redoc.standalone.js.LICENSE.txt").status_code == 404


def test_index_page_and_health(app_client: TestClient) -> None:
    r = app_client.get("/")
    assert r.status_code == 200 and "upload" in r.text.lower() and "sep" in r.text
    assert app_client.get("/healthz").json()["status"] == "ok"
    ready = app_client.get("/readyz").json()
    assert ready["status"] == "ok" and ready["checks"]["database"] == "ok"
    assert app_client.get("/logout").text == "Bye bye"
    r = app_client.get("/caesar/api/v1.0/apps")
    assert r.headers["x-request-id"]


def test_accounting_counts(app_client: TestClient, s17) -> None:  # type: ignore[no-untyped-def]
    from tests.support.server import wait_state

    with open(s17, "rb") as fh:
        fid = app_client.post(f"{API}/upload", files={"file": ("a.fits", fh)}).json()["uuid"]
    j1 = app_client.post(
        f"{API}/job", json={"app": "sleep", "job_inputs": {"seconds": 0}, "data_inputs": fid}
    ).json()["job_id"]
    j2 = app_client.post(
        f"{API}/job",
        json={"app": "sleep", "job_inputs": {"seconds": 0, "exit-code": 1}, "data_inputs": fid},
    ).json()["job_id"]
    wait_state(app_client, j1, {"SUCCESS"}, prefix=API)
    wait_state(app_client, j2, {"FAILURE"}, prefix=API)
    acc = app_client.get(f"{API}/accounting").json()
    assert acc["nfiles"] == 1 and acc["datasize"] == round(s17.stat().st_size / 1024, 3)
    assert (acc["njobs"], acc["njobs_completed"], acc["njobs_failed"]) == (2, 1, 1)
    assert acc["job_runtime"] > 0
    stats = app_client.get(f"{API}/appstats").json()
    assert stats["nusers"] == 1 and stats["njobs"] == 2
