"""The job table: one row per job, the single source of truth for its state."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from nick_jobs.db.meta import Base, BigIntId, JSONType, UTCDateTime


class JobStatus(enum.StrEnum):
    CREATED = "created"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    ABORTED = "aborted"
    # Stopped on request at a check, with a checkpoint to resume from: not finished.
    STOPPED = "stopped"


FINISHED_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.ABORTED})


def _partial_index(name: str, *columns: str, where: str) -> sa.Index:
    """An index over the rows ``where`` holds, on PostgreSQL and SQLite alike."""
    return sa.Index(name, *columns, postgresql_where=sa.text(where), sqlite_where=sa.text(where))


class Job(Base):
    __tablename__ = "jobs"

    # A monotonic integer orders the listing and backs its keyset cursor; the uuid is the
    # public identity. Insert order is creation order, so "newest first" is "id DESC".
    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(sa.String(36), unique=True)
    title: Mapped[str] = mapped_column(sa.Text, default="")
    description: Mapped[str] = mapped_column(sa.Text, default="")
    action: Mapped[str] = mapped_column(sa.String(100))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    actor: Mapped[str] = mapped_column(sa.String(100))
    status: Mapped[str] = mapped_column(sa.String(20), default=JobStatus.CREATED.value)
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    started: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    result: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    # The attempt number fences stale workers: every worker-side update names the attempt
    # it belongs to, so a handler from an aborted attempt can't touch a retried job.
    attempt: Mapped[int] = mapped_column(sa.Integer, default=1)
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    # Refreshed by the worker process running the job (one batched UPDATE per process
    # per interval); a running job whose heartbeat is too old has lost its worker.
    heartbeat: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When the job's message was last handed to the broker: lets a sweeper re-send a
    # created job whose message was lost, without re-sending fresh ones.
    enqueued: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Live state a handler reports: {"percent", "message", "steps": [...]}, written in
    # batches by the worker, never more than about a second behind.
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    # What a stoppable handler saved to continue from when resumed.
    checkpoint: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    # The job this one was restarted from (restart with lineage).
    parent: Mapped[str | None] = mapped_column(sa.String(36), nullable=True, index=True)
    # When a created job may run next (automatic retries wait out their backoff).
    next_run: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Set by the database (migration 0005) on insert and on every change of status or
    # attempt: the streams' change feed reads "changed > cursor". Never written here.
    changed: Mapped[int] = mapped_column(BigIntId, server_default="0", index=True)
    # The version of the remote action (declared as data, RemoteAction) the job was
    # submitted under; NULL for a Python action's job, which a Dramatiq worker runs.
    action_version: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    # A remote job's claim: the consumer's login (``worker``), the lease it must present
    # and when the lease runs out unless it checks in; what it sent with its last check-in.
    worker: Mapped[str | None] = mapped_column(sa.String(100), nullable=True)
    lease_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    lease_expires: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    checkin_data: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)

    __table_args__ = (
        sa.Index("ix_jobs_actor_id", "actor", "id"),
        sa.Index("ix_jobs_status_id", "status", "id"),
        sa.Index("ix_jobs_action_id", "action", "id"),
        sa.UniqueConstraint("actor", "idempotency_key", name="uq_jobs_actor_idempotency_key"),
        # Small by design: only unfinished jobs are in it, whatever the table's size.
        _partial_index(
            "ix_jobs_unfinished", "status", "heartbeat", where="status IN ('created', 'running')"
        ),
        # Jobs finished per minute (GET /@jobs/@stats): finished jobs only, so starts,
        # heartbeats and progress never write to it.
        _partial_index("ix_jobs_finished", "finished", where="finished IS NOT NULL"),
        # Remote jobs waiting for a claim, by action and age: a claim reads the oldest
        # of its action in order, whatever waits besides (migration 0012).
        _partial_index(
            "ix_jobs_claimable",
            "action",
            "id",
            where="status = 'created' AND action_version IS NOT NULL",
        ),
    )


class JobHistory(Base):
    """The journal of what happened to a job besides its current attempt.

    The job row holds the current attempt; this table keeps who created, aborted, retried
    or deleted it and the outcome of every earlier attempt, so the worker's hot path never
    writes here.
    """

    __tablename__ = "job_history"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    job_uuid: Mapped[str] = mapped_column(sa.String(36), index=True)
    time: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    event: Mapped[str] = mapped_column(sa.String(40))
    by: Mapped[str] = mapped_column(sa.String(100))
    attempt: Mapped[int] = mapped_column(sa.Integer)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class JobLog(Base):
    """Log lines a handler writes through its context, oldest first by ``id``."""

    __tablename__ = "job_logs"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    job_uuid: Mapped[str] = mapped_column(sa.String(36))
    attempt: Mapped[int] = mapped_column(sa.Integer)
    time: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    level: Mapped[int] = mapped_column(sa.SmallInteger)
    message: Mapped[str] = mapped_column(sa.Text)

    __table_args__ = (sa.Index("ix_job_logs_job_uuid_id", "job_uuid", "id"),)


# The counter behind ``jobs.changed`` on SQLite, which has no sequences (one row, kept by
# the triggers of migration 0005); PostgreSQL uses the sequence ``jobs_changed_seq``.
jobs_changed_counter = sa.Table(
    "jobs_changed_counter", Base.metadata, sa.Column("value", BigIntId, nullable=False)
)


class RemoteAction(Base):
    """An action declared as data (``PUT /@job-actions/{name}``, ``nick-jobs actions
    apply``): no Python handler; its jobs are run by consumers over HTTP."""

    __tablename__ = "remote_actions"

    name: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    # Bumped by each change that alters the definition; 1 for a new action.
    version: Mapped[int] = mapped_column(sa.Integer)
    # Everything but name and version, as PUT takes it with its defaults filled in.
    definition: Mapped[dict[str, Any]] = mapped_column(JSONType)
    updated: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_by: Mapped[str] = mapped_column(sa.String(100))


class RemoteActionVersion(Base):
    """Every version a remote action had, the current one included."""

    __tablename__ = "remote_action_versions"

    name: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    version: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(sa.String(100))
