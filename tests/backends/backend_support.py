"""Backend test helpers: real RabbitMQ, Redis, Celery workers and a single-node Slurm; local
job records written straight into the database.

The Slurm cluster (munge, slurmctld, slurmd, slurmrestd with JWT) and the workers are started
through the project's scripts (``scripts/slurm.sh``, ``scripts/celery.sh``), on free ports and
in private state folders. Outside CI a missing service skips its tests; with ``CI=true`` it
fails them. The fixtures themselves live in the test modules.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from caesar_rest.db.models import JobRecord
from caesar_rest.jobs.states import Phase
from caesar_rest.timeutil import utcnow

from tests.support.paths import REPO, SUPPORT
from tests.support.server import LiveServer, free_port

API = "/caesar/api/v1.0"


CI = os.environ.get("CI", "").lower() == "true"
SCRIPTS = REPO / "scripts"
BROKER_URL = os.environ.get("CAESAR_TEST_BROKER", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("CAESAR_TEST_REDIS", "redis://127.0.0.1:6379/0")


def need(ok: bool, why: str) -> None:
    """Skip (or, in CI, fail) when a service the test needs is missing."""
    if ok:
        return
    if CI:
        pytest.fail(f"service missing in CI: {why}")
    pytest.skip(why)


def local_job(job_id: str, phase: Phase, **fields: Any) -> JobRecord:
    """A local job's record as a test writes it straight into the database: alice's sleep
    job with a 60 s limit, created now, unless ``fields`` say otherwise."""
    now = utcnow()
    values: dict[str, Any] = {
        "id": job_id, "owner": "alice", "app": "sleep", "options": {}, "backend": "local",
        "phase": phase.value, "message": "", "time_limit": 60, "reldir": f"alice/{job_id}",
        "created_at": now, "updated_at": now,
    }  # fmt: skip
    return JobRecord(**(values | fields))


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something listens on host:port."""
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def require_broker() -> str:
    """RabbitMQ on 127.0.0.1:5672."""
    need(port_open(5672), "RabbitMQ is not listening on 127.0.0.1:5672")
    return BROKER_URL


def require_redis() -> str:
    """Redis on 127.0.0.1:6379."""
    need(port_open(6379), "Redis is not listening on 127.0.0.1:6379")
    return REDIS_URL


