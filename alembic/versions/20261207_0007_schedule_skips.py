"""The firing a scheduled job's owner was no longer allowed to make.

At each firing the scheduler checks that the user who owns a scheduled job still exists
and still holds the permission its action needs. When not, it creates no job, disables
the scheduled job and records here which slot it refused, when and why. Enabling the
scheduled job again clears the record.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_COLUMNS = ("skipped_slot", "skipped_at", "skip_reason", "skip_message")


def upgrade() -> None:
    with op.batch_alter_table("scheduled_jobs") as batch:
        batch.add_column(sa.Column("skipped_slot", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("skipped_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("skip_reason", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("skip_message", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scheduled_jobs") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
