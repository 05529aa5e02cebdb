"""The Celery backend: jobs run on ``caesar-rest worker`` processes, anywhere.

API side (:class:`CeleryBackend`): ``submit`` moves the stored PENDING job to QUEUED and only
then sends the task (task id = job id) with the job's soft time limit and a hard limit beyond
it. ``cancel`` sets ABORTED, then revokes the task with ``terminate``: the worker running it
signals the task's process, which stops the job's process group on that worker.

Worker side (:func:`execute`): the task moves the job QUEUED -> EXECUTING, runs the wrapper in
the job folder in its own session (it dies with the task's process, through
``PR_SET_PDEATHSIG``), writes a heartbeat (``last_seen_at``) every ``celery_heartbeat`` seconds,
watches for a cancel in the database, enforces the time limit (Celery's soft limit raises in
the task; the job then ends TIMED-OUT) and records the outcome like the local backend.

A task delivered again (its worker died: ``acks_late`` + ``reject_on_worker_lost``) waits until
the job's heartbeat is stale, so it never runs a job that another live worker still runs; then
it finishes the job from a clean ``exit.json``, or runs it again (at most ``celery_max_reruns``
times, then ERROR with the reason).

Reconciliation (monitor): a FAILURE or REVOKED task result settles its job; an EXECUTING job
whose heartbeat stopped, or a QUEUED job whose message is in no queue and on no worker, is lost
after ``monitor_lost_after`` seconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import time
from types import FrameType
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.result import AsyncResult
from sqlalchemy import func, select

from caesar_rest.backends.celery_app import TASK_NAME, make_celery
from caesar_rest.backends.remote import (
    BackendView,
    RemoteBackend,
    Seen,
    as_aware,
    wrapper_argv,
)
from caesar_rest.db.models import JobEvent, JobRecord
from caesar_rest.jobs.service import (
    EXIT_FILE,
    LOG_FILE,
    SPEC_FILE,
    JobService,
    Outcome,
    hostname,
    process_alive,
    process_start_ticks,
    read_exit_file,
)
from caesar_rest.jobs.states import FINAL, Phase, Reason
from caesar_rest.logconfig import get_logger
from caesar_rest.timeutil import utcnow

log = get_logger(__name__)

RERUN_MESSAGE = "Worker lost during the run; running the job again"


class CeleryBackend(RemoteBackend):
    """Sends jobs to Celery workers."""

    name = "celery"

    def __init__(self, service: JobService):
        super().__init__(service)
        self.app = make_celery(self.settings)

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
        soft = job.time_limit + self.settings.job_kill_grace + 5
        hard = soft + self.settings.celery.hard_time_margin
        self.app.send_task(
            TASK_NAME,
            args=[job.id],
            task_id=job.id,
            queue=self.settings.celery.queue,
            soft_time_limit=soft,
            time_limit=hard,
        )
        log.info("job_sent", backend=self.name, job_id=job.id, queue=self.settings.celery.queue)

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
            ref = job.last_seen_at or job.created_at
            unseen = (utcnow() - as_aware(ref)).total_seconds()
            if unseen < self.settings.monitor_lost_after:
                return BackendView(Seen.NOCHANGE, state, sighted=False)
            # Only now the costly look: is the message still somewhere?
            if self._queue_depth() != 0 or self._on_a_worker(task_id):
                return BackendView(Seen.NOCHANGE, state)  # sighted: restarts the clock
            return BackendView(Seen.GONE, state, message="Celery task message lost")
        beat = job.last_seen_at or job.started_at or job.created_at
        stale = (utcnow() - as_aware(beat)).total_seconds() > 3 * self.settings.celery.heartbeat
        if not stale:
            return BackendView(Seen.NOCHANGE, state, sighted=False)
        return BackendView(Seen.GONE, state, message="Celery worker stopped reporting the job")

    def vanished(self, job: JobRecord, why: str) -> None:
        """Finish from a clean ``exit.json``; a job stopped by a signal waits for a re-run.

        The wrapper of a job whose worker died records the SIGTERM it got from its dying parent;
        that is no outcome of the app: the task is delivered again and runs the job anew. Only
        when that has not happened within ``monitor_lost_after`` is the job marked lost.
        """
        info = read_exit_file(self.service.job_dir(job))
        if info is None or info.get("exit_code") is None or info.get("signal") is None:
            super().vanished(job, why)
            return
        ref = job.last_seen_at or job.started_at or job.created_at
        unseen = (utcnow() - as_aware(ref)).total_seconds()
        if unseen < self.settings.monitor_lost_after:
            return
        self.service.finish(
            job,
            Outcome(
                int(info["exit_code"]),
                float(info.get("elapsed") or 0.0),
                message=f"{why}: the job was stopped by signal {info['signal']} and not run "
                f"again within {self.settings.monitor_lost_after:.0f} s",
                reason=Reason.LOST,
            ),
        )

    def _queue_depth(self) -> int | None:
        """Messages ready in the job queue (None: cannot tell)."""
        try:
            with self.app.connection_for_write() as conn:
                ok = conn.default_channel.queue_declare(
                    queue=self.settings.celery.queue, passive=True
                )
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


# --- worker side -------------------------------------------------------------------------
_SERVICES: dict[int, JobService] = {}


def worker_service() -> JobService:
    """The job service of this worker process (built after the fork)."""
    pid = os.getpid()
    svc = _SERVICES.get(pid)
    if svc is None:
        from caesar_rest.apps.registry import default_registry
        from caesar_rest.db.engine import make_engine, make_sessionmaker
        from caesar_rest.settings import get_settings

        settings = get_settings()
        engine = make_engine(settings.database_url)
        svc = JobService(settings, make_sessionmaker(engine), default_registry(settings.extra_apps))
        _SERVICES.clear()
        _SERVICES[pid] = svc
    return svc


class Terminated(Exception):
    """The task's process got SIGTERM (revoke with terminate)."""


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise Terminated()


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the task's process dies (Linux PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def execute(task: Task, job_id: str) -> dict[str, Any]:
    """Body of the job task."""
    try:
        return _execute(task, job_id)
    except SoftTimeLimitExceeded:
        # The limit struck outside the run loop (e.g. while waiting for a lost worker's job).
        svc = worker_service()
        job = svc.get_any(job_id)
        if job is not None:
            svc.finish(job, Outcome(None, None, timed_out=True))
        return {"job_id": job_id, "result": "timed out", "timed_out": True}


