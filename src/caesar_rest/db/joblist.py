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


@dataclass(frozen=True, slots=True)
class ListQuery:
    """Which of one owner's jobs a keyset read asks for: at most ``limit`` jobs, in
    (creation time, id) order (``descending``: newest first), strictly after position
    ``after`` (before it when descending; None: from the start of the order), skipping
    ``offset`` first. Hashable: also the key of what is kept of its answer."""

    owner: str
    limit: int
    after: ListKey | None = None
    descending: bool = False
    offset: int = 0


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


def _list_columns(sqlite_text: bool) -> list[Any]:
    """:data:`LIST_COLUMNS`; with ``sqlite_text`` the creation time selected as the ISO text
    the answer shows (for the plain ``sqlite3`` reads)."""
    cols: list[Any] = list(LIST_COLUMNS)
    if sqlite_text:
        cols[1] = _SQLITE_ISO
    return cols


#: Statements by (descending, with a position): the reader keys their compiled form on their
#: identity, so they are built once.
Statements = dict[tuple[bool, bool], Select[Any]]


def _keyset_statements(cols: list[Any]) -> Statements:
    """:func:`_keyset_page` of ``cols`` in either order, with and without a position.

    The offset is always a parameter: SQLite's dialect writes an ``OFFSET`` beside every
    bound ``LIMIT``.
    """
    return {(d, k): _keyset_page(cols, d, k) for d in (False, True) for k in (False, True)}


#: Whole rows of a page, by whether they are read as SQLite's text (:func:`_list_columns`).
_STATEMENTS = {text: _keyset_statements(_list_columns(text)) for text in (False, True)}
#: Only each job's id and revision (``list_rev``): read from the keyset index alone, which
#: carries both (migration 0005).
_KEY_STATEMENTS = _keyset_statements([JobRecord.id, JobRecord.list_rev])
#: The ids alone (the lists kept while PostgreSQL's notifications say they hold,
#: ``db/pgfeed``).
_ID_STATEMENTS = _keyset_statements([JobRecord.id])


def _by_id_statement(sqlite_text: bool) -> Select[Any]:
    """Whole rows (and revisions) of some of one owner's jobs, by id: ``owner`` and ``ids``
    bound. For the plain ``sqlite3`` reads the ids are one JSON array (``json_each``), so
    that the compiled text serves any number of them; elsewhere an expanding ``IN``."""
    if sqlite_text:
        ids: Any = sa_select(literal_column("value")).select_from(func.json_each(bindparam("ids")))
    else:
        ids = bindparam("ids", expanding=True)
    return sa_select(*_list_columns(sqlite_text), JobRecord.list_rev).where(
        JobRecord.owner == bindparam("owner"), JobRecord.id.in_(ids)
    )


_BY_ID_STATEMENTS = {text: _by_id_statement(text) for text in (False, True)}

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

    def _bind(self, statements: Statements, query: ListQuery) -> tuple[Select[Any], dict[str, Any]]:
        """The statement of ``statements`` for ``query``'s order and position, and its bound
        parameters (the position as the reader stores it: text on a SQLite file)."""
        params: dict[str, Any] = {"owner": query.owner, "n": query.limit, "o": query.offset}
        after = query.after
        if after is not None:
            params["i"] = after.id
            params["c"] = _sqlite_text(after.created) if self.raw else after.created
        return statements[(query.descending, after is not None)], params

    def page(self, query: ListQuery) -> list[tuple[Any, ...]]:
        """The jobs ``query`` asks for, whole.

        Rows are tuples in :class:`ListRow` order. On a SQLite file they are read with the
        creation time as the answer's text and JSON columns as stored; NULL JSON is ``None``.
        """
        stmt, params = self._bind(_STATEMENTS[self.raw], query)
        if self.raw:
            return self.reader.raw(stmt, params)
        return [normalise(r) for r in self.reader.all(stmt, params)]

    def keys(self, query: ListQuery) -> list[tuple[str, int]]:
        """The ids and revisions of the jobs :meth:`page` would read, in the same order."""
        return self.reader.raw(*self._bind(_KEY_STATEMENTS, query))

    def ids(self, query: ListQuery) -> list[str]:
        """The ids of the jobs :meth:`page` would read, in the same order."""
        return [r[0] for r in self.reader.raw(*self._bind(_ID_STATEMENTS, query))]

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
