#!/usr/bin/env python3
"""API load benchmark of caesar-rest against a bare FastAPI baseline.

What it measures, from separate load processes (``wrk``, ``curl``, ``cp``):

* requests/s and p50/p99 latency of ``GET /job/<id>/status``, ``GET /jobs`` (all 10,000 jobs in
  one answer) and ``GET /jobs?limit=100``, with 10,000 jobs stored;
* the same status request against ``bare_app.py`` (FastAPI + ``sqlite3`` reading the same row of
  the same SQLite file, served by uvicorn the same way) with a ``def`` and an ``async def``
  handler, and our status route as a percentage of the faster of the two; then the faster bare
  variant and ours again at a quarter of the connections (latency at a lighter load);
* MB/s of a 1 GiB FITS upload with ``curl -F`` against ``cp`` of the same file to the same file
  system, both from the page cache, and the server's peak RSS growth during the upload; beside
  them, the same curl upload to a bare FastAPI route that discards the body (the ceiling of any
  upload route here) and ``openssl dgst -sha256`` of the file (the checksum's own cost);
* the server's CPU time per answer of each route and per GiB uploaded (ours and the bare
  sink's, and curl's), read from ``/proc``: on a machine shared with other work the rates
  depend on the CPU the processes get, the CPU time much less;
* ``/accounting`` and ``/appstats`` with 100,000 jobs (``benchmarks/accounting.py``, run from
  here on a database of its own; ``--accounting-jobs 0`` skips it).

Everything lives in a temporary folder that is removed at the end; the servers are subprocesses on
free ports, always stopped. With ``--db-url postgresql+psycopg://...`` our server runs on
PostgreSQL: the benchmark creates the database named in the URL (it must not exist) and drops it
at the end. The bare baseline always reads SQLite.

Run: ``.venv/bin/python benchmarks/api_load.py`` (``--quick`` for a short run).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
API = "/caesar/api/v1.0"
OWNER = "anonymous"
MB = 1_000_000
MIB = 1024 * 1024
FITS_BLOCK = 2880

# Targets of the issue "service core".
TARGET_STATUS_VS_BARE = 0.50
TARGET_STATUS_P99_MS = 20.0
TARGET_UPLOAD_VS_CP = 0.50
TARGET_UPLOAD_RSS_MB = 64.0
# Targets of issue 19 (lists, accounting, uploads).
TARGET_LIST_RPS = 20.0
TARGET_PAGE_RPS = 1000.0
TARGET_UPLOAD_VS_SINK = 0.80
TARGET_ACCOUNTING_MS = 100.0

WRK_INSTALL = (
    "wrk is not installed. Install it with 'apt-get install wrk' (Debian/Ubuntu), "
    "'dnf install wrk' (Fedora), 'brew install wrk' (macOS), or build it from "
    "https://github.com/wg/wrk and put it on PATH."
)


# --------------------------------------------------------------------------------------------
# Small helpers


def log(msg: str) -> None:
    """Progress line on stderr (the tables go to stdout)."""
    print(f"[api_load {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A TCP port that is free right now on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def machine() -> str:
    """CPU count and model, e.g. '2 cores, AMD EPYC'."""
    cores = len(os.sched_getaffinity(0))
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{cores} cores, {model}"


def http_get(url: str, timeout: float = 30.0) -> tuple[int, bytes]:
    """Status and body of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - our own URL
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, read in chunks (this is also a warm read of the file)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 * MIB):
            h.update(chunk)
    return h.hexdigest()


def warm_read(path: Path) -> None:
    """Read the whole file so that it sits in the page cache."""
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(8 * MIB)
        while fh.readinto(buf):
            pass


def prime_memory(folder: Path, size: int) -> None:
    """Write and delete ``size`` bytes of scratch file (untimed).

    On a virtual machine, memory the guest has freed may have been handed back to the host, and
    touching it again costs a fault per page in the host: a timed copy right after another one
    runs several times faster than the first. Priming before each timed transfer gives ``cp`` and
    the upload the same, warm, start.
    """
    scratch = folder / "prime.tmp"
    zeros = bytes(8 * MIB)
    try:
        with open(scratch, "wb") as fh:
            for _ in range(math.ceil(size / len(zeros))):
                fh.write(zeros)
    finally:
        scratch.unlink(missing_ok=True)


def stat_cpu(path: str) -> tuple[float, float] | None:
    """User and system CPU seconds in a ``/proc`` stat file (None when it is gone)."""
    try:
        with open(path) as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a process has used so far (0 when it is gone)."""
    cpu = stat_cpu(f"/proc/{pid}/stat")
    return sum(cpu) if cpu is not None else 0.0


def cpu_split(pid: int) -> tuple[float, float, float, float]:
    """User and system CPU seconds of a process, then of its main thread (the event loop of
    our servers); zeros when it is gone. Threads that have ended count in the process's."""
    proc = stat_cpu(f"/proc/{pid}/stat")
    main = stat_cpu(f"/proc/{pid}/task/{pid}/stat")
    if proc is None or main is None:
        return (0.0, 0.0, 0.0, 0.0)
    return (*proc, *main)


