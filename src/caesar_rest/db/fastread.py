"""Direct ``sqlite3`` reads for the hottest routes (job status) on the SQLite default.

A job-status request reads one row by primary key and a few event rows: tens of microseconds
in SQLite, while SQLAlchemy's connection check-out, transaction events, statement caching and
result processing cost several times that (``docs/benchmarks.md`` has the profile). This
module runs the *same* SQLAlchemy Core statements, compiled once to SQL text for the SQLite
dialect, on a plain ``sqlite3`` connection per thread, and converts the values with the
column types' own SQLAlchemy result processors (``DateTime`` stored as text, ``JSON``).
Only reads go through it; every write still goes through SQLAlchemy. It is used for file
databases only (an in-memory database is private to its SQLAlchemy connection).

:class:`EngineReader` offers the same ``all`` on an engine: for a database server an
autocommit engine of its own, so that a one-statement read is one round trip (on the
service's engine a read also costs the transaction's ``BEGIN`` and the ``ROLLBACK`` that
resets the pooled connection). :func:`make_reader` picks the reader for a service.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
from collections import namedtuple
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import Engine, Select, create_engine

#: Any Core ``select`` (SQLAlchemy 2.1 types its columns with a variadic tuple).
AnySelect = Select[*tuple[Any, ...]]


class _Compiled:
    """A statement compiled for sqlite3: SQL text, parameter order, row type, converters."""

    def __init__(self, stmt: AnySelect, engine: Engine):
        compiled = stmt.compile(dialect=engine.dialect)
        self.sql = str(compiled)
        self.order: list[str] = list(compiled.positiontup or [])
        cols = list(stmt.selected_columns)
        self.row_type: Any = namedtuple("Row", [c.key for c in cols])  # type: ignore[misc]
        # SQLAlchemy's own result processors of the column types (DateTime stored as text,
        # JSON, ...), so that rows hold the values an engine connection would give.
        self.converters: list[tuple[int, Callable[[Any], Any]]] = []
        for i, col in enumerate(cols):
            proc = col.type.dialect_impl(engine.dialect).result_processor(engine.dialect, None)
            if proc is not None:
                self.converters.append((i, proc))


class SQLiteReader:
    """Runs SQLAlchemy ``select`` statements on per-thread ``sqlite3`` connections.

    Parameters
    ----------
    engine
        The service's SQLite engine (its file is opened again, read-only use).
    """

    #: Reads take tens of microseconds: callers may run them on the event loop.
    inline = True

    def __init__(self, engine: Engine):
        path = _sqlite_file(engine)
        if path is None:
            raise ValueError("SQLiteReader needs a SQLite file database")
        self.engine = engine
        self.path = path
        self._local = threading.local()
        self._compiled: dict[int, _Compiled] = {}
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        #: Serial numbers of the connections (never reused, unlike ``id``).
        self._serials = itertools.count(1)

    @classmethod
    def for_engine(cls, engine: Engine) -> SQLiteReader | None:
        """A reader for a SQLite file engine, else None."""
        return cls(engine) if _sqlite_file(engine) is not None else None

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # Autocommit: each SELECT is its own read transaction and sees the latest commit.
            conn = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            self._local.serial = next(self._serials)
            with self._lock:
                self._conns.append(conn)
        return conn

    def all(self, stmt: AnySelect, params: dict[str, Any]) -> list[Any]:
        """All rows of ``stmt`` (named tuples with the statement's column keys).

        Parameters
        ----------
        stmt
            A Core ``select`` built once (its identity keys the compiled form).
        params
            Values of its bound parameters.

        Returns
        -------
        list
            Rows with attribute access, as SQLAlchemy's rows.
        """
        c = self._compiled.get(id(stmt))
        if c is None:
            c = self._compiled[id(stmt)] = _Compiled(stmt, self.engine)
        rows = self._conn().execute(c.sql, [params[k] for k in c.order]).fetchall()
        if c.converters:
            out = []
            for r in rows:
                vals = list(r)
                for i, conv in c.converters:
                    vals[i] = conv(vals[i])
                out.append(c.row_type._make(vals))
            return out
        return [c.row_type._make(r) for r in rows]

    def raw(self, stmt: AnySelect, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """All rows of ``stmt`` as ``sqlite3`` gives them: the stored values, unconverted.

        ``DateTime`` columns are SQLAlchemy's SQLite text and ``JSON`` columns their JSON
        text; bound values are passed as they are (text for a ``DateTime`` too).
        """
        c = self._compiled.get(id(stmt))
        if c is None:
            c = self._compiled[id(stmt)] = _Compiled(stmt, self.engine)
        rows: list[tuple[Any, ...]] = (
            self._conn().execute(c.sql, [params[k] for k in c.order]).fetchall()
        )
        return rows

    def version(self) -> tuple[int, int]:
        """A marker of the database's content as this thread's connection sees it now.

        The connection's serial number and SQLite's ``PRAGMA data_version``, which changes
        whenever another connection (of this process or any other) has committed a change
        to the file since the last call, and costs no read of any table. This reader never
        writes, so every change to the database changes it. Markers of two threads are not
        comparable (their serials differ), so a cache keyed on them only misses more.
        Rows read after the call reflect at least the state it marks: content cached with
        the marker stays right while a later call returns the same marker.
        """
        conn = self._conn()
        (value,) = conn.execute("PRAGMA data_version").fetchone()
        return (self._local.serial, value)

    def first(self, stmt: AnySelect, params: dict[str, Any]) -> Any | None:
        """The first row of ``stmt``, or None."""
        rows = self.all(stmt, params)
        return rows[0] if rows else None

    def close(self) -> None:
        """Close every connection this reader opened."""
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()


def _sqlite_file(engine: Engine) -> str | None:
    """The database file of a SQLite file engine, else None."""
    path = engine.url.database
    if engine.dialect.name != "sqlite" or not path or path == ":memory:":
        return None
    return path


class EngineReader:
    """``all`` of Core statements through an SQLAlchemy engine.

    Parameters
    ----------
    engine
        The engine to read with.
    owned
        Whether :meth:`close` disposes of it (an engine made for the reader).
    """

    #: Reads wait on a database server: callers run them in a worker thread.
    inline = False

    def __init__(self, engine: Engine, owned: bool = False):
        self.engine = engine
        self.owned = owned
        self._compiled: dict[int, Any] = {}

    def all(self, stmt: AnySelect, params: dict[str, Any]) -> list[Any]:
        """All rows of ``stmt`` with ``params``."""
        with self.engine.connect() as conn:
            return list(conn.execute(stmt, params).all())

    def raw(self, stmt: AnySelect, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """All rows of ``stmt`` as the database driver gives them (plain tuples).

        For statements of plain columns (text, numbers) and parameters the driver adapts
        itself: no SQLAlchemy result processing, no expanding ``IN``. A SQLAlchemy row costs
        about a microsecond more than the driver's tuple, which counts for the 10,000
        (id, revision) pairs of a full job list.
        """
        compiled = self._compiled.get(id(stmt))
        if compiled is None:
            compiled = self._compiled[id(stmt)] = stmt.compile(dialect=self.engine.dialect)
        sql = str(compiled)
        args: Any = (
            [params[k] for k in compiled.positiontup or []] if compiled.positional else params
        )
        with self.engine.connect() as conn:
            cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cur.execute(sql, args)
                # Tuples already (psycopg's and sqlite3's default row factories).
                rows = cast(list[tuple[Any, ...]], cur.fetchall())
            finally:
                cur.close()
        return rows

    def close(self) -> None:
        """Dispose of the engine when the reader made it."""
        if self.owned:
            self.engine.dispose()


def make_reader(engine: Engine) -> SQLiteReader | EngineReader:
    """The reader of the hot read routes for the service's ``engine``.

    A SQLite file: :class:`SQLiteReader`. A database server: an :class:`EngineReader` on an
    autocommit engine with its own pool, as many kept connections as requests the thread pool
    runs at once under load (connections beyond ``pool_size`` are closed on return, and opening
    one costs PostgreSQL a process; switching the service's pooled connections in and out of
    autocommit would cost a round trip each time). An in-memory SQLite database: the engine
    itself (it is private to the engine's connection).

    Parameters
    ----------
    engine
        The service's engine.

    Returns
    -------
    SQLiteReader or EngineReader
        The reader.
    """
    if engine.dialect.name == "sqlite":
        reader = SQLiteReader.for_engine(engine)
        return reader if reader is not None else EngineReader(engine)
    read_engine = create_engine(
        engine.url, isolation_level="AUTOCOMMIT", pool_recycle=1800, pool_size=16, max_overflow=24
    )
    return EngineReader(read_engine, owned=True)
