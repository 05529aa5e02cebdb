"""The one job state machine.

Phases are the IVOA UWS 1.1 ones. Every change of phase goes through
:func:`caesar_rest.jobs.service.JobService.transition`, which checks it against
:data:`TRANSITIONS`. The v1.0 API shows the predecessor's vocabulary, derived from the phase and
the end reason by :func:`legacy_state`.
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """UWS 1.1 execution phases."""

    PENDING = "PENDING"
    QUEUED = "QUEUED"
    EXECUTING = "EXECUTING"
    COMPLETED = "COMPLETED"
    ERROR = "ERROR"
    ABORTED = "ABORTED"
    UNKNOWN = "UNKNOWN"
    HELD = "HELD"
    SUSPENDED = "SUSPENDED"
    ARCHIVED = "ARCHIVED"


class Reason(StrEnum):
    """Why a job reached a final phase (kept beside the phase)."""

    SUCCESS = "success"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELED = "canceled"
    LOST = "lost"
    REJECTED = "rejected"


FINAL: frozenset[Phase] = frozenset({Phase.COMPLETED, Phase.ERROR, Phase.ABORTED, Phase.ARCHIVED})

#: Allowed phase changes.
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.PENDING: frozenset({Phase.QUEUED, Phase.ABORTED, Phase.ERROR, Phase.HELD}),
    Phase.HELD: frozenset({Phase.QUEUED, Phase.ABORTED, Phase.ERROR}),
    Phase.QUEUED: frozenset(
        {Phase.EXECUTING, Phase.ABORTED, Phase.ERROR, Phase.HELD, Phase.UNKNOWN, Phase.COMPLETED}
    ),
    Phase.EXECUTING: frozenset(
        {Phase.COMPLETED, Phase.ERROR, Phase.ABORTED, Phase.SUSPENDED, Phase.UNKNOWN, Phase.QUEUED}
    ),
    Phase.SUSPENDED: frozenset({Phase.EXECUTING, Phase.ABORTED, Phase.ERROR, Phase.UNKNOWN}),
    Phase.UNKNOWN: frozenset(
        {Phase.QUEUED, Phase.EXECUTING, Phase.COMPLETED, Phase.ERROR, Phase.ABORTED}
    ),
    Phase.COMPLETED: frozenset({Phase.ARCHIVED}),
    Phase.ERROR: frozenset({Phase.ARCHIVED}),
    Phase.ABORTED: frozenset({Phase.ARCHIVED}),
    Phase.ARCHIVED: frozenset(),
}


class TransitionError(ValueError):
    """A phase change that the state machine does not allow."""


def check_transition(current: Phase, new: Phase) -> None:
    """Raise :class:`TransitionError` unless ``current -> new`` is allowed."""
    if new not in TRANSITIONS[current]:
        raise TransitionError(f"job cannot go from {current} to {new}")


def legacy_state(phase: Phase | str, reason: Reason | str | None) -> str:
    """The predecessor's state name for a phase and end reason."""
    phase = Phase(phase)
    if phase in (Phase.PENDING, Phase.QUEUED, Phase.HELD):
        return "PENDING"
    if phase in (Phase.EXECUTING, Phase.SUSPENDED):
        return "RUNNING"
    if phase == Phase.COMPLETED:
        return "SUCCESS"
    if phase == Phase.ERROR:
        return "TIMED-OUT" if reason == Reason.TIMEOUT else "FAILURE"
    if phase == Phase.ABORTED:
        return "CANCELED" if reason == Reason.CANCELED else "ABORTED"
    return "UNKNOWN"


#: Legacy states whose outputs are "not yet available" (answered with 202).
LEGACY_UNFINISHED = frozenset({"PENDING", "STARTED", "RUNNING"})
