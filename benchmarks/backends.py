#!/usr/bin/env python3
"""Job backend benchmark: N short jobs per backend, submit-to-start latency and throughput.

For each backend a ``caesar-rest serve`` process (SQLite, or ``--db-url``) is started with that
backend as the default, N jobs of the test app ``sleep`` (0 s: a Python process that starts,
writes its result and exits) are submitted in one burst through ``POST /job``, and the run ends
when all are final. Reported per backend:

* submit-to-start latency p50/p95: ``start_date - submit_date`` of each job as the API reports
  it (for Slurm and Kubernetes the start is seen by the server's poller, every
  ``--poll`` seconds; for local and Celery it is recorded by the process that starts the job);
* jobs per minute: N / (last end - first submit);
* failures (jobs not SUCCESS).

Each backend gets the same parallelism, ``--slots`` (default: the machine's cores): local
``max_concurrent_jobs``, one Celery worker with that ``--concurrency``, a Slurm node with that
many CPUs (``scripts/slurm.sh``, single node, Slurm 22.05 here), and the Kubernetes backend
against the tests' in-process fake of the API whose "kubelet" runs that many pods at once.
The Kubernetes figures therefore measure this service's side only (Job creation, polling,
status mapping), not a cluster's scheduling; no cluster can run here.

Every pattern runs on a fresh server of the backend, after one warm-up job (the service is past
its start-up, as one in use is). Two more patterns (``--idle N``, ``--stress N``):

* ``--idle N``: N ``sleep`` jobs one after the other on an idle service (each submitted once the
  one before is final). Reported: submit-to-start p50/p95 as above, and submit-to-running
  p50/p95: from the moment the client sends ``POST /job`` to the moment the app's own code
  begins (the test app writes ``started.txt`` with ``time.time()`` first thing; same clock,
  same machine). With SQLite (the default) the local backend's idle jobs also get a
  breakdown of that time, medians in ms, from the same clock: client send -> job row (the
  PENDING event), -> QUEUED, -> EXECUTING (claimed), -> the wrapper's start (``exit.json``'s
  ``started``), -> the app's first statement.
* ``--stress N``: the predecessor's stress client (``scripts/test_jobsub.py``): N concurrent
  ``POST /job`` of the ``caesar`` app on the 1000x1000 ``ScorpioS17Field.fits`` with its job
  inputs (``no-mpi``, ``no-logredir``, ``no-extendedsearch``, ``fitsources``). Reported: wall
  from the first submit to the last end, per-job elapsed min/median/max, failures.

Needs: RabbitMQ and Redis on 127.0.0.1 for celery, root for Slurm. Run:
``.venv/bin/python benchmarks/backends.py [--jobs 200] [--idle 20] [--stress 20]
[--backends local celery slurm kubernetes]`` (``--jobs 0`` skips the burst).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
SUPPORT = REPO / "tests" / "support"
SCRIPTS = REPO / "scripts"
API = "/caesar/api/v1.0"
IMAGE = REPO.parent / "shared" / "data" / "ScorpioS17Field.fits"
FINAL = {"SUCCESS", "FAILURE", "TIMED-OUT", "ABORTED", "CANCELED"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Result:
    backend: str
    jobs: int
    p50: float
    p95: float
    per_minute: float
    failed: int
    wall: float


class Server:
    """A ``caesar-rest serve`` process."""

    def __init__(self, root: Path, env: dict[str, str], db_url: str | None):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.db_url = db_url
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        cmd = [
            sys.executable,
            "-m",
            "caesar_rest.cli",
            "serve",
            "--port",
            str(self.port),
            "--datadir",
            str(self.root / "data"),
            "--jobdir",
            str(self.root / "jobs"),
        ]
        if self.db_url:
            cmd += ["--db-url", self.db_url]
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - kept open with the process
        self.proc = subprocess.Popen(
            cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.root / "server.log").read_text()[-3000:])
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.2)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def delete_queue(broker: str, queue: str) -> None:
    """Remove the benchmark's queue from the broker."""
    from kombu import Connection

    with Connection(broker, connect_timeout=5) as conn:
        conn.default_channel.queue_delete(queue)


def base_env(root: Path, args: argparse.Namespace) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
        "CAESAR_REST_EXTRA_APPS": '["caesar_test_apps:SleepApp"]',
        "CAESAR_REST_DATADIR": str(root / "data"),
        "CAESAR_REST_JOBDIR": str(root / "jobs"),
        "CAESAR_REST_QUOTA_ACTIVE_JOBS": "0",
        "CAESAR_REST_MAX_SUBMISSIONS_PER_MINUTE": "0",
        "CAESAR_REST_JOB_POLL_INTERVAL": "0.1",
        "CAESAR_REST_BACKEND_POLL_INTERVAL": str(args.poll),
        "CAESAR_REST_MAX_CONCURRENT_JOBS": str(args.slots),
        "CAESAR_REST_LOGLEVEL": "WARNING",
        **({"CAESAR_REST_DB_URL": args.db_url} if args.db_url else {}),
        **({"CAESAR_REST_JOB_FORK_SERVER": args.fork_server} if args.fork_server else {}),
    }


