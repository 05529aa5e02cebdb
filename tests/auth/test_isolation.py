"""Isolation matrix: user B can neither see nor touch user A's files and jobs, on any route."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.oidc_provider import OIDCProvider, auth_env
from tests.support.server import LiveServer, wait_state

API = "/caesar/api/v1.0"


class Setup:
    def __init__(
        self, srv: LiveServer, alice: str, bob: str, file_id: str, done: str, running: str
    ):
        self.srv, self.alice, self.bob = srv, alice, bob
        self.file_id, self.done, self.running = file_id, done, running


@pytest.fixture(scope="module")
def world(
    oidc: OIDCProvider, tmp_path_factory: pytest.TempPathFactory, s17: Path
) -> Iterator[Setup]:
    srv = LiveServer(tmp_path_factory.mktemp("iso"), **auth_env(oidc)).start()
    alice, bob = oidc.token("alice"), oidc.token("bob")
    a = httpx.Client(base_url=srv.api, headers={"Authorization": f"Bearer {alice}"}, timeout=60)
    with open(s17, "rb") as fh:
        fid = a.post("/upload", files={"file": ("a.fits", fh)}).json()["uuid"]
    done = a.post(
        "/job", json={"app": "sleep", "job_inputs": {"seconds": 0}, "data_inputs": fid}
    ).json()["job_id"]
    running = a.post(
        "/job", json={"app": "sleep", "job_inputs": {"seconds": 120}, "data_inputs": fid}
    ).json()["job_id"]
    wait_state(a, done, {"SUCCESS"})
    wait_state(a, running, {"RUNNING"})
    yield Setup(srv, alice, bob, fid, done, running)
    a.close()
    srv.stop()


def routes(srv: LiveServer, token: str) -> list[tuple[str, str]]:
    """Every (method, path template) of the OpenAPI description that names a file or job."""
    spec = httpx.get(f"{srv.url}/openapi.json", headers={"Authorization": f"Bearer {token}"}).json()
    out = []
    for path, ops in spec["paths"].items():
        if re.search(r"\{(job_id|file_uuid|file_id|jobid)\}", path):
            out.extend((m.upper(), path) for m in ops)
    return out


def test_every_owned_route_is_404_for_another_user(world: Setup) -> None:
    found = routes(world.srv, world.bob)
    assert len(found) >= 15  # the v1.0 file and job routes at least
    bob = {"Authorization": f"Bearer {world.bob}"}
    for job_id in (world.done, world.running):
        for method, path in found:
            url = world.srv.url + re.sub(r"\{(job_id|jobid)\}", job_id, path)
            url = re.sub(r"\{(file_uuid|file_id)\}", world.file_id, url)
            url = re.sub(r"\{[a-z_]+\}", "log", url)
            data = {"PHASE": "ABORT", "ACTION": "DELETE"} if method == "POST" else None
            r = httpx.request(method, url, headers=bob, data=data, timeout=30)
            assert r.status_code == 404, (method, path, r.status_code, r.text[:200])


def test_lists_and_queries_do_not_leak(world: Setup) -> None:
    bob = httpx.Client(
        base_url=world.srv.api, headers={"Authorization": f"Bearer {world.bob}"}, timeout=30
    )
    assert bob.get("/fileids").json() == []
    assert bob.get("/jobs").json() == []
    acc = bob.get("/accounting").json()
    assert acc["nfiles"] == 0 and acc["njobs"] == 0
    r = bob.get("/download", params={"uuid": world.file_id}, follow_redirects=True)
    assert r.status_code == 404
    # B cannot run a job on A's file.
    r = bob.post("/job", json={"app": "sleep", "job_inputs": {}, "data_inputs": world.file_id})
    assert r.status_code == 400 and "Cannot find file" in r.json()["status"]
    uws = httpx.get(
        f"{world.srv.url}/uws/jobs",
        headers={"Authorization": f"Bearer {world.bob}", "Accept": "application/json"},
    )
    # The UWS interface lists only the caller's jobs.
    assert uws.status_code == 200
    assert world.done not in uws.text and world.running not in uws.text


def test_pages_do_not_leak(world: Setup) -> None:
    """Pages list the caller's jobs only, and another user's cursor shows none of them."""
    a = httpx.Client(headers={"Authorization": f"Bearer {world.alice}"}, timeout=30)
    b = httpx.Client(headers={"Authorization": f"Bearer {world.bob}"}, timeout=30)
    first = a.get(f"{world.srv.api}/jobs", params={"limit": 1})
    assert [d["job_id"] for d in first.json()] == [world.done]
    nxt = first.links["next"]["url"]
    assert [d["job_id"] for d in a.get(nxt).json()] == [world.running]
    # Alice's cursor in Bob's request: a position in Bob's own (empty) list.
    mine = b.get(nxt)
    assert mine.status_code == 200 and mine.json() == [] and "link" not in mine.headers
    assert b.get(f"{world.srv.api}/jobs", params={"limit": 1, "order": "desc"}).json() == []
    newest = a.get(f"{world.srv.api}/jobs", params={"limit": 5, "order": "desc"}).json()
    assert [d["job_id"] for d in newest] == [world.running, world.done]


def test_a_still_has_everything(world: Setup) -> None:
    a = httpx.Client(
        base_url=world.srv.api, headers={"Authorization": f"Bearer {world.alice}"}, timeout=30
    )
    assert [f["fileid"] for f in a.get("/fileids").json()] == [world.file_id]
    assert a.get(f"/download/{world.file_id}").status_code == 200
    assert a.get(f"/job/{world.running}/status").json()["state"] == "RUNNING"
    assert a.get(f"/job/{world.done}/status").json()["state"] == "SUCCESS"
    assert a.get(f"/job/{world.done}/output").status_code == 200
    assert a.post(f"/job/{world.running}/cancel").json()["state"] == "CANCELED"
