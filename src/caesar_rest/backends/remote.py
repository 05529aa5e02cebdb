"""What the Celery, Slurm and Kubernetes backends share.

Each remote backend runs the same job command as the local one (``python -m
caesar_rest.backends.wrapper -- <app argv>`` in the job folder, which writes ``exit.json``) and
reports what its engine says about a job as a :class:`BackendView`. :meth:`RemoteBackend.apply`
turns a view into state-machine transitions, so that every backend maps onto the phases the same
way: the engine's word is kept in ``backend_state`` and ``last_seen_at`` records when it was last
seen. A job the engine no longer knows is finished from its ``exit.json`` when the wrapper wrote
one, and otherwise marked ERROR (lost) once it has gone unseen for ``monitor_lost_after`` seconds.

Reconciliation passes take a lock per backend (a PostgreSQL advisory lock, or a file lock beside
an SQLite database), so API processes and any number of ``caesar-rest monitor`` copies never
work on the same backend at once; the conditional transitions make a duplicate pass harmless
anyway.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import sys
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, text

from caesar_rest.db.models import JobRecord
from caesar_rest.jobs.service import SPEC_FILE, JobService, Outcome, read_exit_file
from caesar_rest.jobs.states import FINAL, Phase, Reason
from caesar_rest.logconfig import get_logger
from caesar_rest.timeutil import utcnow

log = get_logger(__name__)

#: Written by a batch script that stopped the job at its time limit.
TIMEOUT_FLAG = "timed_out"
#: Module that every backend runs in the job folder.
WRAPPER_MODULE = "caesar_rest.backends.wrapper"
#: PENDING jobs meant to run but never handed over are re-dispatched after this many seconds.
REDISPATCH_AFTER = 30.0


class Seen(StrEnum):
    """What a backend says about a job, in the state machine's terms."""

    QUEUED = "queued"
    RUNNING = "running"
    SUSPENDED = "suspended"
    DONE = "done"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELED = "canceled"
    GONE = "gone"
    UNKNOWN = "unknown"
    NOCHANGE = "nochange"


@dataclass
class BackendView:
    """A backend's report on one job."""

    seen: Seen
    backend_state: str | None = None
    exit_code: int | None = None
    elapsed: float | None = None
    message: str = ""
    #: Whether this report counts as a sighting (refreshes ``last_seen_at``).
    sighted: bool = True


