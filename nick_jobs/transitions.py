"""Every change of a job's state, each one a single conditional UPDATE.

The ``WHERE`` clause of each statement is the state machine: a transition happens only
from the states it names, so racing requests and workers end in exactly one valid state
and the loser learns it lost (no row updated) instead of overwriting the winner.

    created ──start──▶ running ──complete──▶ completed
       │                  │ ╲──fail─────▶ failed ──retry──▶ created
       └──abort──▶ aborted ◀──abort──┘                aborted ──retry──▶ created

Functions take a SQLAlchemy ``Connection`` or ``Session``: the API passes the request's
session, the worker a bare connection (no ORM on its hot path).
"""

from __future__ import annotations

import datetime as dt
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .models import FINISHED_STATUSES, Job, JobHistory, JobStatus, utcnow

jobs = Job.__table__
history = JobHistory.__table__

CREATED, RUNNING, COMPLETED, FAILED, ABORTED = (
    JobStatus.CREATED.value,
    JobStatus.RUNNING.value,
    JobStatus.COMPLETED.value,
    JobStatus.FAILED.value,
    JobStatus.ABORTED.value,
)
RETRYABLE = (FAILED, ABORTED)
ABORTABLE = (CREATED, RUNNING)


class TransitionRefused(Exception):
    """The job is not in a state that allows the transition (or no longer exists)."""

    def __init__(self, status: str | None, message: str) -> None:
        super().__init__(message)
        self.status = status


def _record(
    conn, uuid: str, event: str, by: str, attempt: int, now: dt.datetime, **data: Any
) -> None:
    conn.execute(
        history.insert().values(
            job_uuid=uuid, time=now, event=event, by=by, attempt=attempt, data=data
        )
    )


def _current_status(conn, uuid: str) -> str | None:
    return conn.execute(sa.select(jobs.c.status).where(jobs.c.uuid == uuid)).scalar_one_or_none()