def _execute(task: Task, job_id: str) -> dict[str, Any]:
    svc = worker_service()
    job = svc.get_any(job_id)
    if job is None:
        return {"job_id": job_id, "result": "missing"}
    if Phase(job.phase) in FINAL:
        return {"job_id": job_id, "result": "already final", "phase": job.phase}
    if job.phase != Phase.QUEUED.value:
        job = _recover(svc, job)
        if job is None:
            fresh = svc.get_any(job_id)
            return {"job_id": job_id, "result": "settled", "phase": fresh and fresh.phase}
    return _run(svc, task, job)


def _recover(svc: JobService, job: JobRecord) -> JobRecord | None:
    """A delivery of a job that already started: return it re-queued to run, or None."""
    settings = svc.settings
    beat0 = job.last_seen_at
    wait_until = time.time() + 2.5 * settings.celery.heartbeat
    while time.time() < wait_until:
        cur = svc.get_any(job.id)
        if cur is None or Phase(cur.phase) in FINAL:
            return None
        if cur.last_seen_at is not None and cur.last_seen_at != beat0:
            log.info("job_running_elsewhere", job_id=job.id, host=cur.host)
            return None  # another live task beats for it
        time.sleep(min(1.0, settings.celery.heartbeat / 2))
    job = svc.get_any(job.id) or job
    if Phase(job.phase) in FINAL:
        return None
    if job.host == hostname() and process_alive(job.pid, job.pid_start):
        # An orphan of the dead task on this machine: stop it before deciding.
        assert job.pid is not None
        _kill_group(job.pid, job.pid_start, settings.job_kill_grace)
    jdir = svc.job_dir(job)
    info = read_exit_file(jdir)
    if info is not None and info.get("exit_code") is not None and info.get("signal") is None:
        log.info("job_finished_while_worker_lost", job_id=job.id)
        svc.finish(job, Outcome(int(info["exit_code"]), float(info.get("elapsed") or 0.0)))
        return None
    with svc.sessions() as s:
        reruns = s.scalar(
            select(func.count())
            .select_from(JobEvent)
            .where(JobEvent.job_id == job.id, JobEvent.message == RERUN_MESSAGE)
        )
    if (reruns or 0) >= settings.celery.max_reruns:
        svc.finish(
            job,
            Outcome(
                None,
                None,
                message=f"Worker lost during the run {int(reruns or 0) + 1} times; giving up",
                reason=Reason.LOST,
            ),
        )
        return None
    if not svc.transition(job.id, Phase.QUEUED, message=RERUN_MESSAGE, expect=[Phase(job.phase)]):
        return None
    return svc.get_any(job.id)


