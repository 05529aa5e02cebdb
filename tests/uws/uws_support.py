"""UWS test helpers: the UWS 1.1 schema (with a local xlink schema) and small job helpers."""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import xmlschema
from fastapi.testclient import TestClient

TESTS = Path(__file__).resolve().parents[1]
REFERENCE = TESTS.parents[1] / "shared" / "reference"
XLINK_URL = "http://www.ivoa.net/xml/Xlink/xlink.xsd"


def root_conftest() -> ModuleType:
    """``tests/conftest.py`` (LiveServer, make_settings, ...).

    Another folder's ``conftest.py`` may hold the name ``conftest`` in ``sys.modules`` when
    several test folders run in one session, so fall back to loading the file by path.
    """
    mod = sys.modules.get("conftest")
    if mod is not None and hasattr(mod, "LiveServer"):
        return mod
    name = "caesar_tests_root_conftest"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, TESTS / "conftest.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


_root = root_conftest()
LiveServer = _root.LiveServer
make_settings = _root.make_settings
SUPPORT: Path = _root.SUPPORT


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
