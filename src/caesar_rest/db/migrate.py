"""Apply Alembic migrations programmatically (``caesar-rest migrate``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

#: Advisory lock key that serialises schema changes on PostgreSQL.
_LOCK_KEY = 7426001


class RevisionError(ValueError):
    """The revision asked for is not one of the packaged migrations."""


def alembic_config(url: str) -> Config:
    """An Alembic configuration for ``url`` using the packaged migrations."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_LOCK_KEY})")


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database behind ``engine`` to ``revision``.

    On PostgreSQL an advisory lock serialises concurrent callers (several API workers starting).
    """
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        _lock(conn)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: no schema yet)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def revisions() -> list[str]:
    """The packaged revisions, oldest first."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def migrate_to(engine: Engine, revision: str = "head") -> str | None:
    """Bring the database to ``revision``: upgrade, or downgrade when it is older than the
    database's. Returns the revision the database is at afterwards (read back, not assumed).

    Raises
    ------
    RevisionError
        ``revision`` is neither ``head``, ``base`` nor a packaged revision.
    """
    known = revisions()
    if revision not in (*known, "head", "base"):
        raise RevisionError(f"unknown revision {revision!r}; known: {', '.join(known)}, head, base")
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        _lock(conn)
        cfg.attributes["connection"] = conn
        current = MigrationContext.configure(conn).get_current_revision()
        at = known.index(current) if current in known else -1
        wanted = {"head": len(known) - 1, "base": -1}.get(revision)
        if wanted is None:
            wanted = known.index(revision)
        if wanted < at:
            command.downgrade(cfg, revision)
        elif wanted > at:
            command.upgrade(cfg, revision)
    return current_revision(engine)
