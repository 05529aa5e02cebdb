"""The local backend: each job is its own process group on this machine.

A dispatcher thread claims QUEUED jobs from the database (atomically, so several API worker
processes can share one queue) while fewer than ``max_concurrent_jobs`` execute, and starts each
as ``python -m caesar_rest.backends.wrapper -- <app command>`` in its job folder, in a new
session (a job that :meth:`LocalBackend.submit` claims while the fork server serves is
started by the submitting thread itself, without the hand-over). A supervisor thread per job
enforces the time limit (SIGTERM, then SIGKILL to the whole group: TIMED-OUT) and records the
exit code and elapsed time. Cancel kills the process group.
After a restart, jobs left EXECUTING are adopted when their process still runs (checked by pid
and process start time, so a reused pid is never mistaken), finished from ``exit.json`` when the
wrapper recorded an outcome, and otherwise marked ERROR (lost); a job claimed but not yet given
a pid is left to the API process launching it (several share the queue), and settled only once
its record has not moved for ``monitor_lost_after`` seconds. The pid is recorded only while the
job is EXECUTING: one canceled while it was being launched is stopped. Processes are started and
stopped through :mod:`caesar_rest.backends.process`, like the Celery worker's: warm, from this
process's fork server (:mod:`caesar_rest.backends.forkserver`, started with the runner or the
first job: ``job_fork_server``), unless ``job_fork_server`` is off or the server is
unavailable. Jobs of the fork server do not die with it or with this process: each records its
own end (``exit.json``) in its own session, and the next service process adopts them as cold
ones.

:meth:`LocalBackend.reconcile` is the monitor's pass: it settles only jobs of this machine whose
process is gone and whose record has not moved for ``monitor_lost_after`` seconds.

State writes that must not be lost (a job's pid, its final state) are tried again, with a
growing pause, while the database is locked or out of reach
(:func:`caesar_rest.db.engine.retry_until_done`): a supervisor keeps its job until the final
state lands. Each dispatcher pass also settles this machine's EXECUTING jobs that no supervisor
here watches and whose process has ended (for a few poll intervals: another API process may be
recording it): finished from ``exit.json``, or ERROR (lost) without one; and it queues PENDING
jobs whose hand-over to the queue failed. So no job stays EXECUTING after its process ended.
"""

from __future__ import annotations

import threading
import time
from subprocess import TimeoutExpired

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from caesar_rest.backends.process import (
    JobProcess,
    fork_server,
    hostname,
    job_limits,
    kill_group,
    launch,
    process_alive,
    reap_group,
)
from caesar_rest.db.engine import is_transient, retry_until_done, write_first
from caesar_rest.db.locks import claim_lock, pass_lock
from caesar_rest.db.models import JobRecord
from caesar_rest.jobs.folder import Outcome, lost, outcome_of, read_exit, read_spec
from caesar_rest.jobs.service import JobService
from caesar_rest.jobs.states import Phase, Reason
from caesar_rest.logconfig import get_logger
from caesar_rest.timeutil import seconds_ago, timestamp

log = get_logger(__name__)


