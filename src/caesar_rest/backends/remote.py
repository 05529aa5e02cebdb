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

A remote backend reads its own settings section (``settings.slurm``, given to its constructor)
and, of the core settings, only the few in :class:`CoreView`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import select

from caesar_rest.backends.process import job_limits
from caesar_rest.db.engine import is_transient
from caesar_rest.db.locks import pass_lock
from caesar_rest.db.models import JobRecord
from caesar_rest.errors import ServiceError
from caesar_rest.jobs.folder import TIMEOUT_FLAG, JobLimits, lost, outcome_of, read_exit, read_spec
from caesar_rest.jobs.service import JobService
from caesar_rest.jobs.states import FINAL, Phase, Reason
from caesar_rest.logconfig import get_logger
from caesar_rest.settings import Settings
from caesar_rest.timeutil import seconds_ago, utcnow

log = get_logger(__name__)

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


@dataclass(frozen=True)
class CoreView:
    """The core settings a remote backend reads besides its own section."""

    #: Seconds between the poll thread's reconciliation passes (0: no thread).
    poll_interval: float
    #: Seconds a job may go unseen by its engine before it is marked lost.
    lost_after: float
    #: Seconds between SIGTERM and SIGKILL when a job is stopped.
    kill_grace: float
    #: The service's data and job folders (as configured; the engine may see them elsewhere).
    datadir: Path
    jobdir: Path
    #: The jobs' resource limits (set by the wrapper; the engine's memory limit beside them).
    limits: JobLimits = JobLimits()

    @classmethod
    def of(cls, settings: Settings) -> CoreView:
        """The view of ``settings``."""
        return cls(
            poll_interval=settings.backend_poll_interval,
            lost_after=settings.monitor_lost_after,
            kill_grace=settings.job_kill_grace,
            datadir=settings.datadir,
            jobdir=settings.jobdir,
            limits=job_limits(settings),
        )


