"""Remote actions: actions declared as data, their versions, and the version a job was
submitted under.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "remote_actions",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", JSON, nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(100), nullable=False),
    )
    op.create_table(
        "remote_action_versions",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("definition", JSON, nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
    )
    # A plain ADD COLUMN on both databases: a batch copy of the table on SQLite would drop
    # the triggers of migration 0005.
    op.add_column("jobs", sa.Column("action_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "action_version")
    op.drop_table("remote_action_versions")
    op.drop_table("remote_actions")