# --- Celery -------------------------------------------------------------------------------
@dataclass
class Worker:
    """A ``caesar-rest worker`` started through scripts/celery.sh."""

    folder: Path
    env: dict[str, str]
    args: list[str] = field(default_factory=lambda: ["--concurrency", "1"])

    @property
    def pid(self) -> int:
        return int((self.folder / "worker.pid").read_text())

    def start(self) -> Worker:
        r = subprocess.run(
            [str(SCRIPTS / "celery.sh"), "start", str(self.folder), "--", *self.args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert r.returncode == 0, r.stderr + self.log()[-3000:]
        return self

    def kill(self) -> None:
        """SIGKILL the worker's whole process group (its machine died)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)

    def stop(self) -> None:
        subprocess.run(
            [str(SCRIPTS / "celery.sh"), "stop", str(self.folder)],
            env=self.env,
            capture_output=True,
            timeout=60,
        )

    def log(self) -> str:
        p = self.folder / "worker.log"
        return p.read_text() if p.exists() else ""


@dataclass
class CeleryRig:
    """A live server on the celery backend and the means to start workers for it."""

    root: Path
    srv: LiveServer
    env: dict[str, str]
    workers: list[Worker] = field(default_factory=list)

    def worker(self, *args: str) -> Worker:
        w = Worker(self.root / f"worker{len(self.workers)}", self.env)
        if args:
            w.args = list(args)
        self.workers.append(w)
        return w.start()


def celery_env(root: Path, db_url: str, broker: str, backend: str, **extra: str) -> dict[str, str]:
    """Settings shared by the server and its workers (same database and folders)."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
        "CAESAR_REST_JOB_SCHEDULER": "celery",
        "CAESAR_REST_BROKER_URL": broker,
        "CAESAR_REST_RESULT_BACKEND": backend,
        "CAESAR_REST_CELERY_QUEUE": f"caesar-test-{uuid.uuid4().hex[:10]}",
        "CAESAR_REST_CELERY_HEARTBEAT": "1",
        "CAESAR_REST_BACKEND_POLL_INTERVAL": "0.5",
        "CAESAR_REST_MONITOR_LOST_AFTER": "120",
        "CAESAR_REST_DB_URL": db_url,
        "CAESAR_REST_DATADIR": str(root / "srv" / "data"),
        "CAESAR_REST_JOBDIR": str(root / "srv" / "jobs"),
        "CAESAR_REST_EXTRA_APPS": '["caesar_test_apps:SleepApp"]',
        "CAESAR_REST_JOB_KILL_GRACE": "1",
        "CAESAR_REST_LOGLEVEL": "INFO",
        **extra,
    }


def delete_queue(broker: str, queue: str) -> None:
    """Remove a test queue from the broker."""
    from kombu import Connection

    try:
        with Connection(broker, connect_timeout=5) as conn:
            conn.default_channel.queue_delete(queue)
    except Exception:
        pass


class RigFactory:
    """Builds CeleryRigs (server started, no worker yet) and stops everything at the end."""

    def __init__(self, tmp: Path, db_url: str, broker: str, backend: str):
        self.tmp, self.db_url, self.broker, self.backend = tmp, db_url, broker, backend
        self.rigs: list[CeleryRig] = []

    def __call__(self, broker: str | None = None, **extra: str) -> CeleryRig:
        root = self.tmp / f"rig{len(self.rigs)}"
        env = celery_env(root, self.db_url, broker or self.broker, self.backend, **extra)
        keep = {k: v for k, v in env.items() if k.startswith("CAESAR_REST_") or k == "PYTHONPATH"}
        srv = LiveServer(root / "srv", db_url=self.db_url, **keep)
        rig = CeleryRig(root, srv, env)
        self.rigs.append(rig)
        srv.start(timeout=60)
        return rig

    def close(self) -> None:
        for rig in self.rigs:
            for w in rig.workers:
                w.stop()
            rig.srv.stop()
            delete_queue(rig.env["CAESAR_REST_BROKER_URL"], rig.env["CAESAR_REST_CELERY_QUEUE"])


# --- Slurm --------------------------------------------------------------------------------
@dataclass
class SlurmCluster:
    """A single-node Slurm started by scripts/slurm.sh."""

    state: Path
    env: dict[str, str]

    @property
    def settings_env(self) -> dict[str, str]:
        return {k: v for k, v in self.env.items() if k.startswith("CAESAR_REST_")}

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command (scancel, scontrol, ...) against this cluster."""
        return subprocess.run(
            list(argv), env=self.env, capture_output=True, text=True, timeout=60, check=check
        )

    def wait_idle(self, timeout: float = 90) -> None:
        """Wait until the node is idle: slurmctld restarted without state takes a while to hear
        from slurmd again, and until then it refuses jobs of several tasks ("Requested partition
        configuration not available now") while it queues one-task jobs."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.run("sinfo", "-h", "-o", "%t", check=False).stdout.strip()
            if state == "idle":
                return
            time.sleep(0.5)
        raise AssertionError(f"the Slurm node is {state!r}, not idle, after {timeout} s")

    def script(self, cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPTS / "slurm.sh"), cmd, str(self.state)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )


def _slurm_start(state: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """One try of ``scripts/slurm.sh start`` on new free ports (stopped again if it failed)."""
    env = {
        **os.environ,
        "SLURMCTLD_PORT": str(free_port()),
        "SLURMD_PORT": str(free_port()),
        "SLURMRESTD_PORT": str(free_port()),
        # The machine's cores, not nproc's: a test earlier in the run may have narrowed this
        # process's CPU affinity, and a 1-CPU node refuses a job of 2 tasks.
        "SLURM_CPUS": os.environ.get("SLURM_CPUS", str(os.cpu_count() or 1)),
    }
    r = subprocess.run(
        [str(SCRIPTS / "slurm.sh"), "start", str(state)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if r.returncode != 0:
        subprocess.run([str(SCRIPTS / "slurm.sh"), "stop", str(state)], env=env, timeout=120)
    return r, env


def start_slurm() -> Iterator[SlurmCluster]:
    """slurmctld, slurmd and slurmrestd (JWT) on free ports; stopped when resumed."""
    need(os.geteuid() == 0, "the single-node Slurm needs root")
    for _ in range(3):
        # A short path: munge's socket lives there (sun_path is 108 bytes).
        state = Path(tempfile.mkdtemp(prefix="cslurm-", dir="/tmp"))
        r, env = _slurm_start(state)
        # A port found free can be taken by another connection before a daemon binds it
        # (seen once in CI): only that failure is tried again, on new ports.
        if r.returncode == 0 or "Address already in use" not in r.stderr:
            break
        shutil.rmtree(state, ignore_errors=True)
    need(r.returncode == 0, f"scripts/slurm.sh start failed: {r.stderr[-2000:]}")
    out = subprocess.run(
        [str(SCRIPTS / "slurm.sh"), "env", str(state)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    env.update(dict(line.split("=", 1) for line in out.splitlines() if "=" in line))
    cluster = SlurmCluster(state, env)
    yield cluster
    cluster.script("stop")
    shutil.rmtree(state, ignore_errors=True)


def slurm_server(root: Path, cluster: SlurmCluster, db_url: str | None = None, **extra: str) -> Any:
    """A live server whose default backend is this Slurm cluster."""
    env = {
        **cluster.settings_env,
        "CAESAR_REST_JOB_SCHEDULER": "slurm",
        "CAESAR_REST_SLURM_ENV": json.dumps({"PYTHONPATH": str(SUPPORT)}),
        "CAESAR_REST_BACKEND_POLL_INTERVAL": "0.5",
        "SLURM_CONF": cluster.env["SLURM_CONF"],
        **extra,
    }
    return LiveServer(root, db_url=db_url, **env)


# --- helpers ------------------------------------------------------------------------------
def upload(c: httpx.Client, path: Path) -> str:
    with open(path, "rb") as fh:
        r = c.post("/upload", files={"file": (path.name, fh)})
    assert r.status_code == 200, r.text
    return str(r.json()["uuid"])


def submit_sleep(c: httpx.Client, file_id: str, seconds: float, code: int = 0) -> str:
    r = c.post(
        "/job",
        json={
            "app": "sleep",
            "job_inputs": {"seconds": seconds, "exit-code": code},
            "data_inputs": file_id,
        },
    )
    assert r.status_code == 202, r.text
    return str(r.json()["job_id"])


def submit_uws(srv: LiveServer, file_id: str, seconds: float, limit: int) -> str:
    """A sleep job with its own time limit (UWS EXECUTIONDURATION), started at once."""
    r = httpx.post(
        f"{srv.url}/uws/jobs",
        data={
            "app": "sleep",
            "file": file_id,
            "seconds": str(seconds),
            "EXECUTIONDURATION": str(limit),
            "PHASE": "RUN",
        },
        follow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 303, r.text
    return r.headers["location"].rstrip("/").rsplit("/", 1)[-1]


def status(c: httpx.Client, job_id: str) -> dict:
    r = c.get(f"/job/{job_id}/status")
    assert r.status_code == 200, r.text
    return r.json()


def wait_for(c: httpx.Client, job_id: str, states: set[str], timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    last: dict = {}
    while time.time() < deadline:
        last = status(c, job_id)
        if last["state"] in states:
            return last
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} stuck in {last}")


def job_folder(srv: LiveServer, job_id: str) -> Path:
    found = list(srv.jobdir.glob(f"*/job_{job_id}"))
    assert found, f"no folder for job {job_id}"
    return found[0]


def wait_file(path: Path, timeout: float = 30) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.is_file() and path.read_text().strip():
            return path.read_text()
        time.sleep(0.1)
    raise AssertionError(f"{path} did not appear")


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def ancestors(pid: int) -> list[int]:
    """The parent chain of a process (up to init)."""
    chain = []
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            break
        chain.append(pid)
    return chain
