"""Migrations build the schema the models describe, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from caesar_rest.db.engine import make_engine
from caesar_rest.db.migrate import upgrade
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
        assert ("owner", "created_at") in indexed and ("phase", "backend") in indexed
    finally:
        engine.dispose()


def test_sqlite_schema(tmp_path: Path) -> None:
    check_schema(f"sqlite:///{tmp_path / 'x.sqlite3'}")


@pytest.mark.postgres
def test_postgres_schema(pg_url: str) -> None:
    check_schema(pg_url)
