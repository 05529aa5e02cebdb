"""``caesar-rest monitor``: reconcile every non-final job with its backend, periodically.

Each pass calls every configured backend's ``reconcile(wait)`` (see
:class:`caesar_rest.backends.remote.RemoteBackend` and
:meth:`caesar_rest.backends.local.LocalBackend.reconcile`): engine states become phase changes,
jobs that ended while nobody looked are finished from their ``exit.json``, and a job that no
engine can account for is marked ERROR (reason ``lost``) once it has gone unseen for
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

from sqlalchemy import Engine

from caesar_rest.jobs.service import JobService
from caesar_rest.logconfig import get_logger
from caesar_rest.runtime import Runtime, build_runtime
from caesar_rest.settings import Settings

log = get_logger(__name__)


class Monitor:
    """Periodic reconciliation of all backends' jobs."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    @property
    def service(self) -> JobService:
        """The job service (with every configured backend)."""
        return self.runtime.jobs

    @property
    def engine(self) -> Engine:
        """The monitor's own database pool."""
        return self.runtime.engine

    @classmethod
    def from_settings(cls, settings: Settings) -> Monitor:
        """A monitor with its own database pool and every configured backend."""
        return cls(build_runtime(settings, migrate=False))

    def run_once(self, wait: float = 0.0) -> None:
        """One pass over every backend (waiting up to ``wait`` s for a busy one)."""
        for name, backend in list(self.service.backends.items()):
            try:
                backend.reconcile(wait)
            except Exception:
                log.exception("monitor_pass_failed", backend=name)

    def run(self, stop: threading.Event) -> None:
        """Passes every ``monitor_period`` seconds until ``stop`` is set."""
        period = self.service.settings.monitor_period
        while not stop.is_set():
            t0 = time.monotonic()
            self.run_once()
            stop.wait(max(0.0, period - (time.monotonic() - t0)))

    def close(self) -> None:
        """Release backend and database connections."""
        self.runtime.close()
