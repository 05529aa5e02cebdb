"""The store side of the v1.0 job list: keyset reads of one owner's jobs in creation order.

Jobs are ordered by ``(created_at, id)`` (the id breaks ties between jobs created in the same
microsecond), which the index ``ix_jobs_owner_created_id`` (migration 0004) serves directly:
a page is one index range scan, ``WHERE owner = ? AND (created_at, id) > (?, ?) ORDER BY
created_at, id LIMIT n``, whatever its position in the list (``OFFSET`` reads and throws away
every row before the page). The full legacy list is read the same way, a batch at a time.

On the SQLite default the statements run on the status route's plain ``sqlite3`` connections
(:class:`~caesar_rest.db.fastread.SQLiteReader`) and the rows come back as stored: dates as
SQLAlchemy's SQLite text, JSON columns as their JSON text, which the renderer
(:mod:`caesar_rest.jobs.listing`) writes into the answer without decoding them. That is most of
the speed of the 10,000-job list (``docs/benchmarks.md``). Elsewhere (PostgreSQL, an in-memory
SQLite) the rows are SQLAlchemy's and :func:`normalise` turns them into the same form.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Label, Select, bindparam, literal_column, tuple_
from sqlalchemy import select as sa_select

from caesar_rest.db.fastread import EngineReader, SQLiteReader
from caesar_rest.db.models import JobRecord
from caesar_rest.timeutil import iso

#: Columns of a v1.0 job document, in :class:`ListRow` order.
LIST_COLUMNS = (
    JobRecord.id,
    JobRecord.created_at,
    JobRecord.app,
    JobRecord.job_inputs,
    JobRecord.input_file_id,
    JobRecord.tag,
    JobRecord.backend,
    JobRecord.phase,
    JobRecord.reason,
    JobRecord.message,
    JobRecord.pid,
    JobRecord.backend_job_id,
    JobRecord.elapsed,
    JobRecord.exit_code,
)


class ListRow(NamedTuple):
    """The fields of one job of the list, in the form the renderer writes.

    The store returns plain tuples in this order (a named tuple a row costs as much as the
    rendering of the row); this class names the fields. ``submit_date`` is ISO 8601 with its
    offset (``timeutil.iso``); ``job_inputs`` and ``tag`` are JSON text.
    """

    id: str
    submit_date: str
    app: str
    job_inputs: str
    input_file_id: str | None
    tag: str
    backend: str
    phase: str
    reason: str | None
    message: str
    pid: int | None
    backend_job_id: str | None
    elapsed: float | None
    exit_code: int | None


@dataclass(frozen=True)
class ListKey:
    """A position in the list: the creation time and id of a job (the cursor's content)."""

    created: datetime
    id: str


#: ``timeutil.iso`` of SQLAlchemy's SQLite ``DateTime`` text (``2025-01-01 00:00:00.000000``
#: to ``2025-01-01T00:00:00+00:00``, microseconds only when not zero), computed by SQLite.
_SQLITE_ISO: Label[str] = literal_column(
    "substr(jobs.created_at, 1, 10) || 'T' || substr(jobs.created_at, 12, 8) || "
    "CASE WHEN substr(jobs.created_at, 21, 6) = '000000' THEN '' "
    "ELSE substr(jobs.created_at, 20, 7) END || '+00:00'"
).label("submit_date")


def _statement(descending: bool, keyed: bool, sqlite_text: bool = False) -> Select[Any]:
    """A page of one owner's jobs, with ``owner``, ``n``, ``o`` and (keyed) ``c``/``i`` bound.

    The offset is always a parameter: SQLite's dialect writes an ``OFFSET`` beside every
    bound ``LIMIT``. With ``sqlite_text`` the creation time is selected as the ISO text the
    answer shows (for the plain ``sqlite3`` reads).
    """
    cols: list[Any] = list(LIST_COLUMNS)
    if sqlite_text:
        cols[1] = _SQLITE_ISO
    stmt = sa_select(*cols).where(JobRecord.owner == bindparam("owner"))
    key = tuple_(JobRecord.created_at, JobRecord.id)
    at = tuple_(bindparam("c", type_=JobRecord.created_at.type), bindparam("i"))
    if keyed:
        stmt = stmt.where(key < at if descending else key > at)
    if descending:
        stmt = stmt.order_by(JobRecord.created_at.desc(), JobRecord.id.desc())
    else:
        stmt = stmt.order_by(JobRecord.created_at, JobRecord.id)
    return stmt.limit(bindparam("n")).offset(bindparam("o"))


#: The statements, built once (the SQLite reader keys its compiled form on their identity).
_STATEMENTS = {
    (desc, keyed, text): _statement(desc, keyed, text)
    for desc in (False, True)
    for keyed in (False, True)
    for text in (False, True)
}


def _sqlite_text(dt: datetime) -> str:
    """A UTC instant as SQLAlchemy stores ``DateTime`` in SQLite (the bound value of a key)."""
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt.strftime("%Y-%m-%d %H:%M:%S.%f")


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def normalise(row: Any) -> tuple[Any, ...]:
    """A row of SQLAlchemy values (datetimes, decoded JSON) in :class:`ListRow` order."""
    return (
        row.id,
        iso(row.created_at),
        row.app,
        _json_text(row.job_inputs),
        row.input_file_id,
        _json_text(row.tag),
        row.backend,
        row.phase,
        row.reason,
        row.message,
        row.pid,
        row.backend_job_id,
        row.elapsed,
        row.exit_code,
    )


class JobListStore:
    """Keyset reads of the v1.0 job list.

    Parameters
    ----------
    reader
        The service's reader (``db/fastread.make_reader``): a :class:`SQLiteReader` reads the
        stored values directly, an :class:`EngineReader` through SQLAlchemy.
    """

    def __init__(self, reader: SQLiteReader | EngineReader):
        self.reader = reader
        self.raw = isinstance(reader, SQLiteReader)
        #: Reads are short enough for the event loop (the SQLite reader's).
        self.inline = reader.inline

    def version(self) -> tuple[int, int] | None:
        """A marker that changes with any committed change to the database, or None where
        there is none to read cheaply (a database server: answers are not cached there).

        See :meth:`~caesar_rest.db.fastread.SQLiteReader.version`.
        """
        if self.raw:
            assert isinstance(self.reader, SQLiteReader)
            return self.reader.version()
        return None

    def page(
        self,
        owner: str,
        limit: int,
        after: ListKey | None = None,
        descending: bool = False,
        offset: int = 0,
    ) -> list[tuple[Any, ...]]:
        """Up to ``limit`` of ``owner``'s jobs after ``after`` in the order asked for.

        Rows are tuples in :class:`ListRow` order. On a SQLite file they are read with the
        creation time as the answer's text and JSON columns as stored; NULL JSON is ``None``.

        Parameters
        ----------
        owner
            Whose jobs.
        limit
            At most this many rows.
        after
            Only jobs strictly after this position (before it when ``descending``); None:
            from the start of the order.
        descending
            Newest first.
        offset
            Skip this many rows first.
        """
        stmt = _STATEMENTS[(descending, after is not None, self.raw)]
        params: dict[str, Any] = {"owner": owner, "n": limit, "o": offset}
        if after is not None:
            params["i"] = after.id
            params["c"] = _sqlite_text(after.created) if self.raw else after.created
        if self.raw:
            assert isinstance(self.reader, SQLiteReader)
            return self.reader.raw(stmt, params)
        return [normalise(r) for r in self.reader.all(stmt, params)]
