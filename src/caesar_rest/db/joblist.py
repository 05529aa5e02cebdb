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

Where the database keeps row revisions (``jobs.list_rev``, renewed by the triggers of
migration 0005; :func:`revisions_kept`), the lister first reads only ``(id, list_rev)`` of a
page or batch (:meth:`JobListStore.keys`, the keyset index alone, as plain driver tuples)
and reads whole only the jobs it has no document of at that revision
(:meth:`JobListStore.by_id`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Engine, Label, Select, bindparam, func, literal_column, text, tuple_
from sqlalchemy import select as sa_select

from caesar_rest.db.fastread import EngineReader, SQLiteReader
from caesar_rest.db.models import JobRecord
from caesar_rest.db.pgfeed import notifications_sent
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


def _keyset_page(cols: list[Any], descending: bool, keyed: bool) -> Select[Any]:
    """``cols`` of a page of one owner's jobs in (creation time, id) order, with ``owner``,
    ``n``, ``o`` and (keyed) ``c``/``i`` bound."""
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


def _statement(descending: bool, keyed: bool, sqlite_text: bool = False) -> Select[Any]:
    """A page of one owner's jobs, with ``owner``, ``n``, ``o`` and (keyed) ``c``/``i`` bound.

    The offset is always a parameter: SQLite's dialect writes an ``OFFSET`` beside every
    bound ``LIMIT``. With ``sqlite_text`` the creation time is selected as the ISO text the
    answer shows (for the plain ``sqlite3`` reads).
    """
    cols: list[Any] = list(LIST_COLUMNS)
    if sqlite_text:
        cols[1] = _SQLITE_ISO
    return _keyset_page(cols, descending, keyed)


#: The statements, built once (the SQLite reader keys its compiled form on their identity).
_STATEMENTS = {
    (desc, keyed, text): _statement(desc, keyed, text)
    for desc in (False, True)
    for keyed in (False, True)
    for text in (False, True)
}


def _keys_statement(descending: bool, keyed: bool) -> Select[Any]:
    """As :func:`_statement`, but only each job's id and revision (``list_rev``): read from
    the keyset index alone, which carries both (migration 0005)."""
    cols: list[Any] = [JobRecord.id, JobRecord.list_rev]
    return _keyset_page(cols, descending, keyed)


_KEY_STATEMENTS = {
    (desc, keyed): _keys_statement(desc, keyed) for desc in (False, True) for keyed in (False, True)
}


def _by_id_statement(sqlite_text: bool) -> Select[Any]:
    """Whole rows (and revisions) of some of one owner's jobs, by id: ``owner`` and ``ids``
    bound. For the plain ``sqlite3`` reads the ids are one JSON array (``json_each``), so
    that the compiled text serves any number of them; elsewhere an expanding ``IN``."""
    cols: list[Any] = list(LIST_COLUMNS)
    if sqlite_text:
        cols[1] = _SQLITE_ISO
        ids: Any = sa_select(literal_column("value")).select_from(func.json_each(bindparam("ids")))
    else:
        ids = bindparam("ids", expanding=True)
    return sa_select(*cols, JobRecord.list_rev).where(
        JobRecord.owner == bindparam("owner"), JobRecord.id.in_(ids)
    )


_BY_ID_STATEMENTS = {text: _by_id_statement(text) for text in (False, True)}

#: As :data:`_KEY_STATEMENTS`, the ids alone (the lists kept while PostgreSQL's notifications
#: say they hold, ``db/pgfeed``).
_ID_STATEMENTS = {
    (desc, keyed): _keyset_page([JobRecord.id], desc, keyed)
    for desc in (False, True)
    for keyed in (False, True)
}

#: The triggers that renew ``list_rev`` (migration 0005), by dialect.
_TRIGGER_CHECKS = {
    "sqlite": (
        "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'jobs' "
        "AND name IN ('jobs_list_rev_insert', 'jobs_list_rev_update')",
        2,
    ),
    "postgresql": (
        "SELECT count(*) FROM pg_trigger WHERE tgname = 'jobs_list_rev' "
        "AND tgrelid = 'jobs'::regclass AND tgenabled <> 'D'",
        1,
    ),
}


def revisions_kept(engine: Engine) -> bool:
    """Whether the database renews ``list_rev`` on every write (the triggers of migration
    0005 are there): only then may rendered rows be reused by revision."""
    check = _TRIGGER_CHECKS.get(engine.dialect.name)
    if check is None:
        return False
    sql, expected = check
    with engine.connect() as conn:
        return bool(conn.execute(text(sql)).scalar_one() == expected)


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
        #: Whether ``list_rev`` changes with every write (see :func:`revisions_kept`).
        self.revisions = revisions_kept(reader.engine)
        #: Whether PostgreSQL notifies every job change (migration 0006, ``db/pgfeed``).
        self.notifies = self.revisions and notifications_sent(reader.engine)

    def version(self) -> tuple[int, int] | None:
        """A marker that changes with any committed change to the database, or None where
        there is none to read cheaply (a database server: answers are not cached there).

        See :meth:`~caesar_rest.db.fastread.SQLiteReader.version`.
        """
        if self.raw:
            assert isinstance(self.reader, SQLiteReader)
            return self.reader.version()
        return None

    def _params(self, owner: str, limit: int, after: ListKey | None, offset: int) -> dict[str, Any]:
        """The bound parameters of the keyset statements (the position as the reader
        stores it: text on a SQLite file)."""
        params: dict[str, Any] = {"owner": owner, "n": limit, "o": offset}
        if after is not None:
            params["i"] = after.id
            params["c"] = _sqlite_text(after.created) if self.raw else after.created
        return params

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
        params = self._params(owner, limit, after, offset)
        if self.raw:
            assert isinstance(self.reader, SQLiteReader)
            return self.reader.raw(stmt, params)
        return [normalise(r) for r in self.reader.all(stmt, params)]

    def keys(
        self,
        owner: str,
        limit: int,
        after: ListKey | None = None,
        descending: bool = False,
        offset: int = 0,
    ) -> list[tuple[str, int]]:
        """The ids and revisions of the jobs :meth:`page` would read, in the same order.

        Parameters are those of :meth:`page`.
        """
        stmt = _KEY_STATEMENTS[(descending, after is not None)]
        params = self._params(owner, limit, after, offset)
        return self.reader.raw(stmt, params)

    def ids(
        self,
        owner: str,
        limit: int,
        after: ListKey | None = None,
        descending: bool = False,
        offset: int = 0,
    ) -> list[str]:
        """The ids of the jobs :meth:`page` would read, in the same order.

        Parameters are those of :meth:`page`.
        """
        stmt = _ID_STATEMENTS[(descending, after is not None)]
        params = self._params(owner, limit, after, offset)
        return [r[0] for r in self.reader.raw(stmt, params)]

    def by_id(self, owner: str, ids: list[str]) -> list[tuple[tuple[Any, ...], int]]:
        """Those of ``ids`` that are ``owner``'s jobs: each a row in :class:`ListRow` order
        (as :meth:`page` gives it) with the row's revision. In no particular order."""
        if self.raw:
            assert isinstance(self.reader, SQLiteReader)
            rows = self.reader.raw(
                _BY_ID_STATEMENTS[True], {"owner": owner, "ids": _json_text(ids)}
            )
            return [(r[:-1], r[-1]) for r in rows]
        found = self.reader.all(_BY_ID_STATEMENTS[False], {"owner": owner, "ids": ids})
        return [(normalise(r), r.list_rev) for r in found]
