"""Per-user quotas (stored bytes, unfinished jobs, execution time) and submission rate.

Checks that must hold across API processes run inside the transaction that stores the new
record, under a per-user lock (SQLite's write lock, or a PostgreSQL advisory lock), so two
concurrent requests cannot both slip under a limit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from caesar_rest.auth.users import Limits
from caesar_rest.db.engine import write_first
from caesar_rest.db.locks import user_lock
from caesar_rest.db.models import FileRecord, JobRecord
from caesar_rest.errors import Forbidden, QuotaExceeded
from caesar_rest.jobs.states import FINAL
from caesar_rest.timeutil import utcnow

__all__ = [
    "INFLATED_KEY",
    "QuotaExceeded",
    "Usage",
    "check_bytes",
    "check_declared_bytes",
    "check_jobs",
    "lock_user",
    "usage",
    "usage_warnings",
    "warnings",
]


#: Key of a file record's ``info`` holding a compressed file's inflated size (what it counts).
INFLATED_KEY = "inflated_size"


@dataclass(frozen=True)
class Usage:
    """What a user holds now."""

    bytes: int
    active_jobs: int


def lock_user(session: Session, owner: str) -> None:
    """Serialise quota checks of one user (call first in the transaction)."""
    user_lock(write_first(session), owner)


def usage(session: Session, owner: str) -> Usage:
    """Stored bytes and unfinished jobs of ``owner`` (a compressed file counts inflated)."""
    charged = func.coalesce(FileRecord.info[INFLATED_KEY].as_integer(), FileRecord.size)
    nbytes = session.execute(
        select(func.coalesce(func.sum(charged), 0)).where(FileRecord.owner == owner)
    ).scalar_one()
    active = session.execute(
        select(func.count(JobRecord.id)).where(
            JobRecord.owner == owner, JobRecord.phase.not_in([p.value for p in FINAL])
        )
    ).scalar_one()
    return Usage(int(nbytes), int(active))


def check_bytes(session: Session, owner: str, limits: Limits, extra: int) -> None:
    """Refuse (403) when storing ``extra`` more bytes would pass the quota."""
    if limits.bytes <= 0:
        return
    used = usage(session, owner).bytes
    if used + extra > limits.bytes:
        raise QuotaExceeded(
            403,
            f"Storage quota exceeded: {used} of {limits.bytes} bytes used, "
            f"this upload needs {extra} more",
            limit="bytes",
            quota=limits.bytes,
            used=used,
            requested=extra,
        )


def check_declared_bytes(
    limits: Limits,
    used: Callable[[], int],
    needed: int,
    requested: int | None = None,
    *,
    reserved: bool = False,
) -> None:
    """Refuse (403) an upload whose declared size cannot fit in the storage quota, before any
    of it is read: the pre-check of the v1.0 upload and of a tus upload's creation.

    The check at registration (:func:`check_bytes`, under the user's lock) still follows;
    this one only spares the transfer of a body that would be refused anyway.

    Parameters
    ----------
    limits
        The caller's limits; a ``bytes`` quota of 0 or less means none (``used`` is not
        called then).
    used
        The bytes counted against the quota now (stored files; for tus also the caller's
        other unfinished uploads).
    needed
        The bytes the upload will add at least.
    requested
        The size reported in the error body (default: ``needed``).
    reserved
        Whether ``used`` includes reservations of unfinished uploads (said in the message).

    Raises
    ------
    Forbidden
        ``used() + needed`` is over the quota; the body holds ``limit``, ``quota``, ``used``
        and ``requested``.
    """
    if limits.bytes <= 0:
        return
    now = used()
    if now + needed > limits.bytes:
        held = "used or reserved" if reserved else "used"
        raise Forbidden(
            f"Storage quota exceeded: {now} of {limits.bytes} bytes {held}",
            limit="bytes",
            quota=limits.bytes,
            used=now,
            requested=needed if requested is None else requested,
        )


def check_jobs(session: Session, owner: str, limits: Limits, per_minute: int) -> None:
    """Refuse (429) past the unfinished-jobs limit or the submission rate."""
    if limits.active_jobs > 0:
        active = usage(session, owner).active_jobs
        if active >= limits.active_jobs:
            raise QuotaExceeded(
                429,
                f"Too many unfinished jobs: {active} of {limits.active_jobs} allowed; "
                "wait for some to end or cancel them",
                limit="active_jobs",
                quota=limits.active_jobs,
                used=active,
            )
    if per_minute > 0:
        since = utcnow() - timedelta(minutes=1)
        recent = session.execute(
            select(func.count(JobRecord.id)).where(
                JobRecord.owner == owner, JobRecord.created_at >= since
            )
        ).scalar_one()
        if recent >= per_minute:
            raise QuotaExceeded(
                429,
                f"Too many submissions: {recent} in the last minute, {per_minute} allowed",
                limit="submission_rate",
                quota=per_minute,
                used=int(recent),
                retry_after=60,
            )


def warnings(use: Usage, limits: Limits, fraction: float) -> list[str]:
    """Warnings for limits used above ``fraction``."""
    out = []
    if limits.bytes > 0 and use.bytes >= fraction * limits.bytes:
        out.append(
            f"storage {use.bytes / limits.bytes:.0%} of quota used "
            f"({use.bytes} of {limits.bytes} bytes)"
        )
    if limits.active_jobs > 0 and use.active_jobs >= fraction * limits.active_jobs:
        out.append(f"{use.active_jobs} of {limits.active_jobs} unfinished jobs allowed")
    return out


def usage_warnings(
    sessions: sessionmaker[Session], owner: str, limits: Limits, fraction: float
) -> list[str]:
    """:func:`warnings` for what ``owner`` holds now."""
    with sessions() as s:
        use = usage(s, owner)
    return warnings(use, limits, fraction)