def children_cpu() -> float:
    """CPU seconds of this process's finished children (curl, cp, ...)."""
    t = os.times()
    return t.children_user + t.children_system


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class RssSampler(threading.Thread):
    """Samples a process's VmRSS every ``interval`` seconds and keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.02):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.start_kib = rss_kib(pid)
        self.peak_kib = self.start_kib
        self.samples = 0
        self._stop_event = threading.Event()
        #: CPU seconds of the server and of curl over the sampled transfer (upload_once).
        self.server_cpu = 0.0
        self.curl_cpu = 0.0
        #: The server's CPU seconds over the transfer: event-loop thread user, system; the
        #: other threads (ended ones included) user, system.
        self.threads_cpu = (0.0, 0.0, 0.0, 0.0)

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak_kib = max(self.peak_kib, rss_kib(self.pid))
            self.samples += 1
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak_kib - self.start_kib) * 1024 / MB


class JobWriter(threading.Thread):
    """Changes one job of the list (its message and elapsed time) ``hz`` times a second, each
    change its own commit, so that the list is measured while the jobs change (the answer
    cache, keyed by the database's content, then seldom serves an answer twice)."""

    def __init__(self, url: str, job_ids: list[str], hz: float):
        super().__init__(daemon=True)
        self.url = url
        self.job_ids = job_ids
        self.hz = hz
        self.writes = 0
        self.seconds = 0.0
        self._stop_event = threading.Event()

    def run(self) -> None:
        from sqlalchemy import bindparam, update

        from caesar_rest.db.engine import make_engine
        from caesar_rest.db.models import JobRecord

        engine = make_engine(self.url)
        stmt = update(JobRecord).where(JobRecord.id == bindparam("jid"))
        t0 = time.monotonic()
        try:
            i = 0
            while not self._stop_event.is_set():
                job_id = self.job_ids[(i * 7919) % len(self.job_ids)]
                with engine.begin() as conn:
                    conn.execute(
                        stmt.values(message=f"Job changed ({i})", elapsed=31.5 + i / 1000),
                        {"jid": job_id},
                    )
                self.writes += 1
                i += 1
                # The next write on schedule (writes slower than hz just run back to back).
                delay = t0 + i / self.hz - time.monotonic()
                if delay > 0:
                    self._stop_event.wait(delay)
        finally:
            self.seconds = time.monotonic() - t0
            engine.dispose()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    @property
    def rate(self) -> float:
        return self.writes / self.seconds if self.seconds else 0.0


# --------------------------------------------------------------------------------------------
# wrk


@dataclass
class WrkResult:
    """The figures taken from one wrk run."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: str


_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _duration_ms(token: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", token)
    if not m:
        raise ValueError(f"cannot read wrk latency {token!r}")
    return float(m.group(1)) * _UNIT_MS[m.group(2)]


def parse_wrk(text: str) -> WrkResult:
    """Requests/s, 50 % and 99 % latency, request count and errors from ``wrk --latency``."""
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    count = re.search(r"^\s+(\d+) requests in", text, re.M)
    if not (rps and p50 and p99 and count):
        raise ValueError(f"unexpected wrk output:\n{text}")
    errors = []
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if non2xx:
        errors.append(f"{non2xx.group(1)} non-2xx answers")
    sock = re.search(r"Socket errors:\s+(.*)", text)
    if sock:
        errors.append(f"socket errors: {sock.group(1).strip()}")
    return WrkResult(
        float(rps.group(1)),
        _duration_ms(p50.group(1)),
        _duration_ms(p99.group(1)),
        int(count.group(1)),
        "; ".join(errors),
    )


def run_wrk(wrk: str, url: str, duration: float, connections: int, threads: int) -> WrkResult:
    """One wrk run (latency histogram on; a long timeout so slow answers are counted)."""
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "60s",
        "--latency",
        url,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()}")
    return parse_wrk(proc.stdout)


# --------------------------------------------------------------------------------------------
# Servers


class Server:
    """A server subprocess with its output in a log file."""

    def __init__(self, name: str, argv: list[str], cwd: Path, env: dict[str, str], port: int):
        self.name = name
        self.argv = argv
        self.cwd = cwd
        self.env = env
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = cwd / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, ready_path: str, timeout: float = 120.0) -> None:
        """Start and wait until ``ready_path`` answers 200."""
        log(f"starting {self.name} on port {self.port}")
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(  # noqa: S603 - argument list, no shell
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            with contextlib.suppress(OSError):
                status, _ = http_get(self.base + ready_path, timeout=2.0)
                if status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.tail()}")

    def stop(self) -> None:
        """Ask the server to stop (SIGINT, as Ctrl-C), kill it if it does not."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        log(f"stopped {self.name}")

    def tail(self, n: int = 30) -> str:
        """The last lines of the server's log."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""


def child_env() -> dict[str, str]:
    """The environment for the servers, without CAESAR_REST_* settings of the caller."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CAESAR_REST_")}


# --------------------------------------------------------------------------------------------
# Data


def job_rows(n: int) -> list[dict[str, Any]]:
    """``n`` finished sep jobs of the local user, one a minute from 2025-01-01 UTC."""
    base = datetime(2025, 1, 1, tzinfo=UTC)
    rows = []
    for i in range(n):
        job_id = uuid.uuid4().hex
        created = base + timedelta(minutes=i)
        started = created + timedelta(seconds=2)
        ended = started + timedelta(seconds=31.5)
        inputs = {"thresh": 5.0, "minarea": 5}
        rows.append(
            {
                "id": job_id,
                "owner": OWNER,
                "app": "sep",
                "options": inputs,
                "job_inputs": inputs,
                "input_file_id": uuid.uuid4().hex,
                "tag": "bench",
                "backend": "local",
                "backend_job_id": None,
                "phase": "COMPLETED",
                "reason": "success",
                "message": "Job completed with success",
                "exit_code": 0,
                "run_requested": True,
                "time_limit": 3600,
                "cores": 1,
                "reldir": f"{OWNER}/job_{job_id}",
                "pid": 10_000 + i,
                "pid_start": 1_000_000 + i,
                "host": "bench",
                "created_at": created,
                "started_at": started,
                "ended_at": ended,
                "elapsed": 31.5,
                "updated_at": ended,
            }
        )
    return rows


