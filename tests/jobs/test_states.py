"""The job state machine and the legacy vocabulary."""

from __future__ import annotations

import pytest

from caesar_rest.jobs.states import (
    FINAL,
    TRANSITIONS,
    Phase,
    Reason,
    TransitionError,
    check_transition,
    legacy_state,
)


def test_final_phases_only_archive() -> None:
    for phase in FINAL:
        assert TRANSITIONS[phase] <= {Phase.ARCHIVED}


@pytest.mark.parametrize(
    ("cur", "new"),
    [
        (Phase.PENDING, Phase.QUEUED),
        (Phase.QUEUED, Phase.EXECUTING),
        (Phase.EXECUTING, Phase.COMPLETED),
        (Phase.EXECUTING, Phase.ERROR),
        (Phase.EXECUTING, Phase.ABORTED),
        (Phase.QUEUED, Phase.ABORTED),
    ],
)
def test_allowed(cur: Phase, new: Phase) -> None:
    check_transition(cur, new)


@pytest.mark.parametrize(
    ("cur", "new"),
    [
        (Phase.COMPLETED, Phase.EXECUTING),
        (Phase.ABORTED, Phase.ERROR),
        (Phase.ERROR, Phase.COMPLETED),
        (Phase.PENDING, Phase.COMPLETED),
        (Phase.PENDING, Phase.EXECUTING),
    ],
)
def test_refused(cur: Phase, new: Phase) -> None:
    with pytest.raises(TransitionError):
        check_transition(cur, new)


@pytest.mark.parametrize(
    ("phase", "reason", "legacy"),
    [
        (Phase.PENDING, None, "PENDING"),
        (Phase.QUEUED, None, "PENDING"),
        (Phase.EXECUTING, None, "RUNNING"),
        (Phase.COMPLETED, Reason.SUCCESS, "SUCCESS"),
        (Phase.ERROR, Reason.FAILED, "FAILURE"),
        (Phase.ERROR, Reason.LOST, "FAILURE"),
        (Phase.ERROR, Reason.TIMEOUT, "TIMED-OUT"),
        (Phase.ABORTED, Reason.CANCELED, "CANCELED"),
        (Phase.ABORTED, None, "ABORTED"),
        (Phase.UNKNOWN, None, "UNKNOWN"),
    ],
)
def test_legacy_state(phase: Phase, reason: Reason | None, legacy: str) -> None:
    assert legacy_state(phase, reason) == legacy
    assert legacy_state(phase.value, reason.value if reason else None) == legacy
