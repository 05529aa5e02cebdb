"""Service helpers: in-process settings, a live ``caesar-rest serve`` process, status polling."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from caesar_rest.settings import Settings

from tests.support.paths import child_pythonpath

#: The test app for in-process services (the test process imports it from the tests package).
SLEEP_APP = "tests.support.caesar_test_apps:SleepApp"
#: The same app for server processes, which get ``tests/support`` on their ``PYTHONPATH``.
SLEEP_APP_CHILD = "caesar_test_apps:SleepApp"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_settings(root: Path, **kw: object) -> Settings:
    """Settings for an in-process app in ``root``."""
    base: dict[str, object] = {
        "datadir": root / "data",
        "jobdir": root / "jobs",
        "extra_apps": [SLEEP_APP],
        "job_poll_interval": 0.1,
        "job_kill_grace": 1.0,
        "max_concurrent_jobs": 2,
        # Most in-process apps run no job: the fork server starts with the first one.
        "job_fork_server": "lazy",
    }
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


class LiveServer:
    """A ``caesar-rest serve`` process on a free port."""

    def __init__(self, root: Path, db_url: str | None = None, **env: str):
        self.root = root
        self.datadir = root / "data"
        self.jobdir = root / "jobs"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = f"{self.url}/caesar/api/v1.0"
        self.db_url = db_url
        self.env = {
            **os.environ,
            "PYTHONPATH": child_pythonpath(os.environ.get("PYTHONPATH")),
            "CAESAR_REST_EXTRA_APPS": f'["{SLEEP_APP_CHILD}"]',
            "CAESAR_REST_JOB_POLL_INTERVAL": "0.2",
            "CAESAR_REST_JOB_KILL_GRACE": "1",
            # Warm starts, as by default, but the fork server starts with the first job: most
            # live servers run few jobs (the multi-worker tests thus start it lazily in each).
            "CAESAR_REST_JOB_FORK_SERVER": "lazy",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        self.log = root / "server.log"
        self._log_start = 0

    def start(self, timeout: float = 120.0) -> LiveServer:
        """Start and wait until ``/healthz`` answers."""
        cmd = [
            sys.executable,
            "-m",
            "caesar_rest.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--datadir",
            str(self.datadir),
            "--jobdir",
            str(self.jobdir),
        ]
        if self.db_url:
            cmd += ["--db-url", self.db_url]
        self._log_start = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603
                cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the server (its job processes live on in their own sessions)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """Graceful stop; the server's errors go to the test's output (shown on failure)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(OSError):
            # This run's part of the log (it is appended to by restarts).
            text = self.log.read_bytes()[self._log_start :].decode(errors="replace")
            if "Traceback" in text or '"level": "error"' in text:
                print(f"--- {self.log} (last 4000 characters) ---\n{text[-4000:]}", file=sys.stderr)

    def client(self) -> httpx.Client:
        """An HTTP client on the v1.0 API."""
        return httpx.Client(base_url=self.api, timeout=60)


def wait_state(
    client: httpx.Client | TestClient,
    job_id: str,
    states: set[str],
    timeout: float = 60,
    prefix: str = "",
) -> dict:
    """Poll the v1.0 status until the job's state is in ``states``.

    ``prefix`` is the API prefix when the client's base URL lacks it (TestClient).
    """
    deadline = time.time() + timeout
    last: dict = {}
    while time.time() < deadline:
        r = client.get(f"{prefix}/job/{job_id}/status")
        assert r.status_code == 200, r.text
        last = r.json()
        if last["state"] in states:
            return last
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} stuck in {last}")