def _run(svc: JobService, task: Task, job: JobRecord) -> dict[str, Any]:
    settings = svc.settings
    me = hostname()
    if not svc.transition(
        job.id,
        Phase.EXECUTING,
        message=f"Job running on Celery worker {task.request.hostname or me}",
        expect=[Phase.QUEUED],
        host=me,
        backend_state="STARTED",
        last_seen_at=utcnow(),
    ):
        fresh = svc.get_any(job.id)
        return {"job_id": job.id, "result": "not started", "phase": fresh and fresh.phase}
    job = svc.get_any(job.id) or job
    jdir = svc.job_dir(job)
    try:
        spec = json.loads((jdir / SPEC_FILE).read_text())
        argv = wrapper_argv([str(a) for a in spec["command"]], None, [])
        with contextlib.suppress(FileNotFoundError):
            (jdir / EXIT_FILE).unlink()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAESAR_REST_")}
        env.setdefault("OMP_NUM_THREADS", str(job.cores))
        env["MPLBACKEND"] = "Agg"
        with open(jdir / LOG_FILE, "ab") as logf:
            proc = subprocess.Popen(  # noqa: S603 - argument list, no shell
                argv,
                cwd=jdir,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env=env,
                preexec_fn=_die_with_parent,  # safe: a pool process runs no other threads
            )
    except Exception as exc:
        log.exception("job_launch_failed", job_id=job.id)
        svc.finish(job, Outcome(None, 0.0, message=f"Job failed to start on the worker: {exc}"))
        return {"job_id": job.id, "result": "launch failed"}
    started = time.time()
    pid_start = process_start_ticks(proc.pid)
    svc.update_fields(job.id, pid=proc.pid, pid_start=pid_start, last_seen_at=utcnow())
    log.info("job_started", backend="celery", job_id=job.id, pid=proc.pid)
    timed_out = terminated = canceled = False
    rc: int | None = None
    deadline = started + job.time_limit
    next_beat = started + settings.celery.heartbeat
    old = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        while True:
            try:
                rc = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.time()
            if now >= next_beat:
                next_beat = now + settings.celery.heartbeat
                cur = svc.get_any(job.id)
                if cur is None or cur.phase == Phase.ABORTED.value:
                    canceled = True
                    break
                svc.update_fields(job.id, last_seen_at=utcnow())
            if now >= deadline:
                timed_out = True
                break
    except SoftTimeLimitExceeded:
        timed_out = True
    except Terminated:
        terminated = True
    finally:
        signal.signal(signal.SIGTERM, old)
    if rc is None:
        _kill_group(proc.pid, pid_start, settings.job_kill_grace)
        with contextlib.suppress(subprocess.TimeoutExpired):
            rc = proc.wait(timeout=5)
    # Leave nothing of the job behind (children the app may have spawned).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    elapsed = round(time.time() - started, 3)
    info = read_exit_file(jdir)
    code = rc
    if info is not None and info.get("exit_code") is not None:
        code = int(info["exit_code"])
    if terminated or canceled:
        fields: dict[str, Any] = {"exit_code": code, "elapsed": elapsed}
        if not svc.transition(
            job.id, Phase.ABORTED, Reason.CANCELED, "Job terminated on the worker", **fields
        ):
            svc.update_fields(job.id, **fields)
        return {"job_id": job.id, "result": "terminated", "exit_code": code}
    if timed_out:
        log.warning("job_timeout", backend="celery", job_id=job.id, limit=job.time_limit)
    svc.finish(job, Outcome(code, elapsed, timed_out=timed_out))
    return {"job_id": job.id, "result": "ended", "exit_code": code, "timed_out": timed_out}


def _kill_group(pid: int, pid_start: int | None, grace: float) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds if it lingers."""
    if not process_alive(pid, pid_start):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    end = time.time() + grace
    while time.time() < end and process_alive(pid, pid_start):
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
