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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Select, bindparam, tuple_
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
    """One job of the list, in the form the renderer writes.

    ``submit_date`` is ISO 8601 with its offset (``timeutil.iso``); ``job_inputs`` and ``tag``
    are JSON text.
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


def _statement(descending: bool, keyed: bool) -> Select[Any]:
    """A page of one owner's jobs, with ``owner``, ``n``, ``o`` and (keyed) ``c``/``i`` bound.

    The offset is always a parameter: SQLite's dialect writes an ``OFFSET`` beside every
    bound ``LIMIT``.
    """
    stmt = sa_select(*LIST_COLUMNS).where(JobRecord.owner == bindparam("owner"))
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
    (desc, keyed): _statement(desc, keyed) for desc in (False, True) for keyed in (False, True)
}


def _sqlite_text(dt: datetime) -> str:
    """A UTC instant as SQLAlchemy stores ``DateTime`` in SQLite (the bound value of a key)."""
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt.strftime("%Y-%m-%d %H:%M:%S.%f")


def sqlite_iso(text: str) -> str:
    """SQLAlchemy's SQLite ``DateTime`` text (``2025-01-01 00:00:00.000000``) as ``timeutil.iso``
    writes the instant (``2025-01-01T00:00:00+00:00``): microseconds only when not zero."""
    if len(text) == 26 and text[10] == " " and text[19] == ".":
        if text.endswith("000000"):
            return f"{text[:10]}T{text[11:19]}+00:00"
        return f"{text[:10]}T{text[11:]}+00:00"
    return iso(datetime.fromisoformat(text))  # another writer's format: parse it


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def normalise(row: Any) -> ListRow:
    """A row of SQLAlchemy values (datetimes, decoded JSON) in :class:`ListRow` form."""
    return ListRow(
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


def _stored(row: tuple[Any, ...]) -> ListRow:
    """A raw ``sqlite3`` row (text dates, JSON text) in :class:`ListRow` form."""
    (jid, created, app, inputs, fid, tag, backend, phase, reason, msg, pid, bjid, el, ex) = row
    return ListRow(
        jid,
        sqlite_iso(created),
        app,
        "null" if inputs is None else inputs,
        fid,
        "null" if tag is None else tag,
        backend,
        phase,
        reason,
        msg,
        pid,
        bjid,
        el,
        ex,
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

    def page(
        self,
        owner: str,
        limit: int,
        after: ListKey | None = None,
        descending: bool = False,
        offset: int = 0,
    ) -> list[ListRow]:
        """Up to ``limit`` of ``owner``'s jobs after ``after`` in the order asked for.

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
        stmt = _STATEMENTS[(descending, after is not None)]
        params: dict[str, Any] = {"owner": owner, "n": limit, "o": offset}
        if after is not None:
            params["i"] = after.id
            params["c"] = _sqlite_text(after.created) if self.raw else after.created
        if self.raw:
            assert isinstance(self.reader, SQLiteReader)
            return [_stored(r) for r in self.reader.raw(stmt, params)]
        convert: Callable[[Any], ListRow] = normalise
        return [convert(r) for r in self.reader.all(stmt, params)]