@contextlib.contextmanager
def rig(backend: str, root: Path, args: argparse.Namespace) -> Iterator[Server]:
    """The services and the server for one backend."""
    env = base_env(root, args)
    cleanups: list[Any] = []
    try:
        if backend == "celery":
            queue = f"caesar-bench-{uuid.uuid4().hex[:8]}"
            env.update(
                CAESAR_REST_JOB_SCHEDULER="celery",
                CAESAR_REST_BROKER_URL=args.broker,
                CAESAR_REST_RESULT_BACKEND=args.redis,
                CAESAR_REST_CELERY_QUEUE=queue,
            )
            wdir = root / "worker"
            cleanups.append(lambda: delete_queue(args.broker, queue))
            cleanups.append(lambda: subprocess.run([str(SCRIPTS / "celery.sh"), "stop", str(wdir)]))
            r = subprocess.run(
                [
                    str(SCRIPTS / "celery.sh"),
                    "start",
                    str(wdir),
                    "--",
                    "--concurrency",
                    str(args.slots),
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            if r.returncode != 0:
                raise RuntimeError(f"worker: {r.stderr}")
        elif backend == "slurm":
            state = Path(tempfile.mkdtemp(prefix="cbench-slurm-", dir="/tmp"))
            senv = {
                **os.environ,
                "SLURM_CPUS": str(args.slots),
                "SLURMCTLD_PORT": str(free_port()),
                "SLURMD_PORT": str(free_port()),
                "SLURMRESTD_PORT": str(free_port()),
            }
            cleanups.append(lambda: shutil.rmtree(state, ignore_errors=True))
            cleanups.append(
                lambda: subprocess.run([str(SCRIPTS / "slurm.sh"), "stop", str(state)], env=senv)
            )
            subprocess.run([str(SCRIPTS / "slurm.sh"), "start", str(state)], env=senv, check=True)
            out = subprocess.run(
                [str(SCRIPTS / "slurm.sh"), "env", str(state)],
                env=senv,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            env.update(dict(line.split("=", 1) for line in out.splitlines() if "=" in line))
            env.update(
                CAESAR_REST_JOB_SCHEDULER="slurm",
                CAESAR_REST_SLURM_ENV=json.dumps({"PYTHONPATH": str(SUPPORT)}),
            )
        elif backend == "kubernetes":
            sys.path.insert(0, str(REPO / "tests" / "backends"))
            from kube_fake import FakeKube  # the tests' fake API server

            fake = FakeKube(
                pvcs={"storage": root}, env={"PYTHONPATH": str(SUPPORT)}, max_running=args.slots
            ).start()
            cleanups.append(fake.stop)
            env.update(
                CAESAR_REST_JOB_SCHEDULER="kubernetes",
                CAESAR_REST_KUBE_CONFIG=str(fake.kubeconfig(root / "kubeconfig")),
                CAESAR_REST_KUBE_IMAGE="caesar-rest-job:bench",
                CAESAR_REST_KUBE_PVC="storage",
                CAESAR_REST_KUBE_PYTHON=sys.executable,
            )
        srv = Server(root, env, args.db_url).start()
        cleanups.append(srv.stop)
        yield srv
    finally:
        for fn in reversed(cleanups):
            with contextlib.suppress(Exception):
                fn()


def ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def utc_ts(value: str) -> float:
    """Unix time of a stored timestamp (naive text is UTC)."""
    when = datetime.fromisoformat(value)
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


SLEEP_JOB: dict[str, Any] = {"app": "sleep", "job_inputs": {"seconds": 0}}
#: The predecessor's stress client's job (scripts/test_jobsub.py).
STRESS_JOB: dict[str, Any] = {
    "app": "caesar",
    "tag": "stresstest",
    "job_inputs": {
        "no-mpi": True,
        "no-logredir": True,
        "no-extendedsearch": True,
        "fitsources": True,
    },
}


def upload_image(c: httpx.Client) -> str:
    with open(IMAGE, "rb") as fh:
        return str(c.post("/upload", files={"file": (IMAGE.name, fh)}).json()["uuid"])


def submit(c: httpx.Client, body: dict[str, Any], fid: str) -> str:
    r = c.post("/job", json={**body, "data_inputs": fid})
    if r.status_code != 202:
        raise RuntimeError(f"submit refused: {r.status_code} {r.text}")
    return str(r.json()["job_id"])


def wait_final(c: httpx.Client, ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Status documents of ``ids`` once final. Jobs end about in submit order, so only the
    oldest unfinished job is polled (a light load on the server being measured)."""
    docs: dict[str, dict[str, Any]] = {}
    deadline = time.time() + timeout
    pending = list(ids)
    while pending and time.time() < deadline:
        doc = c.get(f"/job/{pending[0]}/status").json()
        if doc["state"] in FINAL:
            docs[pending.pop(0)] = doc
            continue
        time.sleep(0.05)
    if pending:
        raise RuntimeError(f"{len(pending)} jobs not final")
    return docs


def warm_up(c: httpx.Client, fid: str) -> None:
    """One job before the measurement: the service is past its start (its fork server, if it
    has one, has imported the science stack), as a service in use is."""
    wait_final(c, [submit(c, SLEEP_JOB, fid)], 120)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_jobs(srv: Server, backend: str, n: int) -> Result:
    with httpx.Client(base_url=f"{srv.url}{API}", timeout=60) as c:
        fid = upload_image(c)
        warm_up(c, fid)
        t0 = time.time()
        ids = [submit(c, SLEEP_JOB, fid) for _ in range(n)]
        try:
            docs = wait_final(c, ids, 60 + 10 * n)
        except RuntimeError as exc:
            raise RuntimeError(f"{backend}: {exc}") from None
        wall = time.time() - t0
    lat = sorted(
        ts(d["start_date"]) - ts(d["submit_date"]) for d in docs.values() if d["start_date"]
    )
    first = min(ts(d["submit_date"]) for d in docs.values())
    last = max(ts(d["end_date"]) for d in docs.values())
    failed = sum(d["state"] != "SUCCESS" for d in docs.values())
    return Result(
        backend,
        n,
        statistics.median(lat),
        lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))],
        n / (last - first) * 60,
        failed,
        wall,
    )


@dataclass
class Idle:
    backend: str
    jobs: int
    start_p50: float
    start_p95: float
    running_p50: float
    running_p95: float
    failed: int
    #: Stage name -> its durations (s), one per job (local backend on SQLite only).
    stages: dict[str, list[float]]


#: The idle breakdown's stages, in order: (name, event that ends it).
STAGES = ("send->row", "row->queued", "queued->claimed", "claimed->wrapper", "wrapper->app")


def job_stages(srv: Server, job_id: str, folder: Path, sent: float) -> list[float] | None:
    """One idle job's stage durations (s), from its events in the server's SQLite database,
    its ``exit.json`` and ``started.txt``; None where one is missing."""
    db = srv.root / "caesar-rest.sqlite3"
    if srv.db_url or not db.exists():
        return None
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT to_phase, at FROM job_events WHERE job_id = ? ORDER BY id", (job_id,)
        ).fetchall()
    # Stored as naive UTC text: the first event of each phase.
    at = {phase: utc_ts(str(when)) for phase, when in reversed(rows)}
    try:
        wrapper = float(json.loads((folder / "exit.json").read_text())["started"])
        app = float((folder / "started.txt").read_text())
        marks = [sent, at["PENDING"], at["QUEUED"], at["EXECUTING"], wrapper, app]
    except (OSError, KeyError, TypeError, ValueError):
        return None
    return [b - a for a, b in zip(marks, marks[1:], strict=False)]


def run_idle(srv: Server, backend: str, n: int) -> Idle:
    """N jobs one after the other: submit-to-start and submit-to-running on an idle service."""
    starts: list[float] = []
    running: list[float] = []
    stages: dict[str, list[float]] = {name: [] for name in STAGES}
    failed = 0
    with httpx.Client(base_url=f"{srv.url}{API}", timeout=60) as c:
        fid = upload_image(c)
        warm_up(c, fid)
        for _ in range(n):
            time.sleep(0.3)  # idle: the dispatcher has gone back to waiting
            sent = time.time()
            job_id = submit(c, SLEEP_JOB, fid)
            doc = wait_final(c, [job_id], 60)[job_id]
            failed += doc["state"] != "SUCCESS"
            starts.append(ts(doc["start_date"]) - ts(doc["submit_date"]))
            (folder,) = (srv.root / "jobs").glob(f"*/job_{job_id}")
            running.append(float((folder / "started.txt").read_text()) - sent)
            for name, value in zip(
                STAGES, job_stages(srv, job_id, folder, sent) or [], strict=False
            ):
                stages[name].append(value)
    return Idle(
        backend,
        n,
        statistics.median(starts),
        pct(starts, 0.95),
        statistics.median(running),
        pct(running, 0.95),
        failed,
        {k: v for k, v in stages.items() if v},
    )


@dataclass
class Stress:
    backend: str
    jobs: int
    wall: float
    elapsed_min: float
    elapsed_median: float
    elapsed_max: float
    failed: int


def run_stress(srv: Server, backend: str, n: int) -> Stress:
    """The predecessor's stress pattern: N concurrent caesar jobs on the 1000x1000 image."""
    with httpx.Client(base_url=f"{srv.url}{API}", timeout=120) as c:
        fid = upload_image(c)
        warm_up(c, fid)
        with ThreadPoolExecutor(n) as pool:
            ids = list(pool.map(lambda _: submit(c, STRESS_JOB, fid), range(n)))
        docs = wait_final(c, ids, 60 + 30 * n)
        first = min(ts(d["submit_date"]) for d in docs.values())
        last = max(ts(d["end_date"]) for d in docs.values())
    elapsed = [float(d["elapsed_time"] or 0) for d in docs.values()]
    return Stress(
        backend,
        n,
        last - first,
        min(elapsed),
        statistics.median(elapsed),
        max(elapsed),
        sum(d["state"] != "SUCCESS" for d in docs.values()),
    )


@contextlib.contextmanager
def fresh_server(backend: str, args: argparse.Namespace) -> Iterator[Server]:
    """One rig per pattern, so every pattern starts on a fresh, idle service."""
    root = Path(tempfile.mkdtemp(prefix=f"cbench-{backend}-"))
    try:
        with rig(backend, root, args) as srv:
            yield srv
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=200, help="burst: jobs per backend (default 200)")
    p.add_argument("--idle", type=int, default=0, help="idle: jobs one after the other")
    p.add_argument("--stress", type=int, default=0, help="stress: concurrent caesar jobs")
    p.add_argument(
        "--backends",
        nargs="+",
        default=["local", "celery", "slurm", "kubernetes"],
        choices=["local", "celery", "slurm", "kubernetes"],
    )
    p.add_argument("--slots", type=int, default=os.cpu_count() or 1, help="jobs at once")
    p.add_argument("--poll", type=float, default=0.5, help="server poll interval (s)")
    p.add_argument("--db-url", help="database URL (default: SQLite in a temporary folder)")
    p.add_argument(
        "--fork-server",
        choices=["eager", "lazy", "off"],
        help="the job_fork_server setting (default: the service's default)",
    )
    p.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = p.parse_args()
    results: list[Result] = []
    idles: list[Idle] = []
    stresses: list[Stress] = []
    for backend in args.backends:
        if args.jobs:
            with fresh_server(backend, args) as srv:
                print(f"{backend}: {args.jobs} jobs ...", file=sys.stderr, flush=True)
                results.append(run_jobs(srv, backend, args.jobs))
        if args.idle:
            with fresh_server(backend, args) as srv:
                print(f"{backend}: {args.idle} jobs on an idle service ...", file=sys.stderr)
                idles.append(run_idle(srv, backend, args.idle))
        if args.stress:
            with fresh_server(backend, args) as srv:
                print(f"{backend}: {args.stress} concurrent caesar jobs ...", file=sys.stderr)
                stresses.append(run_stress(srv, backend, args.stress))
    if results:
        print(f"\n{args.jobs} jobs per backend, {args.slots} at once, poll {args.poll} s\n")
        print(
            "| backend | jobs | submit-to-start p50 (s) | p95 (s) | jobs/min | failed | wall (s) |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in results:
            print(
                f"| {r.backend} | {r.jobs} | {r.p50:.2f} | {r.p95:.2f} | {r.per_minute:.0f} | "
                f"{r.failed} | {r.wall:.0f} |"
            )
    if idles:
        print(f"\n{args.idle} jobs one after the other on an idle service (ms)\n")
        print(
            "| backend | jobs | submit-to-start p50 | p95 | submit-to-running p50 | p95 | failed |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for i in idles:
            print(
                f"| {i.backend} | {i.jobs} | {i.start_p50 * 1000:.0f} | {i.start_p95 * 1000:.0f} | "
                f"{i.running_p50 * 1000:.0f} | {i.running_p95 * 1000:.0f} | {i.failed} |"
            )
        for i in idles:
            if i.stages:
                parts = ", ".join(
                    f"{k} {statistics.median(v) * 1000:.1f}" for k, v in i.stages.items()
                )
                print(f"\n{i.backend} idle breakdown, medians (ms): {parts}")
    if stresses:
        print(f"\n{args.stress} concurrent caesar jobs on {IMAGE.name}, {args.slots} at once\n")
        print("| backend | jobs | wall (s) | job elapsed min (s) | median | max | failed |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for t in stresses:
            print(
                f"| {t.backend} | {t.jobs} | {t.wall:.1f} | {t.elapsed_min:.2f} | "
                f"{t.elapsed_median:.2f} | {t.elapsed_max:.2f} | {t.failed} |"
            )
    failed = [r.failed for r in results] + [i.failed for i in idles] + [t.failed for t in stresses]
    return 1 if any(failed) else 0


if __name__ == "__main__":
    sys.exit(main())