class LocalBackend:
    """Runs jobs as local processes.

    It has no settings section of its own: it reads the core job settings (concurrency, poll
    interval, kill grace, lost bound) of the service's :class:`~caesar_rest.settings.Settings`.
    """

    name = "local"

    def __init__(self, service: JobService):
        self.service = service
        self.settings = service.settings
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._supervised: set[str] = set()
        self._lock = threading.Lock()
        #: When (monotonic) the sweep first saw an unsupervised job's process ended.
        self._ended_since: dict[str, float] = {}
        #: Where jobs start warm (None: the setting is off); started with the first job.
        self.fork_server = fork_server(self.settings, die_with_launcher=False)
        #: Jobs claimed by :meth:`submit` for the dispatcher to launch (under its lock).
        self._claimed: list[JobRecord] = []
        self._claimed_lock = threading.Lock()

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Adopt or settle jobs an earlier process left, then start the dispatcher thread
        (and the fork server, when it starts eagerly and local is the default backend)."""
        eager = self.settings.job_fork_server == "eager"
        if self.fork_server is not None and eager and self.settings.job_scheduler == self.name:
            self.fork_server.start()
        self.adopt()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="local-dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop dispatching; running jobs go on and are adopted at the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.fork_server is not None:
            self.fork_server.close()

    # --- interface -----------------------------------------------------------------------
    def submit(self, job: JobRecord) -> None:
        """Queue the job and wake the dispatcher.

        While the dispatcher runs, the job is claimed in the same transaction when a slot is
        free (the oldest queued job is, as the dispatcher would): one commit takes it from
        PENDING through QUEUED to EXECUTING, both changes recorded as events. When the fork
        server can take it at once, the claimed job is launched here, in the caller's thread
        (an idle job's start then waits for no hand-over to the dispatcher thread); otherwise
        (a cold start, a fork server still starting) the dispatcher launches it.
        """
        claimed = None
        with self._claimed_lock:
            if self._thread is not None and not self._stop.is_set() and self._may_have_slot():
                claimed = self._queue_and_claim(job.id)
                if claimed is not None:
                    self._claimed.append(claimed)
            else:
                self.service.transition(
                    job.id, Phase.QUEUED, message="Job queued", expect=[Phase.PENDING, Phase.HELD]
                )
        if claimed is not None and self._launches_here() and self._take_claimed(claimed):
            try:
                self._launch(claimed)
            except Exception:  # as in a dispatcher pass: the sweep settles what is left
                log.exception("dispatcher_error", job_id=claimed.id)
        self._wake.set()

    def _launches_here(self) -> bool:
        """Whether a claimed job may be launched in the submitting thread: only warm, from a
        fork server that serves now (a launch there takes a few milliseconds)."""
        return self.fork_server is not None and self.fork_server.serving()

    def _take_claimed(self, job: JobRecord) -> bool:
        """Take ``job`` from the claimed list to launch it; False when the dispatcher has
        taken it already (it launches it)."""
        with self._claimed_lock:
            if job in self._claimed:
                self._claimed.remove(job)
                return True
            return False

    def _may_have_slot(self) -> bool:
        """Whether a slot may be free: not while this process's own jobs fill them (a burst
        of submits then only queues, without counting in the database each time)."""
        with self._lock:
            mine = len(self._supervised)
        return mine + len(self._claimed) < self.settings.max_concurrent_jobs

    def _queue_and_claim(self, job_id: str) -> JobRecord | None:
        """Queue ``job_id`` and claim the oldest queued job within the limit, in one
        transaction; the claimed job (None when no slot is free)."""
        svc = self.service
        with svc.sessions() as s, s.begin():
            claim_lock(write_first(s))
            queued = svc.apply_transition(
                s, job_id, Phase.QUEUED, message="Job queued", expect=[Phase.PENDING, Phase.HELD]
            )
            claimed = self._claim_in(s) if queued is not None else None
        if queued is not None:
            svc.announce(job_id, queued, Phase.QUEUED, None)
        job, prev = claimed if claimed is not None else (None, None)
        if job is None or prev is None:
            return None  # no slot (or a race): the dispatcher's pass claims
        svc.announce(job.id, prev, Phase.EXECUTING, None)
        return job

    def cancel(self, job: JobRecord) -> bool:
        """Abort a queued job, or kill the process group of an executing one."""
        ok = self.service.transition(job.id, Phase.ABORTED, Reason.CANCELED, "Job canceled by user")
        if not ok:
            return False
        fresh = self.service.get_any(job.id)
        if fresh is not None and fresh.pid:
            kill_group(fresh.pid, fresh.pid_start, self.settings.job_kill_grace, wait=False)
        return True

    def wait_stopped(self, job: JobRecord) -> None:
        """Wait (at most the kill grace and 2 s) for a canceled job's process to end."""
        fresh = self.service.get_any(job.id)
        if fresh is None or not fresh.pid or fresh.host not in (None, hostname()):
            return
        deadline = time.monotonic() + self.settings.job_kill_grace + 2.0
        while process_alive(fresh.pid, fresh.pid_start) and time.monotonic() < deadline:
            time.sleep(0.05)

    def _open_jobs(self) -> list[JobRecord]:
        """This backend's jobs that are EXECUTING or PENDING (on any machine).

        Returns
        -------
        list of JobRecord
            The jobs, detached from their session.
        """
        with self.service.sessions() as s:
            return list(
                s.scalars(
                    select(JobRecord).where(
                        JobRecord.backend == self.name,
                        JobRecord.phase.in_([Phase.EXECUTING.value, Phase.PENDING.value]),
                    )
                )
            )

    def adopt(self) -> None:
        """Settle local jobs left EXECUTING or PENDING by an earlier service process.

        A job whose process still runs (same pid and start time) gets a supervisor again; one
        whose process is gone is finished from ``exit.json``, or marked lost. A job without a
        pid is being launched (by a sibling API process that started first and waits for its
        fork server, say) unless its record has not moved for ``monitor_lost_after`` seconds:
        it is left alone until then.
        """
        jobs = self._open_jobs()
        me = hostname()
        for job in jobs:
            if job.phase == Phase.PENDING.value:
                if job.run_requested:
                    self.submit(job)
                continue
            if job.id in self._supervised or job.host not in (None, me):
                continue  # supervised here already, or another machine's local runner owns it
            if not job.pid and not self._stale(job):
                continue  # claimed and being launched, perhaps by a sibling API process
            if process_alive(job.pid, job.pid_start):
                log.info("job_adopted", job_id=job.id, pid=job.pid)
                self._spawn_supervisor(job, None)
                continue
            self._finish_vanished(
                job, "Job process vanished (service restart or machine failure); outcome unknown"
            )

    def reconcile(self, wait: float = 0.0) -> None:
        """The monitor's pass: settle this machine's jobs whose process and service are gone.

        Local jobs are the business of the API process that runs them; only a job whose
        process has ended and whose record has not moved for ``monitor_lost_after`` seconds
        (its API process died too) is settled here.
        """
        with pass_lock(self.service.engine, self.name, wait) as got:
            if not got:
                return
            with self.service.sessions() as s:
                jobs = list(
                    s.scalars(
                        select(JobRecord).where(
                            JobRecord.backend == self.name,
                            JobRecord.phase == Phase.EXECUTING.value,
                            JobRecord.host == hostname(),
                        )
                    )
                )
            for job in jobs:
                if not self._stale(job):
                    continue
                if process_alive(job.pid, job.pid_start):
                    continue
                self._finish_vanished(
                    job,
                    "Job process vanished and its service did not settle it; outcome unknown",
                )

    # --- dispatcher ----------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            self._passes()
        finally:
            # Jobs submit claimed are EXECUTING already: start them, even when stopping.
            with self._claimed_lock:
                claimed, self._claimed = self._claimed, []
            for job in claimed:
                self._launch(job)

    def _passes(self) -> None:
        swept = 0.0
        while not self._stop.is_set():
            # A wake-up (a submit, a free slot) dispatches at once; the sweep, a look at every
            # running job, waits for its interval: it is not on a job's way to its start.
            steps = [self._dispatch]
            if time.monotonic() - swept >= self.settings.job_poll_interval:
                steps.append(self._sweep)
                swept = time.monotonic()
            for step in steps:
                try:
                    step()
                except Exception as exc:
                    if not is_transient(exc):
                        log.exception("dispatcher_error")
                    else:  # the database is locked or down: the next pass tries again
                        log.warning("dispatcher_db_busy", error=str(exc))
            self._wake.wait(self.settings.job_poll_interval)
            self._wake.clear()

    def _dispatch(self) -> None:
        """Claim and start queued jobs while there is a free slot."""
        while not self._stop.is_set():
            job = self._next_claimed() or self._claim()
            if job is None:
                break
            self._launch(job)

    def _next_claimed(self) -> JobRecord | None:
        """The oldest job :meth:`submit` claimed and nobody launched yet."""
        with self._claimed_lock:
            return self._claimed.pop(0) if self._claimed else None

    def _stale(self, job: JobRecord) -> bool:
        """Whether the job's record has not moved for ``monitor_lost_after`` seconds."""
        return seconds_ago(job.updated_at) >= self.settings.monitor_lost_after

    @property
    def _settle_grace(self) -> float:
        """Seconds an ended job may wait for another process's supervisor to record it."""
        return max(2.0, 3 * self.settings.job_poll_interval)

    def _sweep(self) -> None:
        """Settle this machine's unwatched jobs whose process ended; queue stranded ones.

        A job EXECUTING here with no supervisor in this process belongs to another API
        process (which records its end itself), or to a supervisor that could not: once its
        process has been seen ended for :attr:`_settle_grace` seconds, it is finished from
        ``exit.json`` (ERROR, lost, without one). A job claimed but never given a pid is
        settled (lost) once its record has not moved for ``monitor_lost_after`` seconds. A
        PENDING job to run whose hand-over to the queue failed (the database was busy) is
        queued.
        """
        me = hostname()
        jobs = self._open_jobs()
        now = time.monotonic()
        seen: set[str] = set()
        for job in jobs:
            if job.phase == Phase.PENDING.value:
                if job.run_requested and seconds_ago(job.created_at) >= self._settle_grace:
                    self.submit(job)
                continue
            with self._lock:
                watched = job.id in self._supervised
            if watched or job.host != me:
                continue
            if not job.pid:
                if self._stale(job):  # claimed, never given a pid, its launcher gone
                    self._finish_vanished(job, "Job process never started; outcome unknown")
                continue
            if process_alive(job.pid, job.pid_start):
                continue
            seen.add(job.id)
            since = self._ended_since.setdefault(job.id, now)
            if now - since < self._settle_grace:
                continue
            self._finish_vanished(
                job, "Job process ended and no service recorded its outcome; outcome unknown"
            )
        self._ended_since = {k: v for k, v in self._ended_since.items() if k in seen}

    def _claim(self) -> JobRecord | None:
        """Atomically move the oldest QUEUED local job to EXECUTING, within the limit."""
        svc = self.service
        if not self._any_queued():
            return None  # the usual pass of an idle runner: no write lock taken
        with svc.sessions() as s, s.begin():
            # Serialise claims so the concurrency limit holds across processes.
            claim_lock(write_first(s))
            claimed = self._claim_in(s)
        if claimed is None:
            return None
        job, prev = claimed
        if prev is None:
            return self._claim()
        svc.announce(job.id, prev, Phase.EXECUTING, None)
        return job

    def _any_queued(self) -> bool:
        """Whether a job of this backend is QUEUED (a read: it waits for no writer, and a
        submit's transaction waits for no claim of the dispatcher that finds nothing)."""
        with self.service.sessions() as s:
            found = s.scalar(
                select(JobRecord.id)
                .where(JobRecord.backend == self.name, JobRecord.phase == Phase.QUEUED.value)
                .limit(1)
            )
        return found is not None

    def _claim_in(self, s: Session) -> tuple[JobRecord, Phase | None] | None:
        """In the caller's locked transaction: move the oldest QUEUED job to EXECUTING if a
        slot is free. The job (as it is after the change: the record the session holds) and
        its phase before (None when another process changed it first); None: no slot or no
        queued job."""
        mine = JobRecord.backend == self.name
        running = s.scalar(
            select(func.count())
            .select_from(JobRecord)
            .where(mine, JobRecord.phase == Phase.EXECUTING.value)
        )
        if (running or 0) >= self.settings.max_concurrent_jobs:
            return None
        job_id = s.scalar(
            select(JobRecord.id)
            .where(mine, JobRecord.phase == Phase.QUEUED.value)
            .order_by(JobRecord.created_at)
            .limit(1)
        )
        if job_id is None:
            return None
        # In the same locked transaction as the count: another process counts this job as
        # running before it can claim one more.
        prev = self.service.apply_transition(
            s,
            job_id,
            Phase.EXECUTING,
            message="Job starting",
            expect=[Phase.QUEUED],
            host=hostname(),
        )
        job = s.get(JobRecord, job_id)  # loaded by the change (sessions keep it after commit)
        if job is None:
            return None
        return job, prev

    def _launch(self, job: JobRecord) -> None:
        jdir = self.service.job_dir(job)
        try:
            started = launch(
                jdir,
                read_spec(jdir).command,
                job.cores,
                limits=job_limits(self.settings),
                extra_env=self.service.staging_env(job),
                warm=self.fork_server,
            )
        except Exception as exc:
            log.exception("job_launch_failed", job_id=job.id)
            self.service.finish(job, Outcome(None, 0.0, message=f"Job failed to start: {exc}"))
            return
        job.pid, job.pid_start = started.pid, started.start_ticks
        log.info("job_started", job_id=job.id, pid=job.pid, warm=started.warm)
        try:  # at once: a restart can adopt the job only once its pid is recorded
            self._record_pid(job)
            pending = False
        except Exception as exc:
            if not is_transient(exc):
                raise
            # The database is busy: the supervisor records the pid when it can, without
            # holding up the dispatcher, and watches the process from its first moment.
            pending = True
        self._spawn_supervisor(job, started.proc, record_pid=pending, since=started.started)

    def _record_pid(self, job: JobRecord) -> None:
        """Store the started job's pid while it is EXECUTING; a job canceled (or settled)
        while it was being launched is stopped instead (its record keeps the final state)."""
        assert job.pid is not None
        if self.service.update_fields(
            job.id,
            only_in=Phase.EXECUTING,
            pid=job.pid,
            pid_start=job.pid_start,
            message="Job running",
        ):
            return
        log.info("job_ended_while_starting", job_id=job.id, pid=job.pid)
        kill_group(job.pid, job.pid_start, self.settings.job_kill_grace, wait=False)

    # --- supervision ---------------------------------------------------------------------
    def _spawn_supervisor(
        self,
        job: JobRecord,
        proc: JobProcess | None,
        record_pid: bool = False,
        since: float | None = None,
    ) -> None:
        """Watch the job in a thread of its own; ``since``: when its process started (Unix
        time; else the job's start), from which its time limit and elapsed time count."""
        with self._lock:
            self._supervised.add(job.id)
        t = threading.Thread(
            target=self._supervise,
            args=(job, proc, record_pid, since),
            name=f"job-{job.id[:8]}",
            daemon=True,
        )
        t.start()

    def _running(self) -> bool:
        """Whether this backend is still in service (retries stop when it is not)."""
        return not self._stop.is_set()

    def _supervise(
        self, job: JobRecord, proc: JobProcess | None, record_pid: bool, since: float | None
    ) -> None:
        try:
            if record_pid:
                retry_until_done("job pid", lambda: self._record_pid(job), keep_going=self._running)
            self._supervise_inner(job, proc, since)
        except Exception:
            log.exception("supervisor_error", job_id=job.id)
        finally:
            with self._lock:
                self._supervised.discard(job.id)
            self._wake.set()  # a slot is free

    def _supervise_inner(
        self, job: JobRecord, proc: JobProcess | None, since: float | None = None
    ) -> None:
        assert job.pid is not None
        # The time limit counts from the process's start: a launch that waited for a starting
        # fork server's imports does not eat into the job's time.
        started = since or timestamp(job.started_at) or time.time()
        deadline = started + job.time_limit
        timed_out = False
        rc: int | None = None
        while True:
            ended, rc = self._wait(job, proc, deadline - time.time())
            if ended:
                break
            if time.time() >= deadline and not timed_out:
                timed_out = True
                log.warning("job_timeout", job_id=job.id, limit=job.time_limit)
                kill_group(job.pid, job.pid_start, self.settings.job_kill_grace, wait=False)
        reap_group(job.pid)  # leave nothing of the job behind
        record = read_exit(self.service.job_dir(job))
        # Without a record the wrapper itself was killed: its status is the job's.
        outcome = outcome_of(
            record, exit_code=rc, elapsed=time.time() - started, timed_out=timed_out
        )
        # The final state must land: a busy or unreachable database is waited out.
        retry_until_done(
            "job end",
            lambda: self.service.finish(job, outcome),
            longest=1.0,
            keep_going=self._running,
        )

    @staticmethod
    def _wait(job: JobRecord, proc: JobProcess | None, remaining: float) -> tuple[bool, int | None]:
        """Wait a little for the job: whether it ended, and its status when it is our child."""
        if proc is not None:
            try:
                return True, proc.wait(timeout=max(0.0, min(remaining, 5.0)))
            except TimeoutExpired:
                return False, None
        # Adopted after a restart: not our child, poll it.
        if not process_alive(job.pid, job.pid_start):
            return True, None
        time.sleep(min(max(remaining, 0.0), 0.5))
        return False, None

    def _finish_vanished(self, job: JobRecord, why: str) -> None:
        record = read_exit(self.service.job_dir(job))
        if record is not None and record.recorded:
            log.info("job_finished_while_away", job_id=job.id)
            self.service.finish(job, outcome_of(record))
            return
        log.warning("job_lost", backend=self.name, job_id=job.id, pid=job.pid)
        self.service.finish(job, lost(why))