def populate(url: str, rows: list[dict[str, Any]]) -> None:
    """Create the schema at ``url`` and bulk-insert the job rows."""
    from sqlalchemy import func, insert, select

    from caesar_rest.db.engine import make_engine
    from caesar_rest.db.migrate import upgrade
    from caesar_rest.db.models import JobRecord

    engine = make_engine(url)
    try:
        upgrade(engine)
        with engine.begin() as conn:
            conn.execute(insert(JobRecord), rows)
        with engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(JobRecord)).scalar_one()
        if stored != len(rows):
            raise RuntimeError(f"{stored} jobs in {url}, expected {len(rows)}")
    finally:
        engine.dispose()


_PG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@contextlib.contextmanager
def fresh_postgres_database(url: str) -> Iterator[str]:
    """Create the database named in ``url`` (it must not exist) and drop it afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    u = make_url(url)
    name = u.database or ""
    if not _PG_NAME.match(name):
        raise SystemExit(f"--db-url: name a new database (letters, digits, _), not {name!r}")
    admin = create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            found = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).first()
            if found:
                raise SystemExit(
                    f"--db-url: database {name!r} already exists; name a new one "
                    "(the benchmark creates it and drops it at the end)"
                )
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        log(f"created PostgreSQL database {name}")
        try:
            yield url
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            log(f"dropped PostgreSQL database {name}")
    finally:
        admin.dispose()


def make_fits(path: Path, side: int) -> int:
    """A valid FITS file: a ``side`` x ``side`` float32 image of zeros. Returns the size.

    The header comes from astropy; the data are written as zero blocks (a real, not sparse,
    file), never held in memory.
    """
    from astropy.io import fits

    header = fits.Header(
        [
            ("SIMPLE", True, "conforms to FITS standard"),
            ("BITPIX", -32, "32-bit float"),
            ("NAXIS", 2, ""),
            ("NAXIS1", side, ""),
            ("NAXIS2", side, ""),
            ("BUNIT", "JY/BEAM", ""),
            ("CTYPE1", "RA---SIN", ""),
            ("CTYPE2", "DEC--SIN", ""),
        ]
    )
    header.tofile(path)
    data = side * side * 4
    padded = math.ceil(data / FITS_BLOCK) * FITS_BLOCK
    zeros = bytes(8 * MIB)
    with open(path, "ab") as fh:
        left = padded
        while left:
            n = min(left, len(zeros))
            fh.write(zeros[:n] if n < len(zeros) else zeros)
            left -= n
    return path.stat().st_size


# --------------------------------------------------------------------------------------------
# The benchmark


@dataclass
class Row:
    """One line of the request table."""

    label: str
    result: WrkResult
    vs_bare: float | None = None
    rounds: list[float] = field(default_factory=list)
    #: The server's CPU milliseconds per answer during the measured run.
    cpu_ms: float | None = None


@dataclass
class UploadResult:
    """Upload against cp, over one or more rounds (medians shown)."""

    size: int
    upload_s: list[float]
    cp_s: list[float]
    rss_growth_mb: float
    rss_samples: int
    http_status: list[int]
    sha_ok: bool
    sink_s: list[float] = field(default_factory=list)
    sha256_s: list[float] = field(default_factory=list)
    cp_sync_s: list[float] = field(default_factory=list)
    #: CPU seconds per round: our server, the bare sink's server, curl to each.
    upload_cpu: list[float] = field(default_factory=list)
    sink_cpu: list[float] = field(default_factory=list)
    curl_cpu: list[float] = field(default_factory=list)
    sink_curl_cpu: list[float] = field(default_factory=list)
    #: Per round, the servers' CPU seconds by thread (RssSampler.threads_cpu): ours, the sink's.
    upload_threads: list[tuple[float, float, float, float]] = field(default_factory=list)
    sink_threads: list[tuple[float, float, float, float]] = field(default_factory=list)

    @property
    def upload_mbs(self) -> float:
        return self.size / MB / statistics.median(self.upload_s)

    @property
    def cp_mbs(self) -> float:
        return self.size / MB / statistics.median(self.cp_s)

    def mbs(self, seconds: list[float]) -> float:
        """MB/s of the median of ``seconds``."""
        return self.size / MB / statistics.median(seconds)

    @property
    def ok(self) -> bool:
        return self.sha_ok and all(code == 200 for code in self.http_status)


def measure(
    wrk: str,
    label: str,
    url: str,
    args: argparse.Namespace,
    connections: int | None = None,
    duration: float | None = None,
    pid: int | None = None,
) -> Row:
    """Warm-up, then the measured wrk run (with the CPU time of server ``pid`` per answer)."""
    conns = connections or args.connections
    secs = duration or args.duration
    log(f"{label}: warm-up {args.warmup:.0f} s, then {secs:.0f} s, {conns} connections")
    run_wrk(wrk, url, args.warmup, conns, args.threads)
    cpu0 = cpu_seconds(pid) if pid else 0.0
    res = run_wrk(wrk, url, secs, conns, args.threads)
    cpu_ms = None
    if pid and res.requests:
        cpu_ms = (cpu_seconds(pid) - cpu0) * 1000.0 / res.requests
    if res.requests == 0:
        res.errors = "no request completed (run longer or use fewer connections)"
    if res.errors:
        log(f"{label}: {res.errors}")
    return Row(label, res, cpu_ms=cpu_ms)


def check_status_answer(base: str, job_id: str) -> None:
    """The status route answers 200 with this job (else the figures would mean nothing)."""
    status, body = http_get(f"{base}{API}/job/{job_id}/status")
    if status != 200 or json.loads(body).get("job_id") != job_id:
        raise RuntimeError(f"status of {job_id}: HTTP {status} {body[:200]!r}")


def check_list_answer(base: str, query: str, expected: int) -> None:
    """The list route answers 200 with ``expected`` jobs."""
    status, body = http_get(f"{base}{API}/jobs{query}")
    got = len(json.loads(body)) if status == 200 else -1
    if got != expected:
        raise RuntimeError(f"/jobs{query}: HTTP {status}, {got} jobs, expected {expected}")


def upload_once(
    server: Server, src: Path, answer: Path, path: str = f"{API}/upload"
) -> tuple[float, int, RssSampler]:
    """One timed ``curl -F`` upload to ``path`` while the server's RSS is sampled."""
    argv = [
        "curl",
        "-sS",
        "-o",
        str(answer),
        "-w",
        "%{http_code}",
        "-F",
        f"file=@{src}",
        f"{server.base}{path}",
    ]
    sampler = RssSampler(server.pid)
    sampler.start()
    cpu0, curl0 = cpu_seconds(server.pid), children_cpu()
    split0 = cpu_split(server.pid)
    try:
        t0 = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
        seconds = time.perf_counter() - t0
    finally:
        sampler.stop()
    sampler.server_cpu = cpu_seconds(server.pid) - cpu0
    sampler.curl_cpu = children_cpu() - curl0
    user, system, loop_user, loop_system = (
        b - a for a, b in zip(split0, cpu_split(server.pid), strict=True)
    )
    sampler.threads_cpu = (loop_user, loop_system, user - loop_user, system - loop_system)
    if proc.returncode != 0:
        raise RuntimeError(f"curl failed ({proc.returncode}): {proc.stderr.strip()}")
    return seconds, int(proc.stdout.strip() or 0), sampler


