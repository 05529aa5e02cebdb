"""Direct ``sqlite3`` reads for the hottest routes (job status) on the SQLite default.

A job-status request reads one row by primary key and a few event rows: tens of microseconds
in SQLite, while SQLAlchemy's connection check-out, transaction events, statement caching and
result processing cost several times that (``docs/benchmarks.md`` has the profile). This
module runs the *same* SQLAlchemy Core statements, compiled once to SQL text for the SQLite
dialect, on a plain ``sqlite3`` connection per thread, and converts the values with the
column types' own SQLAlchemy result processors (``DateTime`` stored as text, ``JSON``).
Only reads go through it; every write still goes through SQLAlchemy. It is used for file
databases only (an in-memory database is private to its SQLAlchemy connection).
"""

from __future__ import annotations

import sqlite3
import threading
from collections import namedtuple
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, Select

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

    def __init__(self, engine: Engine):
        path = engine.url.database
        if engine.dialect.name != "sqlite" or not path or path == ":memory:":
            raise ValueError("SQLiteReader needs a SQLite file database")
        self.engine = engine
        self.path = path
        self._local = threading.local()
        self._compiled: dict[int, _Compiled] = {}
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    @classmethod
    def for_engine(cls, engine: Engine) -> SQLiteReader | None:
        """A reader for a SQLite file engine, else None."""
        path = engine.url.database
        if engine.dialect.name != "sqlite" or not path or path == ":memory:":
            return None
        return cls(engine)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # Autocommit: each SELECT is its own read transaction and sees the latest commit.
            conn = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
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
