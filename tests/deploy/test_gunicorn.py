"""gunicorn with uvicorn workers (deploy/gunicorn/gunicorn.conf.py) behind the real nginx.

The replacement of the predecessor's nginx + uwsgi: a gunicorn master on the socket layout's
unix socket with two ``uvicorn_worker.UvicornWorker`` processes, nginx (the Debian package) in
front over TLS. Through nginx: the predecessor README's curl sequence (upload, submit, status,
outputs), the summed request metrics and the process metrics of every server process; then a
graceful stop (SIGTERM) that lets an in-flight request finish.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.deploy_support import (
    DEPLOY,
    Nginx,
    Proxy,
    UdsServer,
    make_site,
    render_layout,
    small_fits,
)
from tests.support.e2e import run_curl_sequence
from tests.support.multipart import form_parts
from tests.support.server import wait_state

GUNICORN_CONF = DEPLOY / "gunicorn" / "gunicorn.conf.py"


class GunicornServer(UdsServer):
    """``gunicorn -c deploy/gunicorn/gunicorn.conf.py --bind unix:SOCK --workers N``."""

    name = "gunicorn"

    def __init__(self, root: Path, sock: Path, workers: int = 2, **env: str):
        super().__init__(root, sock, workers, **env)
        self.env.update(
            {
                "CAESAR_REST_DATADIR": str(self.datadir),
                "CAESAR_REST_JOBDIR": str(self.jobdir),
                "CAESAR_REST_WORKERS": str(workers),
            }
        )
        # stdout: gunicorn's own lines (the journal); stderr: the app's JSON lines (filebeat).
        self.err = self.root / "server.json"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF),
            "--bind", f"unix:{self.sock}",
        ]  # fmt: skip

    def ready(self) -> bool:
        """Every worker has started."""
        return len(self.worker_pids()) == self.workers

    def worker_pids(self) -> set[int]:
        """The master's children (its workers)."""
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        if children.is_file():
            return {int(p) for p in children.read_text().split()}
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True
        ).stdout
        return {int(p) for p in out.split()}


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, s.labels, s.value)
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    ]


@pytest.fixture
def behind_nginx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    sock = tmp_path / "run" / "caesar-rest.sock"
    sock.parent.mkdir()
    srv = GunicornServer(tmp_path / "srv", sock).start()
    site = make_site(tmp_path, uds=sock)
    conf = render_layout("caesar-rest-socket.conf", site, tmp_path / "site")
    nginx = Nginx(tmp_path / "nginx", conf, site.https_port).start()
    monkeypatch.setenv("CURL_CA_BUNDLE", str(site.cert))
    try:
        yield srv, nginx, f"https://localhost:{site.https_port}", site.cert
    finally:
        nginx.stop()
        srv.stop()


def test_gunicorn_uvicorn_workers_behind_nginx(behind_nginx, s17: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    srv, nginx, url, cert = behind_nginx
    assert srv.proc is not None
    master = srv.proc.pid
    workers = srv.worker_pids()
    assert len(workers) == 2
    text = srv.log.read_text()
    assert "caesar_rest.httpserver.UvicornWorker" in text and text.count("Booting worker") == 2
    assert "Control socket" not in text  # one per instance would collide in $HOME
    assert "Application startup complete" in srv.err.read_text()
    # The socket is 0660 (uwsgi's chmod-socket 660) and the database was migrated by the master.
    assert stat.S_IMODE(srv.sock.stat().st_mode) == 0o660

    # Upload, list, submit, status, outputs: the predecessor README's requests, through nginx.
    run_curl_sequence(Proxy(url, f"{url}/caesar/api/v1.0"), s17, tmp_path)
    verify = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(base_url=f"{url}/caesar/api/v1.0", verify=verify, timeout=60) as c:
        fid = c.post("/upload", files={"file": ("g.fits", small_fits())}).json()["uuid"]
        body = {"app": "sleep", "job_inputs": {"seconds": 0.2}, "data_inputs": fid}
        r = c.post("/job", json=body)
        assert r.status_code == 202, r.text
        assert wait_state(c, r.json()["job_id"], {"SUCCESS"})["state"] == "SUCCESS"
        for _ in range(8):  # spread over both workers
            assert c.get(f"/job/{r.json()['job_id']}/status").status_code == 200
        # Both workers served requests (nginx's log has no worker: the app's log has the pid
        # through the metrics below).
        m = c.get(f"{url}/metrics")
        assert m.status_code == 200
    got = _samples(m.text)
    # Request counts summed over the workers (multiprocess mode), labelled by template.
    status = [
        v
        for n, lab, v in got
        if n == "caesar_http_requests_total"
        and lab["route"] == "/caesar/api/v1.0/job/{job_id}/status"
        and lab["status"] == "200"
    ]
    assert sum(status) >= 8
    # The process metrics of the master and of each worker.
    rss = {int(lab["pid"]): v for n, lab, v in got if n == "process_resident_memory_bytes"}
    assert set(rss) == {master} | workers, (rss, master, workers)
    assert all(v > 10 * 2**20 for v in rss.values())
    assert any(e["uri"] == "/caesar/api/v1.0/upload" for e in nginx.access_log())

    # SIGTERM to the master while an upload is half sent: the worker finishes that request
    # (graceful_timeout), then gunicorn exits cleanly and removes its socket.
    image = small_fits(512)
    boundary = "gunicornstop"
    head, tail = form_parts(boundary, "s.fits")
    half = threading.Event()
    stopped = threading.Event()

    def body():  # type: ignore[no-untyped-def]
        yield head + image[: len(image) // 2]
        half.set()
        stopped.wait(30)
        time.sleep(0.5)  # the workers have had the signal
        yield image[len(image) // 2 :] + tail

    answers: list[httpx.Response] = []

    def upload() -> None:
        with httpx.Client(verify=verify, timeout=60) as c:
            answers.append(
                c.post(
                    f"{url}/caesar/api/v1.0/upload",
                    content=body(),
                    headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
                )
            )

    t = threading.Thread(target=upload)
    t.start()
    assert half.wait(30)
    time.sleep(0.3)  # the first half reaches the worker through nginx
    os.kill(master, signal.SIGTERM)
    stopped.set()
    t.join(60)
    srv.proc.wait(40)
    assert len(answers) == 1 and answers[0].status_code == 200, answers
    assert answers[0].json()["size_bytes"] == len(image)
    assert srv.proc.returncode == 0
    assert "Shutting down: Master" in srv.log.read_text()
    assert not srv.sock.exists()  # uwsgi's vacuum: gunicorn removes its socket
    # The app's stream holds JSON lines only (gunicorn's plain lines went to stdout).
    lines = [json.loads(line) for line in srv.err.read_text().splitlines() if line.strip()]
    assert any(e.get("event") == "service_stopped" for e in lines)
    assert any(e.get("event") == "file_uploaded" for e in lines)
