"""The interface every job backend implements (the concrete ones live in ``caesar_rest.backends``).

The job service holds its backends by name and calls them through this protocol only, so
``caesar_rest.jobs`` imports no backend.
"""

from __future__ import annotations

from typing import Protocol

from caesar_rest.db.models import JobRecord


class JobBackend(Protocol):
    """Runs job commands somewhere and maps their states onto the job state machine."""

    name: str

    def start(self) -> None:
        """Start background work (dispatch, supervision); settle jobs left running."""

    def stop(self) -> None:
        """Stop background work and release connections; running jobs go on."""

    def submit(self, job: JobRecord) -> None:
        """Accept a PENDING job for execution (moves it to QUEUED)."""

    def cancel(self, job: JobRecord) -> bool:
        """Stop a job (ABORTED); False when it had already ended."""

    def wait_stopped(self, job: JobRecord) -> None:
        """After :meth:`cancel`: wait (briefly) until the job no longer writes its folder."""

    def reconcile(self, wait: float = 0.0) -> None:
        """One pass bringing this backend's non-final jobs in line with reality.

        Called by the monitor (and by a backend's own poll thread). Skipped when another
        process is doing a pass and has not finished within ``wait`` seconds.
        """
