"""Heartbeat and enqueued times on jobs, for recovering lost jobs.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UNFINISHED = "status IN ('created', 'running')"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("heartbeat", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("enqueued", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_jobs_unfinished",
        "jobs",
        ["status", "heartbeat"],
        postgresql_where=sa.text(UNFINISHED),
        sqlite_where=sa.text(UNFINISHED),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_unfinished", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("enqueued")
        batch.drop_column("heartbeat")
