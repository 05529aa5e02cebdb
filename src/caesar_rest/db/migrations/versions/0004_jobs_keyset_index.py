"""keyset index of the v1.0 job list: (owner, created_at, id)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 07:30:00

The job list is read in ``(created_at, id)`` order per owner, a page at a time
(``caesar_rest.db.joblist``). With the id in the index a page is one range scan, without a
sort of the jobs created in the same instant; the index replaces ``(owner, created_at)``,
whose queries it serves as well.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.create_index("ix_jobs_owner_created_id", ["owner", "created_at", "id"])
        batch_op.drop_index("ix_jobs_owner_created")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.create_index("ix_jobs_owner_created", ["owner", "created_at"])
        batch_op.drop_index("ix_jobs_owner_created_id")
