"""jobs.list_rev: a revision of each job row, renewed by triggers on every write

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 07:30:00

The v1.0 job list keeps each job's rendered document with the ``list_rev`` it was read at
(``caesar_rest.jobs.listing``) and renders again only the rows whose revision differs. Every
insert and every update gives the row a new revision, whoever writes (the service, a worker
process, a hand-written ``UPDATE``): on PostgreSQL a ``BEFORE`` trigger takes it from a
sequence; on SQLite, which cannot change ``NEW`` in a trigger, an ``AFTER`` trigger writes a
random 64-bit value (a repeat of a row's earlier value is a 2**-64 chance). The keyset index
carries the revision so that the list's (id, revision) reads are index-only.

A later migration that rebuilds ``jobs`` on SQLite (batch mode's move and copy) drops the
triggers with the old table and must create them again; until then the store finds them
missing (``caesar_rest.db.joblist.revisions_kept``) and renders every job of each answer.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The trigger names (the store checks they exist before it trusts the revisions).
SQLITE_TRIGGERS = ("jobs_list_rev_insert", "jobs_list_rev_update")
PG_TRIGGER = "jobs_list_rev"

_SQLITE_UP = [
    # recursive_triggers is off by default; the WHEN clause also stops a recursion when on.
    "CREATE TRIGGER jobs_list_rev_insert AFTER INSERT ON jobs FOR EACH ROW "
    "BEGIN UPDATE jobs SET list_rev = random() WHERE rowid = NEW.rowid; END",
    "CREATE TRIGGER jobs_list_rev_update AFTER UPDATE ON jobs FOR EACH ROW "
    "WHEN NEW.list_rev IS OLD.list_rev "
    "BEGIN UPDATE jobs SET list_rev = random() WHERE rowid = NEW.rowid; END",
]
_PG_UP = [
    "CREATE SEQUENCE jobs_list_rev_seq",
    "CREATE FUNCTION jobs_list_rev() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN NEW.list_rev := nextval('jobs_list_rev_seq'); RETURN NEW; END $$",
    "CREATE TRIGGER jobs_list_rev BEFORE INSERT OR UPDATE ON jobs FOR EACH ROW "
    "EXECUTE FUNCTION jobs_list_rev()",
    "UPDATE jobs SET list_rev = nextval('jobs_list_rev_seq')",
]


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(
            sa.Column("list_rev", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.create_index(
            "ix_jobs_owner_created_id_rev", ["owner", "created_at", "id", "list_rev"]
        )
        batch_op.drop_index("ix_jobs_owner_created_id")
    name = op.get_bind().dialect.name
    if name == "sqlite":
        for sql in _SQLITE_UP:
            op.execute(sql)
        op.execute("UPDATE jobs SET list_rev = random()")
    elif name == "postgresql":
        for sql in _PG_UP:
            op.execute(sql)


def downgrade() -> None:
    name = op.get_bind().dialect.name
    if name == "sqlite":
        for trigger in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    elif name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {PG_TRIGGER} ON jobs")
        op.execute("DROP FUNCTION IF EXISTS jobs_list_rev()")
        op.execute("DROP SEQUENCE IF EXISTS jobs_list_rev_seq")
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.create_index("ix_jobs_owner_created_id", ["owner", "created_at", "id"])
        batch_op.drop_index("ix_jobs_owner_created_id_rev")
        batch_op.drop_column("list_rev")
