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
from collections.abc import Callable
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


def _a(word: str | None) -> str:
    return "An" if word and word[0] in "aeiou" else "A"


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


def heartbeat(conn, running: dict[str, int], now: dt.datetime) -> int:
    """Mark running jobs (uuid → attempt) as alive; one statement for a whole process.

    Fenced on the attempt: a leftover handler of an aborted attempt can't keep a retried
    job's heartbeat fresh while the worker running its new attempt is dead.
    """
    if not running:
        return 0
    pairs = list(running.items())
    return conn.execute(
        jobs.update()
        .where(sa.tuple_(jobs.c.uuid, jobs.c.attempt).in_(pairs), jobs.c.status == RUNNING)
        .values(heartbeat=now)
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
        raise TransitionRefused(status, f"{_a(status)} {status} job can't be aborted.")
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
        raise TransitionRefused(status, f"{_a(status)} {status} job can't be retried.")
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
        raise TransitionRefused(status, f"{_a(status)} {status} job can't be retried.")
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


# --- recovery: lost workers, lost messages, stopping workers ----------------------------

# Who the history names for the changes nick-jobs makes on its own.
SWEEPER = "nick-jobs:sweeper"
WORKER = "nick-jobs:worker"
DEFAULT_RECOVERY_BATCH = 500


@dataclass(frozen=True)
class LostJob:
    """A running job whose worker stopped refreshing its heartbeat."""

    uuid: str
    action: str
    attempt: int
    heartbeat: dt.datetime | None
    started: dt.datetime | None


def _previous_attempt(
    attempt: int, started: dt.datetime | None, now: dt.datetime, error: dict[str, str]
) -> dict[str, Any]:
    return {
        "attempt": attempt,
        "status": FAILED,
        "started": started.isoformat() if started else None,
        "finished": now.isoformat(),
        "result": {},
        "error": error,
    }


def _as_new_attempt(attempt: int, now: dt.datetime) -> dict[str, Any]:
    return {
        "status": CREATED,
        "attempt": attempt + 1,
        "started": None,
        "finished": None,
        "result": {},
        "error": None,
        "heartbeat": None,
        "enqueued": now,
    }


def lost_jobs(
    conn, lease_s: float, now: dt.datetime, limit: int = DEFAULT_RECOVERY_BATCH
) -> list[LostJob]:
    """Running jobs whose heartbeat is older than ``lease_s`` seconds (oldest first).

    A row without a heartbeat (started before heartbeats existed) counts from its start.
    """
    cutoff = now - dt.timedelta(seconds=lease_s)
    rows = conn.execute(
        sa.select(jobs.c.uuid, jobs.c.action, jobs.c.attempt, jobs.c.heartbeat, jobs.c.started)
        .where(
            jobs.c.status == RUNNING,
            sa.or_(
                jobs.c.heartbeat < cutoff,
                sa.and_(
                    jobs.c.heartbeat.is_(None),
                    sa.or_(jobs.c.started.is_(None), jobs.c.started < cutoff),
                ),
            ),
        )
        .order_by(jobs.c.heartbeat)
        .limit(limit)
    ).all()
    return [LostJob(r.uuid, r.action, r.attempt, r.heartbeat, r.started) for r in rows]


def _lost_fence(job: LostJob):
    """The row is still exactly as it was found: same attempt, and no heartbeat since."""
    heartbeat = (
        jobs.c.heartbeat.is_(None) if job.heartbeat is None else jobs.c.heartbeat == job.heartbeat
    )
    return (
        jobs.c.uuid == job.uuid,
        jobs.c.status == RUNNING,
        jobs.c.attempt == job.attempt,
        heartbeat,
    )


def rescue(conn, job: LostJob, retry: bool, lease_s: float, now: dt.datetime) -> bool:
    """Rescue one lost job: a new ``created`` attempt when ``retry``, else ``failed``.

    Fenced on status, attempt and the heartbeat that was found stale: a heartbeat that
    lands meanwhile (the worker was only slow) makes this match nothing, and the job
    keeps running. Returns whether the job was rescued.
    """
    error = {
        "type": "WorkerLost",
        "message": f"The worker running this job stopped responding (no heartbeat for "
        f"{lease_s:g} s).",
    }
    if not retry:
        return (
            conn.execute(
                jobs.update()
                .where(*_lost_fence(job))
                .values(status=FAILED, finished=now, error=error)
            ).rowcount
            == 1
        )
    updated = conn.execute(
        jobs.update().where(*_lost_fence(job)).values(_as_new_attempt(job.attempt, now))
    ).rowcount
    if updated != 1:
        return False
    _record(
        conn,
        job.uuid,
        "rescued",
        SWEEPER,
        job.attempt + 1,
        now,
        previous_attempt=_previous_attempt(job.attempt, job.started, now, error),
    )
    return True


@dataclass
class Rescued:
    """What :func:`rescue_lost` did: the jobs to send again, and those it failed."""

    retried: list[tuple[str, str]]  # (uuid, action): created again, to be sent
    failed: list[str]


def rescue_lost(
    conn,
    lease_s: float,
    now: dt.datetime,
    max_retries: Callable[[str], int] | None = None,
    limit: int = DEFAULT_RECOVERY_BATCH,
) -> Rescued:
    """Rescue the running jobs whose heartbeat is older than ``lease_s`` seconds.

    A job whose action allows another attempt (``attempt <= max_retries(action)``) goes
    back to ``created`` as a new attempt, to be sent again; any other fails with error
    type ``WorkerLost``. ``max_retries`` gives an action's ``max_retries`` from its name
    (None: no retries).
    """
    out = Rescued([], [])
    for job in lost_jobs(conn, lease_s, now, limit):
        allowed = max_retries(job.action) if max_retries is not None else 0
        retry = job.attempt <= allowed
        if rescue(conn, job, retry, lease_s, now):
            if retry:
                out.retried.append((job.uuid, job.action))
            else:
                out.failed.append(job.uuid)
    return out


def stale_created(
    conn, grace_s: float, now: dt.datetime, limit: int = DEFAULT_RECOVERY_BATCH
) -> list[tuple[str, str]]:
    """Created jobs last sent more than ``grace_s`` seconds ago, as ``(uuid, action)``.

    Their ``enqueued`` moves to ``now`` in the same conditional statement, so each is
    returned (to be sent again) once per grace period, however many sweepers ask.
    """
    cutoff = now - dt.timedelta(seconds=grace_s)
    stale = sa.or_(jobs.c.enqueued < cutoff, jobs.c.enqueued.is_(None))
    # Read first, so a round with nothing to do writes nothing (and locks nothing).
    ids = (
        conn.execute(
            sa.select(jobs.c.id)
            .where(jobs.c.status == CREATED, stale)
            .order_by(jobs.c.id)
            .limit(limit)
        )
        .scalars()
        .all()
    )
    if not ids:
        return []
    rows = conn.execute(
        jobs.update()
        .where(jobs.c.id.in_(ids), jobs.c.status == CREATED, stale)
        .values(enqueued=now)
        .returning(jobs.c.id, jobs.c.uuid, jobs.c.action)
    ).all()
    return [(r.uuid, r.action) for r in sorted(rows, key=lambda r: r.id)]


def hand_back(conn, uuid: str, attempt: int, now: dt.datetime | None = None) -> bool:
    """``running → created`` as a new attempt, for a job its stopping worker gives up.

    Fenced on the attempt the worker runs: if the job finished, was aborted or was
    rescued meanwhile, nothing changes. Returns whether the job was handed back.
    """
    now = now or utcnow()
    updated = conn.execute(
        jobs.update()
        .where(jobs.c.uuid == uuid, jobs.c.status == RUNNING, jobs.c.attempt == attempt)
        .values(_as_new_attempt(attempt, now))
    ).rowcount
    if updated != 1:
        return False
    error = {
        "type": "WorkerStopped",
        "message": "The worker stopped before the job finished; it runs again.",
    }
    _record(
        conn,
        uuid,
        "handed back",
        WORKER,
        attempt + 1,
        now,
        previous_attempt=_previous_attempt(attempt, None, now, error),
    )
    return True
