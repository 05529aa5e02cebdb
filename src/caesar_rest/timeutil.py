"""Time helpers: everything is UTC, written as ISO-8601 with its offset."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Timezone-aware now (UTC)."""
    return datetime.now(UTC)


def iso(dt: datetime | None) -> str:
    """ISO-8601 with offset, or '' for None. Naive values (SQLite drops the zone) are UTC."""
    if dt is None:
        return ""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.isoformat()


def timestamp(dt: datetime | None) -> float | None:
    """POSIX seconds of ``dt`` (naive values are UTC)."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def as_aware(dt: datetime) -> datetime:
    """SQLite returns naive datetimes; they are UTC."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def seconds_ago(dt: datetime) -> float:
    """Seconds from ``dt`` (naive values are UTC) to now."""
    return (utcnow() - as_aware(dt)).total_seconds()