def run_upload(server: Server, bare: Server, tmp: Path, side: int, rounds: int) -> UploadResult:
    """Copy a FITS file with cp and upload it with curl, in alternation, after warm reads.

    Each round also sends the file to the bare app's body sink (the ceiling of an upload route
    on this machine: the framework and curl, no parsing, hashing or writing) and times
    ``openssl dgst -sha256`` of it (the cost of the checksum alone).
    """
    src = tmp / f"upload_{side}x{side}.fits"
    copy = tmp / "cp-target" / src.name
    copy.parent.mkdir()
    answer = tmp / "upload-answer.json"
    # A small upload first, so that one-time costs (the FITS reader's import) are not counted.
    small = tmp / "warm-up.fits"
    make_fits(small, 256)
    _, code, _ = upload_once(server, small, answer)
    small.unlink()
    if code != 200:
        raise RuntimeError(f"warm-up upload: HTTP {code} {answer.read_text(errors='replace')}")
    log(f"writing {src.name} ({side}x{side} float32)")
    size = make_fits(src, side)
    expected_sha = sha256_of(src)
    cp_s: list[float] = []
    upload_s: list[float] = []
    sink_s: list[float] = []
    sha256_s: list[float] = []
    cp_sync_s: list[float] = []
    cpu: dict[str, list[float]] = {"ours": [], "sink": [], "curl": [], "sink_curl": []}
    threads: dict[str, list[tuple[float, float, float, float]]] = {"ours": [], "sink": []}
    codes: list[int] = []
    growth = 0.0
    samples = 0
    sha_ok = True
    try:
        for i in range(rounds):
            prime_memory(tmp, size)
            os.sync()  # no write-back of earlier writes during the timed copy
            warm_read(src)
            log(f"round {i + 1} of {rounds}: cp of {size / MIB:.0f} MiB")
            t0 = time.perf_counter()
            subprocess.run(["cp", str(src), str(copy)], check=True)  # noqa: S603 S607
            cp_s.append(time.perf_counter() - t0)
            # Our upload is on disk when it is answered (upload_fsync): so is this copy then.
            subprocess.run(["sync", str(copy)], check=True)  # noqa: S603 S607
            cp_sync_s.append(time.perf_counter() - t0)
            copy.unlink()

            prime_memory(tmp, size)
            os.sync()
            warm_read(src)
            log(f"round {i + 1} of {rounds}: upload of {size / MIB:.0f} MiB with curl")
            seconds, code, sampler = upload_once(server, src, answer)
            upload_s.append(seconds)
            cpu["ours"].append(sampler.server_cpu)
            cpu["curl"].append(sampler.curl_cpu)
            threads["ours"].append(sampler.threads_cpu)
            codes.append(code)
            growth = max(growth, sampler.growth_mb)
            samples += sampler.samples
            ok = False
            with contextlib.suppress(OSError, ValueError):
                doc = json.loads(answer.read_text())
                ok = doc.get("sha256") == expected_sha and doc.get("size_bytes") == size
            if code != 200 or not ok:
                log(f"upload answer: HTTP {code} {answer.read_text(errors='replace')[:300]}")
            sha_ok &= ok
            for stored in (tmp / "data").rglob("*.fits"):
                stored.unlink()

            prime_memory(tmp, size)
            os.sync()
            warm_read(src)
            log(f"round {i + 1} of {rounds}: upload to the bare body sink")
            seconds, code, sink_sampler = upload_once(bare, src, answer, "/upload-sink")
            if code != 200:
                raise RuntimeError(f"bare upload sink: HTTP {code}")
            sink_s.append(seconds)
            cpu["sink"].append(sink_sampler.server_cpu)
            cpu["sink_curl"].append(sink_sampler.curl_cpu)
            threads["sink"].append(sink_sampler.threads_cpu)
            warm_read(src)
            t0 = time.perf_counter()
            # OpenSSL: the library behind Python's hashlib (coreutils' sha256sum may lack the
            # CPU's SHA instructions and be several times slower).
            subprocess.run(  # noqa: S603
                ["openssl", "dgst", "-sha256", str(src)],  # noqa: S607
                check=True,
                capture_output=True,
            )
            sha256_s.append(time.perf_counter() - t0)
    finally:
        # The big files go as soon as they are not needed.
        src.unlink(missing_ok=True)
        copy.unlink(missing_ok=True)
        for stored in (tmp / "data").rglob("*.fits"):
            stored.unlink()
    return UploadResult(
        size,
        upload_s,
        cp_s,
        growth,
        samples,
        codes,
        sha_ok,
        sink_s,
        sha256_s,
        cp_sync_s,
        cpu["ours"],
        cpu["sink"],
        cpu["curl"],
        cpu["sink_curl"],
        threads["ours"],
        threads["sink"],
    )


