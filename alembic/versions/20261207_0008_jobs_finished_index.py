"""An index on when jobs finished, for the jobs finished per minute of ``GET /@jobs/@stats``.

Partial, over finished jobs only (``finished IS NOT NULL``): a job's start, heartbeats
and progress, which leave ``finished`` null, add nothing to it. A range on ``finished``
(``finished >= :since``, a strict comparison) implies the predicate, on PostgreSQL and
on SQLite, so the statistics read only the window's jobs, whatever the table's size.

On PostgreSQL it is built ``CONCURRENTLY``, outside the migration's transaction: the
workers of the running release go on finishing jobs while a large table is indexed. If
that build fails it leaves an invalid index behind: ``DROP INDEX ix_jobs_finished`` and
migrate again.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

NAME = "ix_jobs_finished"
FINISHED = "finished IS NOT NULL"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.create_index(
                NAME,
                "jobs",
                ["finished"],
                postgresql_where=sa.text(FINISHED),
                postgresql_concurrently=True,
            )
    else:
        op.create_index(NAME, "jobs", ["finished"], sqlite_where=sa.text(FINISHED))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.drop_index(NAME, table_name="jobs", postgresql_concurrently=True)
    else:
        op.drop_index(NAME, table_name="jobs")
