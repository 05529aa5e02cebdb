"""``caesar-rest monitor``: reconcile every non-final job with its backend, periodically.

Each pass asks every configured backend to reconcile its non-final jobs (see
:class:`caesar_rest.backends.remote.RemoteBackend`): engine states become phase changes, jobs
that ended while nobody looked are finished from their ``exit.json``, and a job that no engine
can account for is marked ERROR (reason ``lost``) once it has gone unseen for
``monitor_lost_after`` seconds. Local jobs are the business of the API process that runs them;
the monitor only settles those of its own machine whose process is gone and whose record has
not moved for ``monitor_lost_after`` seconds (their API process died too).

Several monitors may run at once, and beside API processes that poll their backends: a pass
takes a per-backend lock and skips a backend another process is working on; the state
machine's conditional transitions make any overlap harmless.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy import Engine, select

from caesar_rest.apps.registry import default_registry
from caesar_rest.backends.local import LocalBackend
from caesar_rest.backends.remote import (
    RemoteBackend,
    as_aware,
    pass_lock,
    register_remote_backends,
)
from caesar_rest.db.engine import make_engine, make_sessionmaker
from caesar_rest.db.models import JobRecord
from caesar_rest.jobs.service import (
    JobService,
    Outcome,
    hostname,
    process_alive,
    read_exit_file,
)
from caesar_rest.jobs.states import Phase, Reason
from caesar_rest.logconfig import get_logger
from caesar_rest.settings import Settings
from caesar_rest.timeutil import utcnow

log = get_logger(__name__)


class Monitor:
    """Periodic reconciliation of all backends' jobs."""

    def __init__(self, service: JobService, engine: Engine):
        self.service = service
        self.engine = engine
        self.passes = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Monitor:
        """A monitor with its own database pool and every configured backend."""
        engine = make_engine(settings.database_url)
        service = JobService(
            settings, make_sessionmaker(engine), default_registry(settings.extra_apps)
        )
        service.backends["local"] = LocalBackend(service)
        register_remote_backends(service)
        return cls(service, engine)

    def run_once(self, wait: float = 0.0) -> None:
        """One pass over every backend (waiting up to ``wait`` s for a busy one)."""
        for name, backend in list(self.service.backends.items()):
            try:
                if name == "local":
                    self._local_pass(wait)
                elif isinstance(backend, RemoteBackend):
                    backend.reconcile(wait)
                else:
                    backend.reconcile()
            except Exception:
                log.exception("monitor_pass_failed", backend=name)
        self.passes += 1

    def run(self, stop: threading.Event) -> None:
        """Passes every ``monitor_period`` seconds until ``stop`` is set."""
        period = self.service.settings.monitor_period
        while not stop.is_set():
            t0 = time.monotonic()
            self.run_once()
            stop.wait(max(0.0, period - (time.monotonic() - t0)))

    def close(self) -> None:
        """Release backend and database connections."""
        for name, backend in self.service.backends.items():
            if name != "local":
                backend.stop()
        self.engine.dispose()

    def _local_pass(self, wait: float = 0.0) -> None:
        svc = self.service
        lost_after = svc.settings.monitor_lost_after
        me = hostname()
        with pass_lock(self.engine, "local", wait) as got:
            if not got:
                return
            with svc.sessions() as s:
                jobs = list(
                    s.scalars(
                        select(JobRecord).where(
                            JobRecord.backend == "local",
                            JobRecord.phase == Phase.EXECUTING.value,
                            JobRecord.host == me,
                        )
                    )
                )
            for job in jobs:
                idle = (utcnow() - as_aware(job.updated_at)).total_seconds()
                if idle < lost_after or process_alive(job.pid, job.pid_start):
                    continue
                info = read_exit_file(svc.job_dir(job))
                if info is not None and info.get("exit_code") is not None:
                    svc.finish(
                        job, Outcome(int(info["exit_code"]), float(info.get("elapsed") or 0.0))
                    )
                    continue
                log.warning("job_lost", backend="local", job_id=job.id)
                svc.finish(
                    job,
                    Outcome(
                        None,
                        None,
                        message="Job process vanished and its service did not settle it; "
                        "outcome unknown",
                        reason=Reason.LOST,
                    ),
                )