class RemoteBackend:
    """Base of the backends whose jobs run elsewhere; subclasses implement the engine calls."""

    name = "remote"

    def __init__(self, service: JobService):
        self.service = service
        self.settings = service.settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the poll thread (when ``backend_poll_interval`` > 0)."""
        interval = self.settings.backend_poll_interval
        if interval <= 0:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, args=(interval,), name=f"{self.name}-poller", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the poll thread; jobs go on in their engine."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.close()

    def close(self) -> None:
        """Release engine connections (subclasses)."""

    def _loop(self, interval: float) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
            except Exception:
                log.exception("backend_poll_failed", backend=self.name)
            self._stop.wait(interval)

    # --- interface (subclasses) ------------------------------------------------------------
    def submit(self, job: JobRecord) -> None:  # pragma: no cover - abstract
        """Hand the job to the engine and move it to QUEUED."""
        raise NotImplementedError

    def cancel(self, job: JobRecord) -> bool:  # pragma: no cover - abstract
        """Abort the job and stop it in the engine."""
        raise NotImplementedError

    def wait_stopped(self, job: JobRecord) -> None:
        """Nothing to wait for here: the job runs elsewhere (the folder removal retries)."""

    def view(self, job: JobRecord) -> BackendView:  # pragma: no cover - abstract
        """What the engine says about a submitted job."""
        raise NotImplementedError

    def find_submitted(self, job: JobRecord) -> str | None:
        """The engine's id of a job submitted but not recorded (after a crash), if any."""
        return None

    # --- reconciliation ------------------------------------------------------------------
    def reconcile(self, wait: float = 0.0) -> None:
        """One pass over this backend's non-final jobs.

        Skipped when another process is doing one and has not finished within ``wait`` s.
        """
        with pass_lock(engine_of(self.service), self.name, wait) as got:
            if not got:
                return
            for job in self.open_jobs():
                try:
                    self.refresh(job)
                except Exception:
                    log.exception("reconcile_failed", backend=self.name, job_id=job.id)

    def open_jobs(self) -> list[JobRecord]:
        """This backend's jobs that are not final, oldest first."""
        with self.service.sessions() as s:
            rows = s.scalars(
                select(JobRecord)
                .where(
                    JobRecord.backend == self.name,
                    JobRecord.phase.not_in([p.value for p in FINAL]),
                )
                .order_by(JobRecord.created_at)
            )
            return list(rows)

    def refresh(self, job: JobRecord) -> None:
        """Bring one job in line with its engine."""
        if job.phase in (Phase.PENDING.value, Phase.HELD.value):
            self._redispatch(job)
            return
        if not job.backend_job_id:
            # Recorded QUEUED with no engine id: the hand-over itself was lost.
            self.vanished(job, f"{self.name} has no record of the job")
            return
        self.apply(job, self.view(job))

    def _redispatch(self, job: JobRecord) -> None:
        if job.phase != Phase.PENDING.value or not job.run_requested:
            return
        age = (utcnow() - as_aware(job.created_at)).total_seconds()
        if age < REDISPATCH_AFTER:
            return  # a submission may still be in flight
        found = self.find_submitted(job)
        if found is not None:
            log.info("job_adopted", backend=self.name, job_id=job.id, backend_job_id=found)
            self.service.transition(
                job.id,
                Phase.QUEUED,
                message=f"Job found in {self.name} after a restart",
                expect=[Phase.PENDING],
                backend_job_id=found,
            )
            return
        log.info("job_redispatched", backend=self.name, job_id=job.id)
        self.service.dispatch(job)

    def apply(self, job: JobRecord, view: BackendView) -> None:
        """Move ``job`` according to ``view``."""
        svc = self.service
        phase = Phase(job.phase)
        fields: dict[str, Any] = {}
        if view.sighted and view.seen != Seen.GONE:
            fields["last_seen_at"] = utcnow()
        if view.backend_state and view.backend_state != job.backend_state:
            fields["backend_state"] = view.backend_state[:64]
        seen = view.seen
        if seen == Seen.QUEUED:
            if phase == Phase.SUSPENDED:
                svc.transition(job.id, Phase.EXECUTING, expect=[phase])
                phase = Phase.EXECUTING
            if phase in (Phase.EXECUTING, Phase.UNKNOWN):
                svc.transition(
                    job.id,
                    Phase.QUEUED,
                    message=view.message or f"Job requeued by {self.name}",
                    expect=[phase],
                )
        elif seen == Seen.RUNNING:
            if phase in (Phase.QUEUED, Phase.UNKNOWN, Phase.SUSPENDED):
                svc.transition(
                    job.id, Phase.EXECUTING, message=view.message or "Job running", expect=[phase]
                )
        elif seen == Seen.SUSPENDED:
            if phase in (Phase.QUEUED, Phase.UNKNOWN):
                svc.transition(job.id, Phase.EXECUTING, message="Job started", expect=[phase])
                phase = Phase.EXECUTING
            if phase == Phase.EXECUTING:
                svc.transition(
                    job.id,
                    Phase.SUSPENDED,
                    message=view.message or f"Job suspended by {self.name}",
                    expect=[phase],
                )
        elif seen in (Seen.DONE, Seen.FAILED, Seen.TIMEOUT):
            if fields:
                svc.update_fields(job.id, **fields)
                fields = {}
            self.finish(job, view)
        elif seen == Seen.CANCELED:
            info = read_exit_file(svc.job_dir(job))
            extra: dict[str, Any] = {}
            if info is not None:
                extra = {"exit_code": info.get("exit_code"), "elapsed": info.get("elapsed")}
            elif view.elapsed is not None:
                extra = {"elapsed": view.elapsed, "exit_code": view.exit_code}
            if not svc.transition(
                job.id,
                Phase.ABORTED,
                Reason.CANCELED,
                view.message or f"Job canceled in {self.name}",
                **extra,
                **fields,
            ):
                svc.update_fields(job.id, **extra, **fields)
            return
        elif seen == Seen.GONE:
            self.vanished(job, view.message or f"Job vanished from {self.name}")
        elif seen == Seen.UNKNOWN:
            if phase != Phase.UNKNOWN:
                svc.transition(
                    job.id,
                    Phase.UNKNOWN,
                    message=view.message or f"{self.name} reports state {view.backend_state}",
                    expect=[phase],
                )
        if fields:
            svc.update_fields(job.id, **fields)

    def finish(self, job: JobRecord, view: BackendView) -> None:
        """Finish a job that ended in its engine, trusting the wrapper's ``exit.json`` first."""
        jdir = self.service.job_dir(job)
        info = read_exit_file(jdir)
        code = view.exit_code
        elapsed = view.elapsed
        if info is not None and info.get("exit_code") is not None:
            code = int(info["exit_code"])
            elapsed = float(info.get("elapsed") or 0.0) or elapsed
        timed_out = view.seen == Seen.TIMEOUT or (jdir / TIMEOUT_FLAG).exists()
        if view.seen == Seen.DONE and code is None:
            code = 0  # the engine saw a clean exit and the wrapper's record is missing
        message = ""
        if timed_out:
            message = view.message
        elif view.seen == Seen.FAILED and view.message:
            message = view.message if code is None else f"{view.message} (exit code {code})"
        self.service.finish(
            job,
            Outcome(
                code,
                None if elapsed is None else round(elapsed, 3),
                timed_out=timed_out,
                message=message,
            ),
        )

    def vanished(self, job: JobRecord, why: str) -> None:
        """The engine has no record of the job: finish it from its exit file, or mark it lost."""
        jdir = self.service.job_dir(job)
        info = read_exit_file(jdir)
        if info is not None and info.get("exit_code") is not None:
            log.info("job_finished_unseen", backend=self.name, job_id=job.id)
            self.finish(job, BackendView(Seen.DONE, elapsed=info.get("elapsed")))
            return
        ref = job.last_seen_at or job.started_at or job.created_at
        unseen = (utcnow() - as_aware(ref)).total_seconds()
        if unseen < self.settings.monitor_lost_after:
            log.info("job_unseen", backend=self.name, job_id=job.id, seconds=round(unseen, 1))
            return
        log.warning("job_lost", backend=self.name, job_id=job.id, why=why)
        self.service.finish(
            job,
            Outcome(
                None,
                None,
                message=f"{why}; unseen for {unseen:.0f} s and no exit record: outcome unknown",
                reason=Reason.LOST,
            ),
        )

    # --- job command ---------------------------------------------------------------------
    def job_command(self, job: JobRecord) -> list[str]:
        """The app's argument list from the job's ``job.json``."""
        spec = json.loads((self.service.job_dir(job) / SPEC_FILE).read_text())
        return [str(a) for a in spec["command"]]