def format_tables(
    title: str, rows: list[Row], upload: UploadResult | None, args: argparse.Namespace
) -> str:
    """The comparison table(s) as text."""
    out = [title]
    out.append(
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration:.0f}s --latency "
        f"(after a {args.warmup:.0f} s warm-up), {args.jobs} jobs stored; status: median of "
        f"{args.rounds} alternating round(s)"
    )
    out.append("")
    head = f"{'request':<44} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'vs bare':>8}"
    head += f" {'CPU ms':>7}"
    out.append(head)
    out.append("-" * len(head))
    for r in rows:
        vs = "" if r.vs_bare is None else f"{r.vs_bare * 100:.0f} %"
        cpu = "" if r.cpu_ms is None else f"{r.cpu_ms:.2f}"
        out.append(
            f"{r.label:<44} {r.result.rps:>9.1f} {r.result.p50_ms:>9.2f} "
            f"{r.result.p99_ms:>9.2f} {vs:>8} {cpu:>7}"
        )
    out.append("(CPU ms: the server's CPU time per answer during the measured run)")
    for r in rows:
        if len(r.rounds) > 1:
            runs = ", ".join(f"{x:.0f}" for x in r.rounds)
            out.append(f"  rounds of {r.label} (req/s): {runs}; median shown")
    if upload is not None:
        out.append("")
        head = f"{'transfer of ' + format(upload.size / MIB, '.0f') + ' MiB FITS':<44} {'MB/s':>9}"
        head += f" {'seconds':>9} {'vs cp':>9} {'RSS +MB':>8}"
        out.append(head)
        out.append("-" * len(head))
        out.append(
            f"{'upload: curl -F file=@... POST /upload':<44} {upload.upload_mbs:>9.1f} "
            f"{statistics.median(upload.upload_s):>9.2f} "
            f"{upload.upload_mbs / upload.cp_mbs * 100:>7.0f} % {upload.rss_growth_mb:>8.1f}"
        )
        for label, secs in (
            ("bare FastAPI route discarding the body", upload.sink_s),
            ("cp to the same file system", upload.cp_s),
            ("cp, then sync of the copy (on disk)", upload.cp_sync_s),
            ("openssl dgst -sha256 (the checksum alone)", upload.sha256_s),
        ):
            if not secs:
                continue
            vs = "" if secs is upload.cp_s else f"{upload.mbs(secs) / upload.cp_mbs * 100:.0f} %"
            out.append(
                f"{label:<44} {upload.mbs(secs):>9.1f} {statistics.median(secs):>9.2f} {vs:>9}"
            )
        if len(upload.upload_s) > 1:
            rounds = "; ".join(
                f"{name} " + ", ".join(f"{upload.size / MB / x:.0f}" for x in secs)
                for name, secs in (
                    ("upload", upload.upload_s),
                    ("sink", upload.sink_s),
                    ("cp", upload.cp_s),
                    ("cp+sync", upload.cp_sync_s),
                    ("sha256", upload.sha256_s),
                )
                if secs
            )
            out.append(f"  rounds (MB/s): {rounds}; medians shown")
        if upload.upload_cpu and upload.sink_cpu:
            gib = upload.size / (1024 * MIB)

            def per_gib(xs: list[float]) -> float:
                return statistics.median(xs) / gib

            out.append(
                f"CPU seconds per GiB (medians): our server {per_gib(upload.upload_cpu):.2f} "
                f"+ curl {per_gib(upload.curl_cpu):.2f}; bare sink's server "
                f"{per_gib(upload.sink_cpu):.2f} + curl {per_gib(upload.sink_curl_cpu):.2f}; "
                f"upload vs sink {upload.upload_mbs / upload.mbs(upload.sink_s) * 100:.0f} %"
            )
        if upload.upload_threads and upload.sink_threads:
            out.append(
                "CPU seconds per GiB by thread (medians, user + system): "
                + "; ".join(
                    f"{name}: event loop {threads_per_gib(rounds, upload.size, 0)}, "
                    f"other threads {threads_per_gib(rounds, upload.size, 2)}"
                    for name, rounds in (
                        ("our server", upload.upload_threads),
                        ("bare sink", upload.sink_threads),
                    )
                )
            )
        check = "yes" if upload.sha_ok else "NO"
        codes = ", ".join(str(c) for c in upload.http_status)
        out.append(
            f"upload answered HTTP {codes}; sha256 and size match: {check}; RSS +MB is the "
            f"largest growth of any round ({upload.rss_samples} samples, every 20 ms)"
        )
    return "\n".join(out)


def threads_per_gib(rounds: list[tuple[float, float, float, float]], size: int, at: int) -> str:
    """``user + system`` CPU seconds per GiB (medians of the rounds) of the thread group whose
    user time is at index ``at`` of each round's :attr:`RssSampler.threads_cpu`."""
    gib = size / (1024 * MIB)
    user = statistics.median(r[at] for r in rounds) / gib
    system = statistics.median(r[at + 1] for r in rounds) / gib
    return f"{user:.2f} + {system:.2f}"


