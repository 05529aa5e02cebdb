"""The janitor: removes jobs and their results once their destruction time has passed.

Every job gets a destruction time at creation (``destruction_days`` later unless the client
asked for another, never beyond ``max_destruction_days``; UWS clients may move it). A background
thread wakes every ``janitor_interval`` seconds, finds the jobs whose time has come, cancels
those still running and removes their folder, archive and records (UWS §2.2.3.3 allows
forgetting a destroyed job instead of keeping it ARCHIVED). Uploaded input files are not
touched: they are the user's, with their own lifetime. Further housekeeping tasks run after
each sweep (with the rclone volume: the partial upload copies left on the remote).

Several API processes may run a janitor on the same database: removal is idempotent, so two
janitors meeting on one job do no harm.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import select

from caesar_rest.db.models import JobRecord
from caesar_rest.jobs.service import JobService
from caesar_rest.logconfig import get_logger
from caesar_rest.timeutil import utcnow

log = get_logger(__name__)

#: Jobs removed per database query; the sweep repeats until none is left.
BATCH = 200


class Janitor:
    """Removes expired jobs from a background thread.

    Parameters
    ----------
    jobs
        The job service whose jobs are swept.
    interval
        Seconds between two sweeps.
    """

    def __init__(
        self, jobs: JobService, interval: float, tasks: Sequence[Callable[[], object]] = ()
    ):
        self.jobs = jobs
        self.interval = interval
        #: Further housekeeping run after each sweep (the remote's partial copies).
        self.tasks = tuple(tasks)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the background thread (the first sweep runs at once)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="job-janitor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread, waiting up to ``timeout`` seconds for a sweep in progress."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sweep()
            except Exception:  # the database may be briefly away: try again next time
                log.exception("janitor_sweep_failed")
            for task in self.tasks:
                try:
                    task()
                except Exception as exc:  # a remote that is away: try again next time
                    log.warning(
                        "janitor_task_failed", task=getattr(task, "__name__", "?"), error=str(exc)
                    )
            self._stop.wait(self.interval)

    def sweep(self, now: datetime | None = None) -> int:
        """Remove every job whose destruction time is at or before ``now``.

        Parameters
        ----------
        now
            The reference instant (default: the current time).

        Returns
        -------
        int
            The number of jobs removed.
        """
        now = now or utcnow()
        removed = 0
        failed: set[str] = set()
        while not self._stop.is_set():
            with self.jobs.sessions() as s:
                stmt = (
                    select(JobRecord)
                    .where(JobRecord.destruction_at.is_not(None), JobRecord.destruction_at <= now)
                    .order_by(JobRecord.destruction_at)
                    .limit(BATCH + len(failed))
                )
                batch = [j for j in s.scalars(stmt).all() if j.id not in failed]
            if not batch:
                break
            for job in batch:
                try:
                    self.jobs.delete(job)
                except Exception:  # e.g. its backend is not configured in this process
                    log.exception("janitor_delete_failed", job_id=job.id)
                    failed.add(job.id)
                    continue
                removed += 1
                log.info("job_destroyed", job_id=job.id, user=job.owner, app=job.app)
        return removed