def wrapper_argv(
    command: Sequence[str], python: str | None, mapping: Sequence[tuple[str, str]]
) -> list[str]:
    """The wrapper command for an engine whose paths and interpreter may differ from ours.

    ``python`` replaces this interpreter (also where the app command starts with it);
    ``mapping`` holds (our prefix, engine prefix) pairs for path arguments.
    """
    py = python or sys.executable
    cmd = [remap(a, mapping) for a in command]
    if cmd and cmd[0] == sys.executable:
        cmd[0] = py
    return [py, "-m", WRAPPER_MODULE, "--", *cmd]


def remap(arg: str, mapping: Sequence[tuple[str, str]]) -> str:
    """Replace a leading path prefix of ``arg`` (or of the value in ``--opt=value``)."""
    for src, dst in mapping:
        if src == dst:
            continue
        if arg == src:
            return dst
        if arg.startswith(src.rstrip("/") + "/"):
            return dst.rstrip("/") + arg[len(src.rstrip("/")) :]
    if arg.startswith("-") and "=" in arg:
        key, _, value = arg.partition("=")
        mapped = remap(value, mapping)
        if mapped != value:
            return f"{key}={mapped}"
    return arg


def as_aware(dt: datetime) -> datetime:
    """SQLite returns naive datetimes; they are UTC."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def engine_of(service: JobService) -> Engine:
    """The engine behind the service's session factory."""
    bind = service.sessions.kw.get("bind")
    assert isinstance(bind, Engine)
    return bind


@contextlib.contextmanager
def pass_lock(engine: Engine, name: str, wait: float = 0.0) -> Iterator[bool]:
    """Try (for up to ``wait`` s) to take the reconciliation lock of backend ``name``; yield
    whether it was taken."""
    key = zlib.crc32(f"caesar-rest-monitor:{name}".encode())
    deadline = time.monotonic() + wait
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            while True:
                got = bool(
                    conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
                )
                conn.commit()
                if got or time.monotonic() >= deadline:
                    break
                time.sleep(0.1)
            try:
                yield got
            finally:
                if got:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
        return
    db = engine.url.database
    if engine.dialect.name == "sqlite" and db and db != ":memory:":
        path = Path(f"{db}.{name}.lock")
        with open(path, "a+b") as fh:
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        yield False
                        return
                    time.sleep(0.1)
            try:
                yield True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return
    yield True


def seconds_since(epoch: float | None) -> float | None:
    """Seconds elapsed since a Unix time, or None."""
    return None if not epoch else time.time() - epoch


def register_remote_backends(service: JobService) -> None:
    """Add every remote backend whose settings are present to ``service.backends``.

    A job keeps the backend it was submitted to, so each configured backend stays reachable for
    status and cancel whatever the current default is.
    """
    settings = service.settings
    if settings.celery_enabled:
        from caesar_rest.backends.celery_backend import CeleryBackend

        service.backends["celery"] = CeleryBackend(service)
    if settings.slurm_enabled:
        from caesar_rest.backends.slurm import SlurmBackend

        service.backends["slurm"] = SlurmBackend(service)
    if settings.kube_enabled:
        from caesar_rest.backends.kubernetes import KubernetesBackend

        service.backends["kubernetes"] = KubernetesBackend(service)