def format_targets(
    rows: dict[str, Row], upload: UploadResult | None, accounting_p95: float | None = None
) -> tuple[str, bool]:
    """One line per target: met or not met."""
    lines = ["", "targets:"]
    all_met = True

    def line(ok: bool, text: str) -> None:
        nonlocal all_met
        all_met &= ok
        lines.append(f"  [{'met' if ok else 'NOT MET'}] {text}")

    status = rows.get("status")
    if status is not None:
        assert status.vs_bare is not None
        line(
            status.vs_bare >= TARGET_STATUS_VS_BARE,
            f"status route {status.vs_bare * 100:.0f} % of the bare baseline "
            f"(target >= {TARGET_STATUS_VS_BARE * 100:.0f} %)",
        )
        line(
            status.result.p99_ms <= TARGET_STATUS_P99_MS,
            f"status route p99 {status.result.p99_ms:.2f} ms "
            f"(target <= {TARGET_STATUS_P99_MS:.0f} ms)",
        )
    if upload is not None:
        ratio = upload.upload_mbs / upload.cp_mbs
        line(
            ratio >= TARGET_UPLOAD_VS_CP,
            f"upload {ratio * 100:.0f} % of cp (target >= {TARGET_UPLOAD_VS_CP * 100:.0f} %)",
        )
        line(
            upload.rss_growth_mb <= TARGET_UPLOAD_RSS_MB,
            f"server RSS growth during the upload {upload.rss_growth_mb:.1f} MB "
            f"(target <= {TARGET_UPLOAD_RSS_MB:.0f} MB)",
        )
        vs_sink = upload.mbs(upload.upload_s) / upload.mbs(upload.sink_s)
        line(
            vs_sink >= TARGET_UPLOAD_VS_SINK,
            f"upload {vs_sink * 100:.0f} % of the bare body sink "
            f"(target >= {TARGET_UPLOAD_VS_SINK * 100:.0f} %)",
        )
    if "list" in rows:
        rps = rows["list"].result.rps
        line(
            rps >= TARGET_LIST_RPS,
            f"full job list {rps:.1f} answers/s (target >= {TARGET_LIST_RPS:.0f})",
        )
    if "page" in rows:
        rps = rows["page"].result.rps
        line(
            rps >= TARGET_PAGE_RPS,
            f"page of 100 jobs {rps:.0f} answers/s (target >= {TARGET_PAGE_RPS:.0f})",
        )
    if accounting_p95 is not None:
        line(
            accounting_p95 <= TARGET_ACCOUNTING_MS,
            f"/accounting p95 {accounting_p95:.1f} ms from snapshots "
            f"(target <= {TARGET_ACCOUNTING_MS:.0f} ms)",
        )
    return "\n".join(lines), all_met


