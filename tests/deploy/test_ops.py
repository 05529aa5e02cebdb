"""Operations: log lines name the request, user and job; /readyz checks the broker."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import structlog
from fastapi.testclient import TestClient

from caesar_rest.api.app import create_app
from caesar_rest.logconfig import configure_logging

from tests.support.server import free_port, make_settings


def test_log_lines_carry_request_user_and_job(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, logtofile=True, logdir=tmp_path / "logs")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging(settings)
    try:
        with TestClient(create_app(settings)) as c:
            c.get("/caesar/api/v1.0/fileids", headers={"X-Request-ID": "rid-files"})
            c.get("/caesar/api/v1.0/job/abc/status", headers={"X-Request-ID": "rid-job"})
            c.get("/healthz", headers={"X-Request-ID": "rid-health"})
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
            h.close()
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        structlog.contextvars.clear_contextvars()
    lines = [json.loads(x) for x in (tmp_path / "logs" / settings.logfile).read_text().splitlines()]
    access = {e["request_id"]: e for e in lines if e.get("event") == "request"}
    assert access["rid-files"]["user"] == "anonymous" and "job_id" not in access["rid-files"]
    assert access["rid-job"]["job_id"] == "abc" and access["rid-job"]["user"] == "anonymous"
    # Nothing of one request leaks into the next (no user on an unauthenticated route).
    assert "user" not in access["rid-health"] and "job_id" not in access["rid-health"]


@pytest.mark.celery
@pytest.mark.parametrize("reachable", [True, False])
def test_readyz_checks_the_broker(tmp_path: Path, reachable: bool) -> None:
    port = 5672 if reachable else free_port()
    settings = make_settings(
        tmp_path,
        broker_url=f"amqp://guest:guest@127.0.0.1:{port}//",
        backend_poll_interval=0,
    )
    with TestClient(create_app(settings)) as c:
        r = c.get("/readyz")
    body = r.json()
    if reachable:
        assert r.status_code == 200 and body["checks"]["broker"] == "ok", body
    else:
        assert r.status_code == 503 and body["checks"]["broker"].startswith("error"), body
        assert body["checks"]["database"] == "ok"