def create(
    conn,
    *,
    action: str,
    params: dict[str, Any],
    actor: str,
    title: str,
    description: str,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """Insert a new ``created`` job and return its row as a dict."""
    now = utcnow()
    values = {
        "uuid": str(uuidlib.uuid4()),
        "title": title,
        "description": description,
        "action": action,
        "params": params,
        "actor": actor,
        "status": CREATED,
        "created": now,
        "started": None,
        "finished": None,
        "result": {},
        "error": None,
        "attempt": 1,
        "idempotency_key": idempotency_key,
        "heartbeat": None,
        # The message goes out right after this commits; a sweeper re-sends it if not.
        "enqueued": now,
    }
    values["id"] = conn.execute(jobs.insert().values(values).returning(jobs.c.id)).scalar_one()
    _record(conn, values["uuid"], "created", actor, 1, now)
    return values


@dataclass(frozen=True)
class StartedJob:
    uuid: str
    action: str
    params: dict[str, Any]
    actor: str
    attempt: int
    started: dt.datetime


# The worker's statements are built once: constructing them per call costs more Python
# time than executing them on a warm connection.
_START = (
    jobs.update()
    .where(jobs.c.uuid == sa.bindparam("b_uuid"), jobs.c.status == CREATED)
    .values(status=RUNNING, started=sa.bindparam("b_now"), heartbeat=sa.bindparam("b_now"))
    .returning(jobs.c.action, jobs.c.params, jobs.c.actor, jobs.c.attempt)
)
_RUNNING_ATTEMPT = (
    jobs.c.uuid == sa.bindparam("b_uuid"),
    jobs.c.status == RUNNING,
    jobs.c.attempt == sa.bindparam("b_attempt"),
)
_COMPLETE = (
    jobs.update()
    .where(*_RUNNING_ATTEMPT)
    .values(status=COMPLETED, finished=sa.bindparam("b_now"), result=sa.bindparam("b_result"))
)
_FAIL = (
    jobs.update()
    .where(*_RUNNING_ATTEMPT)
    .values(status=FAILED, finished=sa.bindparam("b_now"), error=sa.bindparam("b_error"))
)


def start(conn, uuid: str) -> StartedJob | None:
    """``created → running``; None when the job is gone, aborted or already taken.

    A duplicate delivery of the same message, or a message for an aborted or deleted job,
    changes nothing here, which is what makes at-least-once delivery safe.
    """
    now = utcnow()
    row = conn.execute(_START, {"b_uuid": uuid, "b_now": now}).one_or_none()
    if row is None:
        return None
    return StartedJob(uuid, row.action, row.params or {}, row.actor, row.attempt, now)


def complete(conn, uuid: str, attempt: int, result: dict[str, Any]) -> bool:
    """``running → completed`` for this attempt; False if it was aborted meanwhile."""
    params = {"b_uuid": uuid, "b_attempt": attempt, "b_now": utcnow(), "b_result": result}
    return conn.execute(_COMPLETE, params).rowcount == 1


def fail(conn, uuid: str, attempt: int, error_type: str, message: str) -> bool:
    """``running → failed`` for this attempt; False if it was aborted meanwhile."""
    error = {"type": error_type, "message": message}
    params = {"b_uuid": uuid, "b_attempt": attempt, "b_now": utcnow(), "b_error": error}
    return conn.execute(_FAIL, params).rowcount == 1


def heartbeat(conn, uuids: list[str], now: dt.datetime) -> int:
    """Mark the running jobs ``uuids`` as alive; one statement for a whole worker process."""
    if not uuids:
        return 0
    return conn.execute(
        jobs.update().where(jobs.c.uuid.in_(uuids), jobs.c.status == RUNNING).values(heartbeat=now)
    ).rowcount


def is_current(conn, uuid: str, attempt: int) -> bool:
    """Is this attempt still the running one? (False once aborted, deleted or retried.)"""
    status = conn.execute(
        sa.select(jobs.c.status).where(jobs.c.uuid == uuid, jobs.c.attempt == attempt)
    ).scalar_one_or_none()
    return status == RUNNING


def abort(conn, uuid: str, by: str) -> None:
    """``created|running → aborted``.

    A running handler learns of it at its next check (it is no longer the current
    attempt) and stops; its late result can't land because finishing is fenced on status.
    """
    now = utcnow()
    row = conn.execute(
        jobs.update()
        .where(jobs.c.uuid == uuid, jobs.c.status.in_(ABORTABLE))
        .values(status=ABORTED, finished=now)
        .returning(jobs.c.attempt)
    ).one_or_none()
    if row is None:
        status = _current_status(conn, uuid)
        raise TransitionRefused(status, f"A {status} job can't be aborted.")
    _record(conn, uuid, "aborted", by, row.attempt, now)


def retry(conn, uuid: str, by: str) -> int:
    """``failed|aborted → created`` as a new attempt; returns the new attempt number.

    The finished attempt's outcome goes to the job's history first; the UPDATE is fenced
    on that attempt, so the history row always describes the attempt that was replaced.
    """
    now = utcnow()
    old = conn.execute(
        sa.select(
            jobs.c.status,
            jobs.c.attempt,
            jobs.c.started,
            jobs.c.finished,
            jobs.c.result,
            jobs.c.error,
        ).where(jobs.c.uuid == uuid)
    ).one_or_none()
    if old is None or old.status not in RETRYABLE:
        status = old.status if old else None
        raise TransitionRefused(status, f"A {status} job can't be retried.")
    updated = conn.execute(
        jobs.update()
        .where(jobs.c.uuid == uuid, jobs.c.status == old.status, jobs.c.attempt == old.attempt)
        .values(
            status=CREATED,
            started=None,
            finished=None,
            result={},
            error=None,
            attempt=old.attempt + 1,
            heartbeat=None,
            enqueued=now,
        )
    ).rowcount
    if updated != 1:
        status = _current_status(conn, uuid)
        raise TransitionRefused(status, f"A {status} job can't be retried.")
    _record(
        conn,
        uuid,
        "retried",
        by,
        old.attempt + 1,
        now,
        previous_attempt={
            "attempt": old.attempt,
            "status": old.status,
            "started": old.started.isoformat() if old.started else None,
            "finished": old.finished.isoformat() if old.finished else None,
            "result": old.result or {},
            "error": old.error,
        },
    )
    return old.attempt + 1


def delete(conn, uuid: str) -> None:
    """Remove a job that is not running, with its history."""
    deleted = conn.execute(
        jobs.delete().where(jobs.c.uuid == uuid, jobs.c.status != RUNNING)
    ).rowcount
    if deleted != 1:
        status = _current_status(conn, uuid)
        raise TransitionRefused(status, "A running job can't be deleted; abort it first.")
    conn.execute(history.delete().where(history.c.job_uuid == uuid))


def is_finished(status: str) -> bool:
    return status in FINISHED_STATUSES
