"""jobs: PostgreSQL notifies the job lists of every committed change (LISTEN/NOTIFY)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 11:30:00

On PostgreSQL the v1.0 job list keeps the ids of its pages and each job's rendered document in
memory, valid until the database says otherwise (``caesar_rest.db.pgfeed``). An ``AFTER``
trigger sends on the channel ``caesar_rest_jobs``, for every row written:

* ``r <rev> <id>``: documents of job ``id`` older than revision ``rev`` are out of date (an
  insert or update: the row's new ``list_rev``; a delete: its last one plus one, so that a job
  inserted again under the id is read again);
* ``s <owner>``: the owner's list changed (an insert, a delete, an update of the owner, the
  creation time or the id; a changed owner sends both);
* ``s``: every owner's list changed (an owner too long for a payload);
* ``x``: everything is out of date (a ``TRUNCATE``, an id too long for a payload).

PostgreSQL delivers a notification only after its transaction committed, and queues those of
concurrent transactions in commit order (notifying commits take one lock in turn).

SQLite has nothing to do here: its lists are validated by ``PRAGMA data_version``.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The channel (``caesar_rest.db.pgfeed.CHANNEL``) and the triggers.
CHANNEL = "caesar_rest_jobs"
PG_TRIGGERS = ("jobs_list_notify", "jobs_list_notify_truncate")

#: Owners and ids longer than this (bytes) are not sent (a payload holds < 8000 bytes).
_LONGEST = 4000

_PG_UP = [
    "CREATE FUNCTION jobs_list_notify() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "IF TG_OP = 'DELETE' THEN "
    f"  PERFORM pg_notify('{CHANNEL}', CASE WHEN octet_length(OLD.id) <= {_LONGEST} "
    "   THEN 'r ' || (OLD.list_rev + 1) || ' ' || OLD.id ELSE 'x' END); "
    "ELSE "
    f"  PERFORM pg_notify('{CHANNEL}', CASE WHEN octet_length(NEW.id) <= {_LONGEST} "
    "   THEN 'r ' || NEW.list_rev || ' ' || NEW.id ELSE 'x' END); "
    "END IF; "
    "IF TG_OP = 'UPDATE' AND NEW.owner = OLD.owner AND NEW.created_at = OLD.created_at "
    "AND NEW.id = OLD.id THEN RETURN NULL; END IF; "
    "IF TG_OP <> 'INSERT' THEN "
    f"  PERFORM pg_notify('{CHANNEL}', CASE WHEN octet_length(OLD.owner) <= {_LONGEST} "
    "   THEN 's ' || OLD.owner ELSE 's' END); "
    "END IF; "
    "IF TG_OP <> 'DELETE' THEN "
    f"  PERFORM pg_notify('{CHANNEL}', CASE WHEN octet_length(NEW.owner) <= {_LONGEST} "
    "   THEN 's ' || NEW.owner ELSE 's' END); "
    "END IF; "
    "RETURN NULL; END $$",
    "CREATE FUNCTION jobs_list_notify_all() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    f"PERFORM pg_notify('{CHANNEL}', 'x'); RETURN NULL; END $$",
    "CREATE TRIGGER jobs_list_notify AFTER INSERT OR UPDATE OR DELETE ON jobs "
    "FOR EACH ROW EXECUTE FUNCTION jobs_list_notify()",
    "CREATE TRIGGER jobs_list_notify_truncate AFTER TRUNCATE ON jobs "
    "FOR EACH STATEMENT EXECUTE FUNCTION jobs_list_notify_all()",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for sql in _PG_UP:
            op.execute(sql)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for trigger in PG_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON jobs")
        op.execute("DROP FUNCTION IF EXISTS jobs_list_notify()")
        op.execute("DROP FUNCTION IF EXISTS jobs_list_notify_all()")