def median_row(label: str, results: list[WrkResult]) -> Row:
    """The round with the median requests/s (its latencies go with it)."""
    ordered = sorted(results, key=lambda r: r.rps)
    row = Row(label, ordered[(len(ordered) - 1) // 2])
    row.rounds = [r.rps for r in results]
    errors = [r.errors for r in results if r.errors]
    if errors and not row.result.errors:
        row.result.errors = "; ".join(errors)
    return row


def measure_status(
    wrk: str, args: argparse.Namespace, bare: Server, server: Server, status_path: str, job_id: str
) -> tuple[list[Row], Row]:
    """The status rows: both bare variants and ours, then the lighter load; and ours."""
    # Status: both bare variants and ours in alternation, so that a slow spell of the
    # machine hits all three. The faster bare variant is the baseline.
    bare_runs: list[WrkResult] = []
    bare_async_runs: list[WrkResult] = []
    ours_runs: list[WrkResult] = []
    bare_async_url = bare.base + "/async" + status_path
    check_status_answer(bare.base + "/async", job_id)
    for i in range(args.rounds):
        log(f"status round {i + 1} of {args.rounds}")
        bare_runs.append(measure(wrk, "bare status", bare.base + status_path, args).result)
        bare_async_runs.append(measure(wrk, "bare async status", bare_async_url, args).result)
        ours_runs.append(measure(wrk, "our status", server.base + status_path, args).result)
    bare_sync_row = median_row("bare FastAPI + sqlite3, def handler", bare_runs)
    bare_async_row = median_row("bare FastAPI + sqlite3, async def handler", bare_async_runs)
    status_row = median_row("caesar-rest: GET /job/<id>/status", ours_runs)
    bare_row = max(bare_sync_row, bare_async_row, key=lambda r: r.result.rps)
    for r in (bare_sync_row, bare_async_row, status_row):
        r.vs_bare = r.result.rps / bare_row.result.rps
    # Latency at a lighter load (fewer requests in flight, less queueing).
    light = max(1, args.connections // 4)
    light_bare = measure(
        wrk,
        f"{bare_row.label.replace('bare FastAPI + sqlite3', 'bare')} (-c{light})",
        bare_async_url if bare_row is bare_async_row else bare.base + status_path,
        args,
        connections=light,
    )
    light_ours = measure(
        wrk,
        f"caesar-rest: GET /job/<id>/status (-c{light})",
        server.base + status_path,
        args,
        connections=light,
    )
    light_ours.vs_bare = light_ours.result.rps / light_bare.result.rps
    light_bare.vs_bare = 1.0
    rows = [bare_sync_row, bare_async_row, status_row, light_bare, light_ours]
    return rows, status_row


def benchmark(args: argparse.Namespace, wrk: str, tmp: Path) -> int:
    """Populate, start the bare baseline and our server, measure; print the tables."""
    sqlite_path = tmp / "caesar-rest.sqlite3"  # the default: <parent of datadir>
    sqlite_url = f"sqlite:///{sqlite_path}"
    rows_data = job_rows(args.jobs)
    job_id = rows_data[args.jobs // 2]["id"]
    log(f"storing {args.jobs} jobs in {sqlite_path.name}")
    populate(sqlite_url, rows_data)
    env = child_env()
    load_before = os.getloadavg()[0]
    status_path = f"{API}/job/{job_id}/status"
    db_label = "SQLite"

    with contextlib.ExitStack() as stack:
        # The bare baseline: always the SQLite file.
        bare_port = free_port()
        bare = Server(
            "bare_app",
            [sys.executable, str(BENCH_DIR / "bare_app.py"), "--port", str(bare_port)]
            + ["--db", str(sqlite_path)],
            tmp,
            env,
            bare_port,
        )
        if not args.lists_only:
            stack.callback(bare.stop)
            bare.start(status_path)
            check_status_answer(bare.base, job_id)

        # Our server.
        server_argv = [
            str(Path(sys.executable).with_name("caesar-rest")),
            "serve",
            "--host",
            "127.0.0.1",
            "--datadir",
            str(tmp / "data"),
            "--jobdir",
            str(tmp / "jobs"),
            "--max-upload-mib",
            str(max(1000, 2 * args.upload_side**2 * 4 // MIB)),
        ]
        db_url = sqlite_url
        if args.db_url:
            pg_url = db_url = stack.enter_context(fresh_postgres_database(args.db_url))
            log(f"storing {args.jobs} jobs in PostgreSQL")
            populate(pg_url, rows_data)
            server_argv += ["--db-url", pg_url]
            db_label = "PostgreSQL " + pg_url.split("@")[-1]
        port = free_port()
        server_argv += ["--port", str(port)]
        if args.loglevel:
            server_argv += ["--loglevel", args.loglevel]
        # No storage quota: the upload rounds add up to several GiB (ignored by versions
        # without quotas).
        server_env = {
            **env,
            "CAESAR_REST_QUOTA_BYTES": "0",
            "CAESAR_REST_UPLOAD_FSYNC": "false" if args.no_upload_fsync else "true",
            # Ignored by versions without the setting (they always keep answers).
            "CAESAR_REST_JOB_LIST_ANSWER_CACHE": "false" if args.no_answer_cache else "true",
        }
        server = Server("caesar-rest", server_argv, tmp, server_env, port)
        stack.callback(server.stop)
        server.start(status_path)
        check_status_answer(server.base, job_id)
        if args.upload_only:
            return upload_only(args, server, bare, tmp, load_before)
        check_list_answer(server.base, "", args.jobs)
        check_list_answer(server.base, "?limit=100", 100)

        if args.lists_only:
            status_rows: list[Row] = []
            status_row = None
            upload = None
        else:
            status_rows, status_row = measure_status(wrk, args, bare, server, status_path, job_id)
            # The upload before the list loads, whose memory would hide the upload's RSS growth.
            upload = (
                None
                if args.skip_upload
                else run_upload(server, bare, tmp, args.upload_side, args.upload_rounds)
            )
            bare.stop()
        writer = None
        if args.list_writes:
            ids = [r["id"] for r in rows_data]
            writer = JobWriter(db_url, ids, args.list_writes)
            stack.callback(writer.stop)
            writer.start()
        list_secs = max(args.duration, 10.0)  # each answer takes seconds under load
        list_row = measure(
            wrk,
            f"caesar-rest: GET /jobs ({args.jobs}; -c{args.list_connections} -d{list_secs:.0f}s)",
            f"{server.base}{API}/jobs",
            args,
            connections=args.list_connections,
            duration=list_secs,
            pid=server.pid,
        )
        page_row = measure(
            wrk,
            "caesar-rest: GET /jobs?limit=100",
            f"{server.base}{API}/jobs?limit=100",
            args,
            pid=server.pid,
        )
        if writer is not None:
            writer.stop()
            log(f"writer: {writer.writes} job changes, {writer.rate:.1f} /s")
        server_rss_mb = rss_kib(server.pid) * 1024 / MB

    accounting_p95 = None
    if args.accounting_jobs:
        acct_lines, acct_ok, accounting_p95 = run_accounting(args, tmp)
    rows = [*status_rows, list_row, page_row]
    title = (
        f"caesar-rest API load, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}; "
        f"our server on {db_label}, 1 process"
        + (", uploads not flushed to disk (upload_fsync off)" if args.no_upload_fsync else "")
        + (", whole job-list answers not kept" if args.no_answer_cache else "")
        + (
            f", lists measured while {writer.rate:.0f} jobs/s change (one commit each)"
            if writer is not None
            else ""
        )
    )
    print(format_tables(title, rows, upload, args))
    if args.accounting_jobs:
        print("\naccounting (benchmarks/accounting.py, same run):")
        print("\n".join(acct_lines))
        if not acct_ok:
            log("accounting: the stored numbers differ from the live ones, or the target is missed")
    named = {"list": list_row, "page": page_row}
    if status_row is not None:
        named["status"] = status_row
    targets, _ = format_targets(named, upload, accounting_p95)
    print(targets)
    print(
        f"(server RSS at the end: {server_rss_mb:.0f} MB; 1-minute load average of the machine "
        f"before/after: {load_before:.2f}/{os.getloadavg()[0]:.2f}; other work on the machine "
        "skews the figures)"
    )
    failed = [r.label for r in rows if r.result.errors]
    if failed:
        print(f"errors during: {', '.join(failed)}", file=sys.stderr)
        return 1
    if upload is not None and not upload.ok:
        print("the upload failed its checks", file=sys.stderr)
        return 1
    return 0


def upload_only(
    args: argparse.Namespace, server: Server, bare: Server, tmp: Path, load_before: float
) -> int:
    """``--upload-only``: the upload rounds alone, their table and their targets."""
    upload = run_upload(server, bare, tmp, args.upload_side, args.upload_rounds)
    title = (
        f"caesar-rest upload, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}; "
        f"{args.upload_rounds} round(s)"
        + (", uploads not flushed to disk (upload_fsync off)" if args.no_upload_fsync else "")
    )
    # The request table is empty: the upload table starts after its blank line.
    text = format_tables(title, [], upload, args).split("\n\n", 1)[1]
    print(title + "\n\n" + text)
    lines = ["", "targets:"]
    vs_sink = upload.mbs(upload.upload_s) / upload.mbs(upload.sink_s)
    met = vs_sink >= TARGET_UPLOAD_VS_SINK
    lines.append(
        f"  [{'met' if met else 'NOT MET'}] upload {vs_sink * 100:.0f} % of the bare body sink "
        f"(target >= {TARGET_UPLOAD_VS_SINK * 100:.0f} %)"
    )
    print("\n".join(lines))
    print(
        f"(1-minute load average of the machine before/after: {load_before:.2f}/"
        f"{os.getloadavg()[0]:.2f})"
    )
    if not upload.ok:
        print("the upload failed its checks", file=sys.stderr)
        return 1
    return 0


def run_accounting(args: argparse.Namespace, tmp: Path) -> tuple[list[str], bool, float]:
    """``benchmarks/accounting.py`` on a database of its own (SQLite, or a second new
    PostgreSQL database ``<name>_acct`` with ``--db-url``)."""
    import accounting  # benchmarks/accounting.py (it imports this module)

    folder = tmp / "accounting"
    folder.mkdir()
    ns = argparse.Namespace(
        jobs=args.accounting_jobs, users=1000, caller_share=0.5, requests=args.accounting_requests
    )
    log(f"accounting: {ns.jobs} jobs, {ns.requests} requests per case")
    if not args.db_url:
        return accounting.run(ns, folder, f"sqlite:///{folder / 'bench.sqlite3'}")
    from sqlalchemy.engine import make_url

    u = make_url(args.db_url)
    url = u.set(database=f"{u.database}_acct").render_as_string(hide_password=False)
    with fresh_postgres_database(url) as db:
        return accounting.run(ns, folder, db)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description="Load-test the caesar-rest API (wrk, curl) against a bare FastAPI baseline."
    )
    p.add_argument("--quick", action="store_true", help="short runs and a 256 MiB upload")
    p.add_argument("--duration", type=float, help="seconds per measured wrk run (default 10)")
    p.add_argument("--warmup", type=float, help="seconds of wrk warm-up per run (default 3)")
    p.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument(
        "--rounds",
        type=int,
        help="status measurements of bare and ours, in alternation; the median is shown "
        "(default 3, --quick 1)",
    )
    p.add_argument(
        "--list-connections",
        type=int,
        default=4,
        help="wrk connections for the full job list (default 4: each answer takes a long "
        "time, more connections only queue)",
    )
    p.add_argument("--jobs", type=int, default=10_000, help="jobs stored (default 10000)")
    p.add_argument(
        "--db-url",
        help="run our server on PostgreSQL: postgresql+psycopg://user@host:port/NEWDB; the "
        "database NEWDB must not exist, it is created and dropped",
    )
    p.add_argument("--skip-upload", action="store_true", help="no upload measurement")
    p.add_argument(
        "--lists-only",
        action="store_true",
        help="only the job lists (no bare baseline, status route or upload)",
    )
    p.add_argument(
        "--list-writes",
        type=float,
        default=0.0,
        metavar="HZ",
        help="while the lists are measured, change one job this many times a second, each "
        "change its own commit (default 0: the jobs do not change)",
    )
    p.add_argument(
        "--no-answer-cache",
        action="store_true",
        help="run our server with job_list_answer_cache off: no whole list answer is served "
        "twice, each is assembled from the jobs' documents (as when every request follows a "
        "change)",
    )
    p.add_argument(
        "--upload-only",
        action="store_true",
        help="only the upload rounds (no status, list or accounting measurement)",
    )
    p.add_argument(
        "--no-upload-fsync",
        action="store_true",
        help="run our server with upload_fsync off (uploads not flushed to disk before the answer)",
    )
    p.add_argument(
        "--upload-rounds",
        type=int,
        help="cp and upload in alternation this many times; medians shown (default 3, --quick 1)",
    )
    p.add_argument(
        "--loglevel", help="our server's --loglevel (default: the server's default, INFO)"
    )
    p.add_argument("--tmpdir", help="parent of the temporary folder (default: the system's)")
    p.add_argument(
        "--accounting-jobs",
        type=int,
        default=100_000,
        help="jobs of the /accounting measurement (default 100000; 0: skip it)",
    )
    p.add_argument(
        "--accounting-requests",
        type=int,
        default=50,
        help="sequential requests per /accounting case (default 50)",
    )
    args = p.parse_args(argv)
    if args.duration is None:
        args.duration = 3.0 if args.quick else 10.0
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.upload_rounds is None:
        args.upload_rounds = 1 if args.quick else 3
    if min(args.rounds, args.upload_rounds) < 1:
        p.error("--rounds, --upload-rounds: at least 1")
    if args.warmup is None:
        args.warmup = 1.0 if args.quick else 3.0
    # 16384^2 float32 = 1 GiB of data; 8192^2 = 256 MiB.
    args.upload_side = 8192 if args.quick else 16384
    if args.db_url and not args.db_url.startswith("postgresql"):
        p.error("--db-url: only PostgreSQL URLs (the default is SQLite in the temporary folder)")
    if args.jobs < 100:
        p.error("--jobs: at least 100")
    if args.upload_only and args.skip_upload:
        p.error("--upload-only and --skip-upload exclude each other")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    wrk = shutil.which("wrk")
    if wrk is None:
        print(WRK_INSTALL, file=sys.stderr)
        return 2
    if shutil.which("curl") is None and not args.skip_upload:
        print(
            "curl is not installed (needed for the upload; or pass --skip-upload)", file=sys.stderr
        )
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="caesar-api-load-", dir=args.tmpdir))
    try:
        return benchmark(args, wrk, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
