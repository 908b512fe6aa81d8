"""The moment before which a user's tokens are refused.

Set when a user is created and whenever their password or roles change: a token issued
before it (to an earlier user of the same login, or before a password reset) answers 401.
Existing users start from their creation time.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("tokens_after", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE users SET tokens_after = created")


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("tokens_after")
