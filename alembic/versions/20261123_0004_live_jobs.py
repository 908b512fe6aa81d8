"""Live jobs: progress, checkpoint, parent, next_run on jobs; the job_logs table.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("progress", JSON, nullable=True))
        batch.add_column(sa.Column("checkpoint", JSON, nullable=True))
        batch.add_column(sa.Column("parent", sa.String(36), nullable=True))
        batch.add_column(sa.Column("next_run", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_jobs_parent", "jobs", ["parent"])
    op.create_table(
        "job_logs",
        sa.Column("id", BIGINT, autoincrement=True, nullable=False),
        sa.Column("job_uuid", sa.String(36), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_logs")),
    )
    op.create_index("ix_job_logs_job_uuid_id", "job_logs", ["job_uuid", "id"])


def downgrade() -> None:
    op.drop_index("ix_job_logs_job_uuid_id", table_name="job_logs")
    op.drop_table("job_logs")
    op.drop_index("ix_jobs_parent", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("next_run")
        batch.drop_column("parent")
        batch.drop_column("checkpoint")
        batch.drop_column("progress")