class RemoteBackend:
    """Base of the backends whose jobs run elsewhere; subclasses implement the engine calls.

    Parameters
    ----------
    service
        The job service the backend reports to; :attr:`core` is taken from its settings.
    """

    name = "remote"

    def __init__(self, service: JobService):
        self.service = service
        self.core = CoreView.of(service.settings)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the poll thread (when ``backend_poll_interval`` > 0)."""
        interval = self.core.poll_interval
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

        Skipped when another process is doing one and has not finished within ``wait`` s;
        cut short when the database is busy or out of reach (the next pass goes on).
        """
        with pass_lock(self.service.engine, self.name, wait) as got:
            if not got:
                return
            for job in self.open_jobs():
                try:
                    self.refresh(job)
                except Exception as exc:
                    if is_transient(exc):
                        # The database is busy or down: each job would wait out the busy
                        # timeout in turn. The next pass sees the same jobs (none is final
                        # yet) and records what this one could not.
                        log.warning("reconcile_db_busy", backend=self.name, error=str(exc))
                        return
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
        age = seconds_ago(job.created_at)
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
        """Move ``job`` according to ``view``.

        The engine's word and the sighting are stored with the change (or alone, when the
        view changes no phase).
        """
        fields: dict[str, Any] = {}
        if view.sighted and view.seen != Seen.GONE:
            fields["last_seen_at"] = utcnow()
        if view.backend_state and view.backend_state != job.backend_state:
            fields["backend_state"] = view.backend_state[:64]
        if view.seen in (Seen.DONE, Seen.FAILED, Seen.TIMEOUT):
            if fields:
                self.service.update_fields(job.id, **fields)
            self.finish(job, view)
            return
        if view.seen == Seen.CANCELED:
            self._canceled(job, view, fields)
            return
        step = self._STEPS.get(view.seen)
        if step is not None:
            step(self, job, Phase(job.phase), view)
        if fields:
            self.service.update_fields(job.id, **fields)

    def _queued(self, job: JobRecord, phase: Phase, view: BackendView) -> None:
        if phase == Phase.SUSPENDED:
            self.service.transition(job.id, Phase.EXECUTING, expect=[phase])
            phase = Phase.EXECUTING
        if phase in (Phase.EXECUTING, Phase.UNKNOWN):
            message = view.message or f"Job requeued by {self.name}"
            self.service.transition(job.id, Phase.QUEUED, message=message, expect=[phase])

    def _running(self, job: JobRecord, phase: Phase, view: BackendView) -> None:
        if phase in (Phase.QUEUED, Phase.UNKNOWN, Phase.SUSPENDED):
            message = view.message or "Job running"
            self.service.transition(job.id, Phase.EXECUTING, message=message, expect=[phase])

    def _suspended(self, job: JobRecord, phase: Phase, view: BackendView) -> None:
        svc = self.service
        if phase in (Phase.QUEUED, Phase.UNKNOWN):
            svc.transition(job.id, Phase.EXECUTING, message="Job started", expect=[phase])
            phase = Phase.EXECUTING
        if phase == Phase.EXECUTING:
            message = view.message or f"Job suspended by {self.name}"
            svc.transition(job.id, Phase.SUSPENDED, message=message, expect=[phase])

    def _gone(self, job: JobRecord, _phase: Phase, view: BackendView) -> None:
        self.vanished(job, view.message or f"Job vanished from {self.name}")

    def _unknown(self, job: JobRecord, phase: Phase, view: BackendView) -> None:
        if phase != Phase.UNKNOWN:
            message = view.message or f"{self.name} reports state {view.backend_state}"
            self.service.transition(job.id, Phase.UNKNOWN, message=message, expect=[phase])

    #: What a sighting that changes no final state does, per :class:`Seen`.
    _STEPS: ClassVar[dict[Seen, Callable[[RemoteBackend, JobRecord, Phase, BackendView], None]]] = {
        Seen.QUEUED: _queued,
        Seen.RUNNING: _running,
        Seen.SUSPENDED: _suspended,
        Seen.GONE: _gone,
        Seen.UNKNOWN: _unknown,
    }

    def _canceled(self, job: JobRecord, view: BackendView, fields: dict[str, Any]) -> None:
        """Canceled in the engine: ABORTED, with the figures of the exit record or engine."""
        record = read_exit(self.service.job_dir(job))
        extra: dict[str, Any] = {}
        if record is not None:
            extra = {"exit_code": record.exit_code, "elapsed": record.elapsed}
        elif view.elapsed is not None:
            extra = {"elapsed": view.elapsed, "exit_code": view.exit_code}
        message = view.message or f"Job canceled in {self.name}"
        if not self.service.transition(
            job.id, Phase.ABORTED, Reason.CANCELED, message, **extra, **fields
        ):
            self.service.update_fields(job.id, **extra, **fields)

    def finish(self, job: JobRecord, view: BackendView) -> None:
        """Finish a job that ended in its engine, trusting the wrapper's ``exit.json`` first.

        With a remote volume, the job folder is brought back from the remote first when it
        is not here (a pod's emptyDir); while the remote cannot be read the job is left as
        it is, for the next pass.
        """
        if not self._pulled(job):
            return
        jdir = self.service.job_dir(job)
        record = read_exit(jdir)
        timed_out = view.seen == Seen.TIMEOUT or (jdir / TIMEOUT_FLAG).exists()
        code = view.exit_code
        if view.seen == Seen.DONE and code is None and (record is None or not record.recorded):
            code = 0  # the engine saw a clean exit and the wrapper's record is missing
        outcome = outcome_of(record, exit_code=code, seen_elapsed=view.elapsed, timed_out=timed_out)
        if timed_out:
            outcome.message = view.message
        elif view.seen == Seen.FAILED and view.message:
            code = outcome.exit_code
            outcome.message = view.message if code is None else f"{view.message} (exit code {code})"
        self.service.finish(job, outcome)

    def vanished(self, job: JobRecord, why: str) -> None:
        """The engine has no record of the job: finish it from its exit file, or mark it lost."""
        if not self._pulled(job):
            return
        record = read_exit(self.service.job_dir(job))
        if record is not None and record.recorded:
            log.info("job_finished_unseen", backend=self.name, job_id=job.id)
            self.finish(job, BackendView(Seen.DONE, elapsed=record.elapsed))
            return
        unseen = seconds_ago(job.last_seen_at or job.started_at or job.created_at)
        if unseen < self.core.lost_after:
            log.info("job_unseen", backend=self.name, job_id=job.id, seconds=round(unseen, 1))
            return
        log.warning("job_lost", backend=self.name, job_id=job.id, why=why)
        message = f"{why}; unseen for {unseen:.0f} s and no exit record: outcome unknown"
        self.service.finish(job, lost(message))

    def _pulled(self, job: JobRecord) -> bool:
        """Whether the job folder is here (pulled from the remote volume if need be)."""
        try:
            self.service.pull_folder(job)
        except ServiceError as exc:
            log.warning("job_folder_not_pulled", backend=self.name, job_id=job.id, why=str(exc))
            return False
        return True

    # --- job command ---------------------------------------------------------------------
    def job_command(self, job: JobRecord) -> list[str]:
        """The app's argument list from the job's ``job.json``."""
        return read_spec(self.service.job_dir(job)).command
