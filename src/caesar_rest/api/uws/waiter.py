"""Blocking ``WAIT`` for UWS jobs without a tight database loop.

Two sources wake a waiting request:

* **In-process notification.** :class:`PhaseWatcher` registers a listener on
  :attr:`JobService.listeners`; every committed phase change made by this process (the local
  runner, a cancel, a run request) wakes the requests waiting on that job at once, through
  ``loop.call_soon_threadsafe``.
* **A shared, modest re-check** for changes made by other processes (other API workers, remote
  backends' monitors): while anyone waits, one thread per process reads the phases of all
  waited-on jobs in a single query every ``uws_wait_recheck`` seconds (0.25 s by default) and
  wakes the requests whose job changed phase or vanished. With nobody waiting it stops.

So the cost is one indexed query per interval per process, however many clients wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field

from caesar_rest.jobs import queries
from caesar_rest.jobs.service import JobService
from caesar_rest.jobs.states import Phase
from caesar_rest.logconfig import get_logger

log = get_logger(__name__)


@dataclass(eq=False)
class Waiter:
    """One request waiting for a change of one job."""

    job_id: str
    loop: asyncio.AbstractEventLoop
    event: asyncio.Event = field(default_factory=asyncio.Event)
    #: The phase the request saw; None until it has looked.
    baseline: str | None = None

    def fire(self) -> None:
        """Wake the request (callable from any thread)."""
        with contextlib.suppress(RuntimeError):  # the loop is closing: nobody to wake
            self.loop.call_soon_threadsafe(self.event.set)


class PhaseWatcher:
    """Wakes waiting requests when a job's phase changes.

    Parameters
    ----------
    jobs
        The job service whose transitions are followed.
    recheck
        Seconds between database re-checks while somebody waits.
    """

    def __init__(self, jobs: JobService, recheck: float):
        self.jobs = jobs
        self.recheck = recheck
        self._lock = threading.Lock()
        self._waiters: dict[str, set[Waiter]] = {}
        self._thread: threading.Thread | None = None
        jobs.listeners.append(self._on_transition)

    # --- registration --------------------------------------------------------------------
    def register(self, job_id: str) -> Waiter:
        """Start following ``job_id`` for the calling coroutine (register before reading)."""
        waiter = Waiter(job_id, asyncio.get_running_loop())
        with self._lock:
            self._waiters.setdefault(job_id, set()).add(waiter)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._poll, name="uws-wait-recheck", daemon=True
                )
                self._thread.start()
        return waiter

    def unregister(self, waiter: Waiter) -> None:
        """Stop following (always call, e.g. in ``finally``)."""
        with self._lock:
            waiters = self._waiters.get(waiter.job_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[waiter.job_id]

    def waiting(self) -> int:
        """How many requests wait now."""
        with self._lock:
            return sum(len(w) for w in self._waiters.values())

    # --- wake-ups ------------------------------------------------------------------------
    def notify(self, job_id: str) -> None:
        """Wake every request waiting on ``job_id`` (e.g. after the job was deleted)."""
        with self._lock:
            waiters = list(self._waiters.get(job_id, ()))
        for w in waiters:
            w.fire()

    def _on_transition(self, job_id: str, _phase: Phase) -> None:
        self.notify(job_id)

    def _poll(self) -> None:
        """Re-read the phases of waited-on jobs until nobody waits."""
        while True:
            with self._lock:
                if not self._waiters:
                    self._thread = None
                    return
                ids = list(self._waiters)
            try:
                phases = queries.phases(self.jobs.sessions, ids)
                with self._lock:
                    stale = [
                        w
                        for jid in ids
                        for w in self._waiters.get(jid, ())
                        if w.baseline is not None and phases.get(jid) != w.baseline
                    ]
                for w in stale:
                    w.fire()
            except Exception:  # the database may be briefly away; the wait still times out
                log.exception("uws_wait_recheck_failed")
            time.sleep(self.recheck)


_ATTR = "_uws_phase_watcher"
_watchers_lock = threading.Lock()


def watcher_for(jobs: JobService, recheck: float) -> PhaseWatcher:
    """The watcher of ``jobs`` (made on first use; it lives as long as the job service)."""
    with _watchers_lock:
        watcher: PhaseWatcher | None = getattr(jobs, _ATTR, None)
        if watcher is None:
            watcher = PhaseWatcher(jobs, recheck)
            setattr(jobs, _ATTR, watcher)
        return watcher


async def wait_for_change(waiter: Waiter, timeout: float) -> bool:
    """Wait until ``waiter`` fires or ``timeout`` seconds pass; True when it fired."""
    try:
        await asyncio.wait_for(waiter.event.wait(), timeout)
    except TimeoutError:
        return False
    return True
