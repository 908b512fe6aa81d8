"""Remote jobs' claims: the consumer holding one, its lease, and its last check-in's data.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
COLUMNS = ("worker", "lease_id", "lease_expires", "checkin_data")


def upgrade() -> None:
    # Plain ADD COLUMNs: a batch copy of the table on SQLite would drop 0005's triggers.
    op.add_column("jobs", sa.Column("worker", sa.String(100), nullable=True))
    op.add_column("jobs", sa.Column("lease_id", sa.String(64), nullable=True))
    op.add_column("jobs", sa.Column("lease_expires", sa.DateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("checkin_data", JSON, nullable=True))


def downgrade() -> None:
    for column in reversed(COLUMNS):
        op.drop_column("jobs", column)
