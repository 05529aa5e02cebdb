"""Migrations build the schema the models describe, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from caesar_rest.db.engine import make_engine
from caesar_rest.db.migrate import migrate_to, upgrade
from caesar_rest.db.models import Base


def check_schema(url: str) -> None:
    engine = make_engine(url)
    try:
        upgrade(engine)
        upgrade(engine)  # idempotent
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], diff
        insp = inspect(engine)
        assert {"files", "jobs", "job_events", "job_results", "alembic_version"} <= set(
            insp.get_table_names()
        )
        indexed = {tuple(ix["column_names"]) for ix in insp.get_indexes("jobs")}
        assert ("owner", "created_at", "id", "list_rev") in indexed
        assert ("phase", "backend") in indexed
        # Replaced by the keyset index (0004), then by the one with the revision (0005).
        assert ("owner", "created_at") not in indexed
        assert ("owner", "created_at", "id") not in indexed
    finally:
        engine.dispose()


def test_sqlite_schema(tmp_path: Path) -> None:
    check_schema(f"sqlite:///{tmp_path / 'x.sqlite3'}")


@pytest.mark.postgres
def test_postgres_schema(pg_url: str) -> None:
    check_schema(pg_url)


def test_keyset_index_down_and_up(tmp_path: Path) -> None:
    """0004 goes down to the (owner, created_at) index of 0003 and up again."""
    engine = make_engine(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    try:
        upgrade(engine)
        assert migrate_to(engine, "0003") == "0003"
        names = {ix["name"] for ix in inspect(engine).get_indexes("jobs")}
        assert "ix_jobs_owner_created" in names and "ix_jobs_owner_created_id" not in names
        assert migrate_to(engine, "0004") == "0004"
        names = {ix["name"] for ix in inspect(engine).get_indexes("jobs")}
        assert "ix_jobs_owner_created_id" in names and "ix_jobs_owner_created" not in names
    finally:
        engine.dispose()


def test_list_revisions_down_and_up(db_url: str) -> None:
    """0005 goes down to 0004 (no revision column, no triggers) and up again, giving the jobs
    already there revisions of their own."""
    from caesar_rest.db.joblist import revisions_kept

    from tests.support.job_rows import insert_jobs, job_row

    engine = make_engine(db_url)
    try:
        upgrade(engine)
        insert_jobs(engine, [job_row("a", i) for i in range(3)])
        assert revisions_kept(engine)
        assert migrate_to(engine, "0004") == "0004"
        assert not revisions_kept(engine)
        assert "list_rev" not in {c["name"] for c in inspect(engine).get_columns("jobs")}
        assert migrate_to(engine, "head") == "0006"
        assert revisions_kept(engine)
        with engine.connect() as conn:
            revs = conn.exec_driver_sql("SELECT list_rev FROM jobs").scalars().all()
        assert len(set(revs)) == 3 and 0 not in revs
    finally:
        engine.dispose()


def test_list_pages_are_one_index_range_scan(tmp_path: Path) -> None:
    """SQLite plans every page of the job list on the keyset index, without a sort."""
    from caesar_rest.db.joblist import _ID_STATEMENTS, _KEY_STATEMENTS, _STATEMENTS

    engine = make_engine(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    try:
        upgrade(engine)
        with engine.connect() as conn:
            groups = [*_STATEMENTS.values(), _KEY_STATEMENTS, _ID_STATEMENTS]
            statements = [stmt for group in groups for stmt in group.values()]
            assert len(statements) == 16
            for stmt in statements:
                sql = str(stmt.compile(dialect=engine.dialect))
                plan = conn.exec_driver_sql(
                    "EXPLAIN QUERY PLAN " + sql,
                    ("u", "2025-01-01 00:00:00.000000", "x", 1, 0)
                    if "(?, ?)" in sql
                    else ("u", 1, 0),
                ).all()
                steps = " ".join(str(row[-1]) for row in plan)
                assert "INDEX ix_jobs_owner_created_id_rev" in steps, (sql, steps)
                if "list_rev" in sql and "jobs.app" not in sql:  # (id, revision): index only
                    assert "COVERING INDEX" in steps, steps
                assert "TEMP B-TREE" not in steps, steps
    finally:
        engine.dispose()
