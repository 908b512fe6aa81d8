"""A change counter on jobs, kept by the database, for the streams' change feed.

Every insert of a job and every change of its status or attempt gives the row the next
value of one counter, whoever writes it (API, worker, sweeper, scheduler, a manual SQL
fix). The streams read ``changed > cursor`` to find what happened since they last looked,
and a client resumes a stream from the value in its ``Last-Event-ID``.

PostgreSQL: a sequence and a ``BEFORE`` trigger (one ``nextval`` per changed row, no extra
statement). SQLite has no sequences: a one-row counter table, bumped by ``AFTER``
triggers; SQLite runs one writer at a time, so the values are also the commit order.
(A later migration that rebuilds ``jobs`` with ``batch_alter_table`` on SQLite drops
these triggers and must create them again.)

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_PG_UP = [
    "CREATE SEQUENCE jobs_changed_seq",
    "UPDATE jobs SET changed = nextval('jobs_changed_seq')",
    """
    CREATE FUNCTION nick_jobs_mark_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.changed := nextval('jobs_changed_seq');
        RETURN NEW;
    END
    $$
    """,
    """
    CREATE TRIGGER jobs_changed_on_insert BEFORE INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION nick_jobs_mark_changed()
    """,
    """
    CREATE TRIGGER jobs_changed_on_update BEFORE UPDATE OF status, attempt ON jobs
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.attempt IS DISTINCT FROM NEW.attempt)
    EXECUTE FUNCTION nick_jobs_mark_changed()
    """,
]
_PG_DOWN = [
    "DROP TRIGGER IF EXISTS jobs_changed_on_update ON jobs",
    "DROP TRIGGER IF EXISTS jobs_changed_on_insert ON jobs",
    "DROP FUNCTION IF EXISTS nick_jobs_mark_changed()",
    "DROP SEQUENCE IF EXISTS jobs_changed_seq",
]

_SQLITE_BUMP = """
    UPDATE jobs_changed_counter SET value = value + 1;
    UPDATE jobs SET changed = (SELECT value FROM jobs_changed_counter) WHERE id = NEW.id;
"""
_SQLITE_UP = [
    "INSERT INTO jobs_changed_counter (value) SELECT COALESCE(MAX(id), 0) FROM jobs",
    "UPDATE jobs SET changed = id",
    f"CREATE TRIGGER jobs_changed_on_insert AFTER INSERT ON jobs BEGIN {_SQLITE_BUMP} END",
    f"""
    CREATE TRIGGER jobs_changed_on_update AFTER UPDATE OF status, attempt ON jobs
    WHEN OLD.status IS NOT NEW.status OR OLD.attempt IS NOT NEW.attempt
    BEGIN {_SQLITE_BUMP} END
    """,
]
_SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS jobs_changed_on_update",
    "DROP TRIGGER IF EXISTS jobs_changed_on_insert",
]


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("changed", BIGINT, nullable=False, server_default="0"))
    # Created everywhere so the schema is the same on every database; only SQLite uses it
    # (PostgreSQL has the sequence, which never makes writers wait for each other).
    op.create_table("jobs_changed_counter", sa.Column("value", BIGINT, nullable=False))
    dialect = op.get_bind().dialect.name
    for statement in _PG_UP if dialect == "postgresql" else _SQLITE_UP:
        op.execute(statement)
    op.create_index("ix_jobs_changed", "jobs", ["changed"])


def downgrade() -> None:
    op.drop_index("ix_jobs_changed", table_name="jobs")
    dialect = op.get_bind().dialect.name
    for statement in _PG_DOWN if dialect == "postgresql" else _SQLITE_DOWN:
        op.execute(statement)
    op.drop_table("jobs_changed_counter")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("changed")
