"""The interface every job backend implements."""

from __future__ import annotations

from typing import Protocol

from caesar_rest.db.models import JobRecord


class JobBackend(Protocol):
    """Runs job commands somewhere and maps their states onto the job state machine."""

    name: str

    def start(self) -> None:
        """Start background work (dispatch, supervision); reconcile jobs left running."""

    def stop(self) -> None:
        """Stop background work; running jobs go on."""

    def submit(self, job: JobRecord) -> None:
        """Accept a PENDING job for execution (moves it to QUEUED)."""

    def cancel(self, job: JobRecord) -> bool:
        """Stop a job (ABORTED); False when it had already ended."""

    def wait_stopped(self, job: JobRecord) -> None:
        """After :meth:`cancel`: wait (briefly) until the job no longer writes its folder."""

    def reconcile(self) -> None:
        """Bring non-final jobs of this backend in line with reality."""
