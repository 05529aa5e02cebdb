"""The Celery backend, API side: jobs run on ``caesar-rest worker`` processes, anywhere.

:class:`CeleryBackend`: ``submit`` moves the stored PENDING job to QUEUED and only
then sends the task (task id = job id) with the job's soft time limit and a hard limit beyond
it. ``cancel`` sets ABORTED, then revokes the task with ``terminate``: the worker running it
signals the task's process, which stops the job's process group on that worker.

The worker side (the task body) is :mod:`caesar_rest.backends.celery_worker`.

Reconciliation (monitor): a FAILURE or REVOKED task result settles its job; an EXECUTING job
whose heartbeat stopped, or a QUEUED job whose message is in no queue and on no worker, is lost
after ``monitor_lost_after`` seconds.
"""

from __future__ import annotations

import contextlib

from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.result import AsyncResult

from caesar_rest.backends.celery_app import TASK_NAME, make_celery
from caesar_rest.backends.remote import BackendView, RemoteBackend, Seen
from caesar_rest.db.models import JobRecord
from caesar_rest.jobs.folder import outcome_of, read_exit
from caesar_rest.jobs.service import JobService
from caesar_rest.jobs.states import Phase, Reason
from caesar_rest.logconfig import get_logger
from caesar_rest.settings import CelerySettings
from caesar_rest.timeutil import seconds_ago

log = get_logger(__name__)


class CeleryBackend(RemoteBackend):
    """Sends jobs to Celery workers.

    Parameters
    ----------
    service
        The job service the backend reports to.
    config
        The ``celery`` settings section.
    """

    name = "celery"

    def __init__(self, service: JobService, config: CelerySettings):
        super().__init__(service)
        self.config = config
        self.app = make_celery(config)

    def close(self) -> None:
        """Release broker and result backend connections."""
        with contextlib.suppress(Exception):
            self.app.close()

    # --- interface -----------------------------------------------------------------------
    def submit(self, job: JobRecord) -> None:
        """Record QUEUED (with the task id), then send the task."""
        if not self.service.transition(
            job.id,
            Phase.QUEUED,
            message="Job queued for a Celery worker",
            expect=[Phase.PENDING, Phase.HELD],
            backend_job_id=job.id,
        ):
            return
        # The worker enforces the job's limit to the second from the process start; Celery's
        # soft limit (raised in the task) and hard limit (the process is killed) back it up.
        soft = job.time_limit + self.core.kill_grace + 5
        hard = soft + self.config.hard_time_margin
        self.app.send_task(
            TASK_NAME,
            args=[job.id],
            task_id=job.id,
            queue=self.config.queue,
            soft_time_limit=soft,
            time_limit=hard,
        )
        log.info("job_sent", backend=self.name, job_id=job.id, queue=self.config.queue)

    def cancel(self, job: JobRecord) -> bool:
        """ABORTED first, then revoke and terminate the task on its worker."""
        ok = self.service.transition(job.id, Phase.ABORTED, Reason.CANCELED, "Job canceled by user")
        if not ok:
            return False
        try:
            self.app.control.revoke(job.backend_job_id or job.id, terminate=True, signal="SIGTERM")
        except Exception:
            # The worker also sees the ABORTED phase at its next heartbeat and stops the job.
            log.exception("revoke_failed", job_id=job.id)
        return True

    def view(self, job: JobRecord) -> BackendView:
        """Settle the job from the task result, the heartbeat, the queue and the workers."""
        task_id = job.backend_job_id or job.id
        result = AsyncResult(task_id, app=self.app)
        state = result.state
        if state == "FAILURE":
            exc = result.result
            if isinstance(exc, TimeLimitExceeded | SoftTimeLimitExceeded):
                return BackendView(
                    Seen.TIMEOUT, state, message=f"Celery hard time limit exceeded ({exc})"
                )
            return BackendView(Seen.FAILED, state, message=f"Celery task failed: {exc!r}"[:500])
        if state == "REVOKED":
            return BackendView(Seen.CANCELED, state, message="Celery task revoked")
        phase = Phase(job.phase)
        if phase == Phase.QUEUED:
            if seconds_ago(job.last_seen_at or job.created_at) < self.core.lost_after:
                return BackendView(Seen.NOCHANGE, state, sighted=False)
            # Only now the costly look: is the message still somewhere?
            if self._queue_depth() != 0 or self._on_a_worker(task_id):
                return BackendView(Seen.NOCHANGE, state)  # sighted: restarts the clock
            return BackendView(Seen.GONE, state, message="Celery task message lost")
        beat = job.last_seen_at or job.started_at or job.created_at
        stale = seconds_ago(beat) > 3 * self.config.heartbeat
        if not stale:
            return BackendView(Seen.NOCHANGE, state, sighted=False)
        return BackendView(Seen.GONE, state, message="Celery worker stopped reporting the job")

    def vanished(self, job: JobRecord, why: str) -> None:
        """Finish from a clean ``exit.json``; a job stopped by a signal waits for a re-run.

        The wrapper of a job whose worker died records the SIGTERM it got from its dying parent;
        that is no outcome of the app: the task is delivered again and runs the job anew. Only
        when that has not happened within ``monitor_lost_after`` is the job marked lost.
        """
        record = read_exit(self.service.job_dir(job))
        if record is None or not record.recorded or record.clean:
            super().vanished(job, why)
            return
        unseen = seconds_ago(job.last_seen_at or job.started_at or job.created_at)
        if unseen < self.core.lost_after:
            return
        self.service.finish(
            job,
            outcome_of(
                record,
                message=f"{why}: the job was stopped by signal {record.signal} and not run "
                f"again within {self.core.lost_after:.0f} s",
                reason=Reason.LOST,
            ),
        )

    def _queue_depth(self) -> int | None:
        """Messages ready in the job queue (None: cannot tell)."""
        try:
            with self.app.connection_for_write() as conn:
                ok = conn.default_channel.queue_declare(queue=self.config.queue, passive=True)
                return int(ok.message_count)
        except Exception as exc:
            if "NOT_FOUND" in str(exc) or "404" in str(exc):
                return 0
            log.warning("queue_depth_unknown", error=str(exc))
            return None

    def _on_a_worker(self, task_id: str) -> bool:
        """Whether a worker holds the task (running, reserved or scheduled)."""
        insp = self.app.control.inspect(timeout=2.0)
        for ask in (insp.active, insp.reserved, insp.scheduled):
            for tasks in (ask() or {}).values():
                for t in tasks:
                    info = t.get("request", t)
                    if info.get("id") == task_id:
                        return True
        return False
