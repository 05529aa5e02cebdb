"""Quotas and limits: refused with the documented JSON, and nothing is stored."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from caesar_rest.api.app import create_app

from tests.support.oidc_provider import OIDCProvider, auth_env
from tests.support.server import LiveServer, make_settings, wait_state

API = "/caesar/api/v1.0"


def stored(root: Path) -> list[Path]:
    return [p for p in (root / "data").rglob("*") if p.is_file()]


def upload(client: TestClient | httpx.Client, path: Path, prefix: str = API):  # type: ignore[no-untyped-def]
    with open(path, "rb") as fh:
        return client.post(f"{prefix}/upload", files={"file": (path.name, fh)})


def test_upload_over_byte_quota(tmp_path: Path, s17: Path) -> None:
    size = s17.stat().st_size
    settings = make_settings(tmp_path, quota_bytes=int(size * 1.5))
    with TestClient(create_app(settings)) as c:
        r = upload(c, s17)
        assert r.status_code == 200
        assert "warning" not in r.json()  # 67 % of the quota: below the 80 % warning
        r = upload(c, s17)
        assert r.status_code == 403, r.text
        body = r.json()
        assert body["limit"] == "bytes" and body["used"] == size
        assert body["quota"] == int(size * 1.5)
        assert "quota" in body["status"].lower()
        assert len(c.get(f"{API}/fileids").json()) == 1
    assert len(stored(tmp_path)) == 1


def test_upload_quota_checked_after_streaming(tmp_path: Path, s17: Path) -> None:
    """Without a Content-Length the final size is checked before anything is registered."""
    size = s17.stat().st_size
    settings = make_settings(tmp_path, quota_bytes=size + 10)
    with TestClient(create_app(settings)) as c:
        r = upload(c, s17)
        assert r.status_code == 200 and "storage 100% of quota used" in r.json()["warning"]

        def gen():  # type: ignore[no-untyped-def]
            yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.fits"\r\n\r\n'
            yield s17.read_bytes()
            yield b"\r\n--b--\r\n"

        r = c.post(
            f"{API}/upload",
            content=gen(),
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
        assert r.status_code == 403 and r.json()["limit"] == "bytes"
    assert len(stored(tmp_path)) == 1


def test_active_job_limit(tmp_path: Path, s17: Path) -> None:
    settings = make_settings(tmp_path, quota_active_jobs=1)
    with TestClient(create_app(settings)) as c:
        fid = upload(c, s17).json()["uuid"]
        r = c.post(
            f"{API}/job", json={"app": "sleep", "job_inputs": {"seconds": 60}, "data_inputs": fid}
        )
        assert r.status_code == 202
        assert "warning" in r.json()  # 1 of 1 unfinished jobs
        r = c.post(
            f"{API}/job", json={"app": "sleep", "job_inputs": {"seconds": 60}, "data_inputs": fid}
        )
        assert r.status_code == 429, r.text
        body = r.json()
        assert body["limit"] == "active_jobs" and body["used"] == 1 and body["quota"] == 1
        assert body["state"] == "ABORTED" and body["job_id"] == ""
        assert len(c.get(f"{API}/jobs").json()) == 1
        assert len(list((tmp_path / "jobs").rglob("job.json"))) == 1
        for j in c.get(f"{API}/jobs").json():
            c.post(f"{API}/job/{j['job_id']}/cancel")


def test_submission_rate(tmp_path: Path, s17: Path) -> None:
    settings = make_settings(tmp_path, max_submissions_per_minute=2)
    with TestClient(create_app(settings)) as c:
        fid = upload(c, s17).json()["uuid"]
        body = {"app": "sleep", "job_inputs": {"seconds": 0}, "data_inputs": fid}
        ids = [c.post(f"{API}/job", json=body).json()["job_id"] for _ in range(2)]
        r = c.post(f"{API}/job", json=body)
        assert r.status_code == 429 and r.json()["limit"] == "submission_rate"
        assert r.headers["retry-after"] == "60"
        for j in ids:
            wait_state(c, j, {"SUCCESS"}, prefix=API)


def test_time_limit_clamped_to_user_maximum(tmp_path: Path, s17: Path) -> None:
    settings = make_settings(tmp_path, quota_time_limit=1)
    with TestClient(create_app(settings)) as c:
        fid = upload(c, s17).json()["uuid"]
        j = c.post(
            f"{API}/job", json={"app": "sleep", "job_inputs": {"seconds": 30}, "data_inputs": fid}
        ).json()["job_id"]
        st = wait_state(c, j, {"TIMED-OUT"}, prefix=API)
        assert st["elapsed_time"] < 25  # the 1 s maximum, not the job's own 30 s, ended it


def test_per_user_override_by_admin(oidc: OIDCProvider, tmp_path: Path, s17: Path) -> None:
    srv = LiveServer(tmp_path / "srv", **auth_env(oidc)).start()
    try:
        admin = {"Authorization": f"Bearer {oidc.token('admin')}"}
        bob = httpx.Client(
            base_url=srv.api, timeout=30, headers={"Authorization": f"Bearer {oidc.token('bob')}"}
        )
        alice = httpx.Client(
            base_url=srv.api, timeout=30, headers={"Authorization": f"Bearer {oidc.token('alice')}"}
        )
        r = httpx.put(f"{srv.api}/admin/users/bob/quota", headers=admin, json={"bytes": 1000})
        assert r.status_code == 200 and r.json()["quota"]["bytes"] == 1000
        r = httpx.put(
            f"{srv.api}/admin/users/bob/quota",
            headers={"Authorization": f"Bearer {oidc.token('bob')}"},
            json={},
        )
        assert r.status_code == 403
        assert upload(bob, s17, prefix="").status_code == 403
        assert upload(alice, s17, prefix="").status_code == 200
        assert bob.get("/accounting").json()["quota"]["bytes"] == 1000
    finally:
        srv.stop()


def test_declared_size_precheck_is_one_function() -> None:
    """The v1.0 upload's and tus's pre-checks: one function, their two messages."""
    import pytest

    from caesar_rest.auth.quotas import check_declared_bytes
    from caesar_rest.auth.users import Limits
    from caesar_rest.errors import Forbidden

    calls: list[int] = []

    def used() -> int:
        calls.append(1)
        return 600

    check_declared_bytes(Limits(0, 0, 3600), used, 10**12)  # no quota: usage not even read
    assert calls == []
    check_declared_bytes(Limits(1000, 0, 3600), used, 400)  # exactly full: allowed
    with pytest.raises(Forbidden, match=r"^Storage quota exceeded: 600 of 1000 bytes used$") as e:
        check_declared_bytes(Limits(1000, 0, 3600), used, 401, 999)
    assert e.value.body == {"limit": "bytes", "quota": 1000, "used": 600, "requested": 999}
    with pytest.raises(Forbidden, match="bytes used or reserved$"):
        check_declared_bytes(Limits(1000, 0, 3600), used, 401, reserved=True)
