"""The worker side of the Celery backend: the body of the ``caesar_rest.run_job`` task.

The task moves the job QUEUED -> EXECUTING, runs the wrapper in the job folder in its own
session (:func:`caesar_rest.backends.process.launch`; the job dies with the task's process,
through ``PR_SET_PDEATHSIG``), warm from the pool process's fork server
(:mod:`caesar_rest.backends.forkserver`, started with the pool process; its jobs die with the
pool process too) unless ``job_fork_server`` is off or the server is unavailable, writes a
heartbeat (``last_seen_at``) every ``celery_heartbeat``
seconds, watches for a cancel in the database, enforces the time limit (Celery's soft limit
raises in the task; the job then ends TIMED-OUT) and records the outcome like the local backend.

A task delivered again (its worker died: ``acks_late`` + ``reject_on_worker_lost``) waits until
the job's heartbeat is stale, so it never runs a job that another live worker still runs; then
it finishes the job from a clean ``exit.json``, or runs it again (at most ``celery_max_reruns``
times, then ERROR with the reason).

Few imports: the job service comes from :func:`caesar_rest.runtime.build_runtime` (without
backends), and nothing of the API side (:mod:`caesar_rest.backends.celery_backend`) is needed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import func, select

from caesar_rest.backends.forkserver import ForkServer
from caesar_rest.backends.process import (
    Launched,
    die_with_parent,
    fork_server,
    hostname,
    job_limits,
    kill_group,
    launch,
    process_alive,
    reap_group,
)
from caesar_rest.db.models import JobEvent, JobRecord
from caesar_rest.jobs.folder import Outcome, lost, outcome_of, read_exit, read_spec
from caesar_rest.jobs.service import JobService
from caesar_rest.jobs.states import FINAL, Phase, Reason
from caesar_rest.logconfig import get_logger
from caesar_rest.timeutil import utcnow

log = get_logger(__name__)

#: The event message of a re-run; counted against ``celery_max_reruns``.
RERUN_MESSAGE = "Worker lost during the run; running the job again"

_SERVICES: dict[int, JobService] = {}
_FORK_SERVERS: dict[int, ForkServer | None] = {}


def worker_service() -> JobService:
    """The job service of this worker process (built after the fork)."""
    pid = os.getpid()
    svc = _SERVICES.get(pid)
    if svc is None:
        # Imported here: the runtime is built once per pool process, after the fork.
        from caesar_rest.runtime import build_runtime
        from caesar_rest.settings import get_settings

        svc = build_runtime(get_settings(), migrate=False, backends=False).jobs
        _SERVICES.clear()
        _SERVICES[pid] = svc
    return svc


def worker_fork_server() -> ForkServer | None:
    """The fork server of this worker process (made at its first call, after the fork; started
    then when ``job_fork_server`` is eager, else with the first job); None when it is off."""
    pid = os.getpid()
    if pid not in _FORK_SERVERS:
        settings = worker_service().settings
        server = fork_server(settings, die_with_launcher=True)
        if server is not None and settings.job_fork_server == "eager":
            server.start()
        _FORK_SERVERS.clear()
        _FORK_SERVERS[pid] = server
    return _FORK_SERVERS[pid]


class Terminated(Exception):
    """The task's process got SIGTERM (revoke with terminate)."""


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise Terminated()


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
    if _beats_elsewhere(svc, job):
        return None
    job = svc.get_any(job.id) or job
    if Phase(job.phase) in FINAL:
        return None
    if job.host == hostname() and process_alive(job.pid, job.pid_start):
        # An orphan of the dead task on this machine: stop it before deciding.
        assert job.pid is not None
        kill_group(job.pid, job.pid_start, settings.job_kill_grace)
    record = read_exit(svc.job_dir(job))
    if record is not None and record.clean:
        log.info("job_finished_while_worker_lost", job_id=job.id)
        svc.finish(job, outcome_of(record))
        return None
    with svc.sessions() as s:
        reruns = s.scalar(
            select(func.count())
            .select_from(JobEvent)
            .where(JobEvent.job_id == job.id, JobEvent.message == RERUN_MESSAGE)
        )
    if (reruns or 0) >= settings.celery.max_reruns:
        svc.finish(job, lost(f"Worker lost during the run {int(reruns or 0) + 1} times; giving up"))
        return None
    if not svc.transition(job.id, Phase.QUEUED, message=RERUN_MESSAGE, expect=[Phase(job.phase)]):
        return None
    return svc.get_any(job.id)


