"""UWS test helpers: the UWS 1.1 schema (with a local xlink schema) and small job helpers."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import xmlschema
from fastapi.testclient import TestClient

from tests.support.paths import SUPPORT

TESTS = Path(__file__).resolve().parents[1]
REFERENCE = TESTS.parents[1] / "shared" / "reference"
XLINK_URL = "http://www.ivoa.net/xml/Xlink/xlink.xsd"


@functools.cache
def load_uws_schema() -> xmlschema.XMLSchema:
    """The UWS 1.1 schema, its xlink import mapped to ``tests/support/xlink.xsd``."""
    xsd = REFERENCE / "UWS-1.1.xsd"
    if not xsd.is_file():
        pytest.fail(f"UWS schema missing: {xsd}")
    return xmlschema.XMLSchema(
        str(xsd), uri_mapper={XLINK_URL: (SUPPORT / "xlink.xsd").as_uri()}, allow="local"
    )


def upload(client: TestClient, image: Path) -> str:
    """Upload ``image`` through the v1.0 API; return its file id."""
    with open(image, "rb") as fh:
        r = client.post("/caesar/api/v1.0/upload", files={"file": (image.name, fh)})
    assert r.status_code == 200, r.text
    return str(r.json()["uuid"])


def create(client: TestClient, **params: str) -> str:
    """Create a UWS job; return its URL (checks the 303)."""
    r = client.post("/uws/jobs", data=params, follow_redirects=False)
    assert r.status_code == 303, r.text
    return str(r.headers["location"])


def job_json(client: TestClient, url: str, **query: str) -> dict:
    """The job document as JSON."""
    r = client.get(url, params=query, headers={"Accept": "application/json"})
    assert r.status_code == 200, r.text
    return r.json()
