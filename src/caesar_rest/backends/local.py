"""The local backend: each job is its own process group on this machine.

A dispatcher thread claims QUEUED jobs from the database (atomically, so several API worker
processes can share one queue) while fewer than ``max_concurrent_jobs`` execute, and starts each
as ``python -m caesar_rest.backends.wrapper -- <app command>`` in its job folder, in a new
session. A supervisor thread per job enforces the time limit (SIGTERM, then SIGKILL to the whole
group: TIMED-OUT) and records the exit code and elapsed time. Cancel kills the process group.
After a restart, jobs left EXECUTING are adopted when their process still runs (checked by pid
and process start time, so a reused pid is never mistaken), finished from ``exit.json`` when the
wrapper recorded an outcome, and otherwise marked ERROR (lost).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import text

from caesar_rest.db.engine import write_first
from caesar_rest.db.models import JobRecord
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
from caesar_rest.jobs.states import Phase, Reason
from caesar_rest.logconfig import get_logger
from caesar_rest.timeutil import timestamp

log = get_logger(__name__)


class LocalBackend:
    """Runs jobs as local processes."""

    name = "local"

    def __init__(self, service: JobService):
        self.service = service
        self.settings = service.settings
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._supervised: set[str] = set()
        self._lock = threading.Lock()

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Reconcile, then start the dispatcher thread."""
        self.reconcile()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="local-dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop dispatching; running jobs go on and are adopted at the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # --- interface -----------------------------------------------------------------------
    def submit(self, job: JobRecord) -> None:
        """Queue the job and wake the dispatcher."""
        self.service.transition(
            job.id, Phase.QUEUED, message="Job queued", expect=[Phase.PENDING, Phase.HELD]
        )
        self._wake.set()

    def cancel(self, job: JobRecord) -> bool:
        """Abort a queued job, or kill the process group of an executing one."""
        ok = self.service.transition(job.id, Phase.ABORTED, Reason.CANCELED, "Job canceled by user")
        if not ok:
            return False
        fresh = self.service.get_any(job.id)
        if fresh is not None and fresh.pid:
            self._kill_group(fresh.pid, fresh.pid_start)
        return True

    def wait_stopped(self, job: JobRecord) -> None:
        """Wait (at most the kill grace and 2 s) for a canceled job's process to end."""
        fresh = self.service.get_any(job.id)
        if fresh is None or not fresh.pid or fresh.host not in (None, hostname()):
            return
        deadline = time.monotonic() + self.settings.job_kill_grace + 2.0
        while process_alive(fresh.pid, fresh.pid_start) and time.monotonic() < deadline:
            time.sleep(0.05)

    def reconcile(self) -> None:
        """Settle local jobs left EXECUTING or PENDING by an earlier service process."""
        with self.service.sessions() as s:
            jobs = list(
                s.query(JobRecord).filter(
                    JobRecord.backend == self.name,
                    JobRecord.phase.in_([Phase.EXECUTING.value, Phase.PENDING.value]),
                )
            )
        me = hostname()
        for job in jobs:
            if job.phase == Phase.PENDING.value:
                if job.run_requested:
                    self.submit(job)
                continue
            if job.id in self._supervised:
                continue
            if job.host not in (None, me):
                continue  # another machine's local runner owns it
            if process_alive(job.pid, job.pid_start):
                log.info("job_adopted", job_id=job.id, pid=job.pid)
                self._spawn_supervisor(job, None)
                continue
            self._finish_vanished(job)

    # --- dispatcher ----------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                while not self._stop.is_set():
                    job = self._claim()
                    if job is None:
                        break
                    self._launch(job)
            except Exception:
                log.exception("dispatcher_error")
            self._wake.wait(self.settings.job_poll_interval)
            self._wake.clear()

    def _claim(self) -> JobRecord | None:
        """Atomically move the oldest QUEUED local job to EXECUTING, within the limit."""
        svc = self.service
        with svc.sessions() as s, s.begin():
            conn = write_first(s)
            if conn.dialect.name == "postgresql":
                # Serialise claims so the concurrency limit holds across processes.
                conn.execute(text("SELECT pg_advisory_xact_lock(7426002)"))
            running = conn.execute(
                text("SELECT count(*) FROM jobs WHERE backend = :b AND phase = 'EXECUTING'"),
                {"b": self.name},
            ).scalar_one()
            if running >= self.settings.max_concurrent_jobs:
                return None
            row = conn.execute(
                text(
                    "SELECT id FROM jobs WHERE backend = :b AND phase = 'QUEUED' "
                    "ORDER BY created_at LIMIT 1"
                ),
                {"b": self.name},
            ).first()
            if row is None:
                return None
            job_id = row[0]
            # In the same locked transaction as the count: another process counts this job
            # as running before it can claim one more.
            prev = svc.apply_transition(
                s,
                job_id,
                Phase.EXECUTING,
                message="Job starting",
                expect=[Phase.QUEUED],
                host=hostname(),
            )
        if prev is None:
            return self._claim()
        svc.announce(job_id, prev, Phase.EXECUTING, None)
        return svc.get_any(job_id)

    def _launch(self, job: JobRecord) -> None:
        jdir = self.service.job_dir(job)
        try:
            spec = json.loads((jdir / SPEC_FILE).read_text())
            argv = [sys.executable, "-m", "caesar_rest.backends.wrapper", "--", *spec["command"]]
            with contextlib.suppress(FileNotFoundError):
                (jdir / EXIT_FILE).unlink()
            with open(jdir / LOG_FILE, "ab") as logf:
                proc = subprocess.Popen(  # noqa: S603 - argument list, no shell
                    argv,
                    cwd=jdir,
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                    env=self._job_env(),
                )
        except Exception as exc:
            log.exception("job_launch_failed", job_id=job.id)
            self.service.finish(job, Outcome(None, 0.0, message=f"Job failed to start: {exc}"))
            return
        start = process_start_ticks(proc.pid)
        self.service.update_fields(job.id, pid=proc.pid, pid_start=start, message="Job running")
        job.pid, job.pid_start = proc.pid, start
        log.info("job_started", job_id=job.id, pid=proc.pid)
        self._spawn_supervisor(job, proc)

    def _job_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAESAR_REST_")}
        env.setdefault("OMP_NUM_THREADS", "1")
        env["MPLBACKEND"] = "Agg"
        return env

    # --- supervision ---------------------------------------------------------------------
    def _spawn_supervisor(self, job: JobRecord, proc: subprocess.Popen[bytes] | None) -> None:
        with self._lock:
            self._supervised.add(job.id)
        t = threading.Thread(
            target=self._supervise, args=(job, proc), name=f"job-{job.id[:8]}", daemon=True
        )
        t.start()

    def _supervise(self, job: JobRecord, proc: subprocess.Popen[bytes] | None) -> None:
        try:
            self._supervise_inner(job, proc)
        except Exception:
            log.exception("supervisor_error", job_id=job.id)
        finally:
            with self._lock:
                self._supervised.discard(job.id)
            self._wake.set()  # a slot is free

    def _supervise_inner(self, job: JobRecord, proc: subprocess.Popen[bytes] | None) -> None:
        started = timestamp(job.started_at) or time.time()
        deadline = started + job.time_limit
        timed_out = False
        rc: int | None = None
        assert job.pid is not None
        while True:
            remaining = deadline - time.time()
            if proc is not None:
                try:
                    rc = proc.wait(timeout=max(0.0, min(remaining, 5.0)))
                    break
                except subprocess.TimeoutExpired:
                    pass
            else:  # adopted after a restart: not our child, poll it
                if not process_alive(job.pid, job.pid_start):
                    break
                time.sleep(min(max(remaining, 0.0), 0.5))
            if time.time() >= deadline and not timed_out:
                timed_out = True
                log.warning("job_timeout", job_id=job.id, limit=job.time_limit)
                self._kill_group(job.pid, job.pid_start)
        # Leave nothing of the job behind (children the app may have spawned).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(job.pid, signal.SIGKILL)
        elapsed = time.time() - started
        exit_info = read_exit_file(self.service.job_dir(job))
        if exit_info is not None and exit_info.get("exit_code") is not None:
            code = int(exit_info["exit_code"])
        elif rc is not None:
            code = rc  # the wrapper itself was killed: its status is the job's
        else:
            code = None
        cpu = exit_info.get("cpu_time") if exit_info else None
        self.service.finish(
            job, Outcome(code, round(elapsed, 3), timed_out=timed_out, cpu_time=cpu)
        )

    def _finish_vanished(self, job: JobRecord) -> None:
        exit_info = read_exit_file(self.service.job_dir(job))
        if exit_info is not None:
            log.info("job_finished_while_away", job_id=job.id)
            self.service.finish(
                job,
                Outcome(
                    int(exit_info["exit_code"]),
                    float(exit_info.get("elapsed", 0.0)),
                    cpu_time=exit_info.get("cpu_time"),
                ),
            )
            return
        log.warning("job_lost", job_id=job.id, pid=job.pid)
        self.service.finish(
            job,
            Outcome(
                None,
                None,
                message="Job process vanished (service restart or machine failure); "
                "outcome unknown",
                reason=Reason.LOST,
            ),
        )

    def _kill_group(self, pid: int, pid_start: int | None) -> None:
        """SIGTERM the job's process group, then SIGKILL after the grace period."""
        if not process_alive(pid, pid_start):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        grace = self.settings.job_kill_grace

        def _later() -> None:
            time.sleep(grace)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

        threading.Thread(target=_later, daemon=True).start()


def job_log_path(job_dir: Path) -> Path:
    """The job's log file."""
    return job_dir / LOG_FILE