def _beats_elsewhere(svc: JobService, job: JobRecord) -> bool:
    """Whether the job is final, or another live task still beats for it (2.5 heartbeats)."""
    beat = svc.settings.celery.heartbeat
    beat0 = job.last_seen_at
    wait_until = time.time() + 2.5 * beat
    while time.time() < wait_until:
        cur = svc.get_any(job.id)
        if cur is None or Phase(cur.phase) in FINAL:
            return True
        if cur.last_seen_at is not None and cur.last_seen_at != beat0:
            log.info("job_running_elsewhere", job_id=job.id, host=cur.host)
            return True
        time.sleep(min(1.0, beat / 2))
    return False


@dataclass
class _Watch:
    """How the run loop ended."""

    rc: int | None = None
    timed_out: bool = False
    terminated: bool = False
    canceled: bool = False


def _run(svc: JobService, task: Task, job: JobRecord) -> dict[str, Any]:
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
        # Safe: a pool process runs no other threads. The job's limits hold per child: each
        # job process gets them from the wrapper.
        started = launch(
            jdir,
            read_spec(jdir).command,
            job.cores,
            preexec=die_with_parent,
            limits=job_limits(svc.settings),
            extra_env=svc.staging_env(job),
            warm=worker_fork_server(),
        )
    except Exception as exc:
        log.exception("job_launch_failed", job_id=job.id)
        svc.finish(job, Outcome(None, 0.0, message=f"Job failed to start on the worker: {exc}"))
        return {"job_id": job.id, "result": "launch failed"}
    svc.update_fields(job.id, pid=started.pid, pid_start=started.start_ticks, last_seen_at=utcnow())
    log.info("job_started", backend="celery", job_id=job.id, pid=started.pid, warm=started.warm)
    watch = _watch(svc, job, started)
    if watch.rc is None:
        kill_group(started.pid, started.start_ticks, svc.settings.job_kill_grace)
        with contextlib.suppress(subprocess.TimeoutExpired):
            watch.rc = started.proc.wait(timeout=5)
    reap_group(started.pid)  # leave nothing of the job behind
    outcome = outcome_of(
        read_exit(jdir),
        exit_code=watch.rc,
        elapsed=time.time() - started.started,
        timed_out=watch.timed_out,
    )
    if watch.terminated or watch.canceled:
        fields: dict[str, Any] = {"exit_code": outcome.exit_code, "elapsed": outcome.elapsed}
        if not svc.transition(
            job.id, Phase.ABORTED, Reason.CANCELED, "Job terminated on the worker", **fields
        ):
            svc.update_fields(job.id, **fields)
        return {"job_id": job.id, "result": "terminated", "exit_code": outcome.exit_code}
    if watch.timed_out:
        log.warning("job_timeout", backend="celery", job_id=job.id, limit=job.time_limit)
    svc.finish(job, outcome)
    return {
        "job_id": job.id,
        "result": "ended",
        "exit_code": outcome.exit_code,
        "timed_out": watch.timed_out,
    }


def _watch(svc: JobService, job: JobRecord, started: Launched) -> _Watch:
    """Wait for the job, beating, watching for a cancel and the time limit."""
    heartbeat = svc.settings.celery.heartbeat
    deadline = started.started + job.time_limit
    next_beat = started.started + heartbeat
    watch = _Watch()
    old = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        while True:
            try:
                watch.rc = started.proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.time()
            if now >= next_beat:
                next_beat = now + heartbeat
                cur = svc.get_any(job.id)
                if cur is None or cur.phase == Phase.ABORTED.value:
                    watch.canceled = True
                    break
                svc.update_fields(job.id, last_seen_at=utcnow())
            if now >= deadline:
                watch.timed_out = True
                break
    except SoftTimeLimitExceeded:
        watch.timed_out = True
    except Terminated:
        watch.terminated = True
    finally:
        signal.signal(signal.SIGTERM, old)
    return watch
