"""Figures over the jobs, for a dashboard: ``GET /@jobs/@stats``.

Three statements, each grouped by the database, whatever the number of jobs:

* how many jobs there are, by action and status (one ``GROUP BY action, status``, from
  which the totals by status and by action are summed);
* how many finished (``completed``, ``failed``, ``aborted``) in each minute of a window
  that ends with the current minute, grouped by the minute since the epoch; the partial
  index ``ix_jobs_finished`` (migration 0008) reads only the window's rows;
* the job that has waited longest for a worker.

Each is narrowed to one actor's jobs for a caller who may see only their own. They are
read on an autocommit connection, each at its own moment: a job that finishes between
two of them may be counted in one and not yet in the other.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any, TypeVarTuple

import sqlalchemy as sa

from nick_jobs.db.meta import table
from nick_jobs.jobs import lifecycle
from nick_jobs.jobs.model import Job, JobStatus
from nick_jobs.jobs.serialize import isoformat

jobs = table(Job)

#: Every status, in the order the API lists them: each is in ``counts`` and in each
#: action's figures, 0 included, so a chart's series never come and go.
STATUSES: tuple[str, ...] = tuple(status.value for status in JobStatus)
#: The outcomes counted per minute, in this order.
FINISHED: tuple[str, ...] = (
    JobStatus.COMPLETED.value,
    JobStatus.FAILED.value,
    JobStatus.ABORTED.value,
)
#: A job waits for a worker in this status only: ``running`` has one, and ``stopped``
#: waits for a resume, not for a worker.
WAITING = JobStatus.CREATED.value

#: The window of ``finished_per_minute``, in minutes: by default the last hour, at
#: most the last day.
DEFAULT_WINDOW = 60
MIN_WINDOW = 1
MAX_WINDOW = 1440

_MINUTE = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class Minute:
    """The jobs that finished in one minute, by outcome (:data:`FINISHED`)."""

    start: dt.datetime
    finished: dict[str, int]


@dataclass(frozen=True)
class WaitingJob:
    """The job that has waited longest for a worker, and since when."""

    uuid: str
    action: str
    actor: str
    created: dt.datetime
    attempt: int
    since: dt.datetime


@dataclass(frozen=True)
class JobStats:
    generated: dt.datetime
    window: int
    counts: dict[str, int]
    by_action: dict[str, dict[str, int]]
    oldest_waiting: WaitingJob | None
    per_minute: list[Minute]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


_Ts = TypeVarTuple("_Ts")


def _where_actor(query: sa.Select[*_Ts], actor: bool) -> sa.Select[*_Ts]:
    return query.where(jobs.c.actor == sa.bindparam("b_actor")) if actor else query


@functools.cache
def _counts_statement(actor: bool) -> sa.Select[Any, Any, int]:
    count = sa.func.count().label("n")
    query = sa.select(jobs.c.action, jobs.c.status, count).group_by(jobs.c.action, jobs.c.status)
    return _where_actor(query, actor)


def _epoch_minute(dialect: str) -> sa.ColumnElement[int]:
    """The minute since the epoch in which a job finished: the same integer for every
    moment of one UTC minute, whatever the connection's time zone."""
    if dialect == "sqlite":
        # Stored as naive UTC text; strftime('%s') reads it as UTC, in whole seconds.
        # Constants as literals: the GROUP BY repeats the expression, and bound
        # parameters would make the two differ.
        stamp = sa.cast(sa.func.strftime(sa.literal_column("'%s'"), jobs.c.finished), sa.Integer)
        return (stamp // sa.literal_column("60", sa.Integer)).label("minute")
    seconds = sa.extract("epoch", jobs.c.finished)
    minute = sa.func.floor(seconds / sa.literal_column("60"))
    return sa.cast(minute, sa.BigInteger).label("minute")


@functools.cache
def _per_minute_statement(dialect: str, actor: bool) -> sa.Select[int, Any, int]:
    minute = _epoch_minute(dialect)
    query = (
        sa.select(minute, jobs.c.status, sa.func.count().label("n"))
        .where(
            # A range on finished and no other condition on the whole table: the partial
            # index ix_jobs_finished serves it. With a condition on status too, SQLite
            # (without statistics unless ANALYZE ran) took the status index instead and
            # read every finished job. A stopped job, which has a finished time as
            # well, is left out in Python.
            jobs.c.finished >= sa.bindparam("b_since", type_=jobs.c.finished.type),
            jobs.c.finished < sa.bindparam("b_until", type_=jobs.c.finished.type),
        )
        .group_by(minute, jobs.c.status)
    )
    return _where_actor(query, actor)


# When a waiting job began to wait, as the queue-lag metric measures a start: a first
# attempt since it was created; a later one since it was sent again (a retry, a resume,
# a job handed back), or since its backoff ended (an automatic retry, whose enqueued
# is its next_run). A retried job is not as old as the day it was first created.
_WAITING_SINCE = sa.case(
    (jobs.c.attempt == 1, jobs.c.created),
    else_=sa.func.coalesce(jobs.c.enqueued, jobs.c.created),
).label("since")


@functools.cache
def _oldest_waiting_statement(actor: bool) -> sa.Select[*tuple[Any, ...]]:
    query = (
        sa.select(
            jobs.c.uuid,
            jobs.c.action,
            jobs.c.actor,
            jobs.c.created,
            jobs.c.attempt,
            _WAITING_SINCE,
        )
        .where(
            jobs.c.status == WAITING,
            # An automatic retry still waiting out its backoff is not waiting for a
            # worker yet.
            sa.or_(
                jobs.c.next_run.is_(None),
                jobs.c.next_run <= sa.bindparam("b_now", type_=jobs.c.next_run.type),
            ),
        )
        .order_by(_WAITING_SINCE, jobs.c.id)
        .limit(1)
    )
    return _where_actor(query, actor)


def minute_start(moment: dt.datetime) -> dt.datetime:
    """The start of the UTC minute ``moment`` is in."""
    return moment.astimezone(dt.UTC).replace(second=0, microsecond=0)


def job_stats(
    conn: sa.Connection,
    *,
    actor: str | None = None,
    window: int = DEFAULT_WINDOW,
    now: dt.datetime | None = None,
) -> JobStats:
    """The figures over every job, or over ``actor``'s only, with ``window`` minutes of
    finished jobs: the current minute (the last, still counting) and the ``window - 1``
    before it.

    ``now`` is by default the state machine's clock, the one that stamps ``created`` and
    ``finished``.
    """
    if not MIN_WINDOW <= window <= MAX_WINDOW:
        raise ValueError(f"window must be {MIN_WINDOW} to {MAX_WINDOW} minutes, not {window}")
    now = now or lifecycle.utcnow()
    by_actor = actor is not None
    params: dict[str, Any] = {"b_actor": actor} if by_actor else {}

    counts = dict.fromkeys(STATUSES, 0)
    by_action: dict[str, dict[str, int]] = {}
    for action, status, n in conn.execute(_counts_statement(by_actor), params):
        counts[status] = counts.get(status, 0) + n
        figures = by_action.setdefault(action, {"total": 0, **dict.fromkeys(STATUSES, 0)})
        figures["total"] += n
        figures[status] = figures.get(status, 0) + n

    last = minute_start(now)
    first = last - (window - 1) * _MINUTE
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    first_index = int((first - epoch).total_seconds()) // 60
    per_minute = [Minute(first + i * _MINUTE, dict.fromkeys(FINISHED, 0)) for i in range(window)]
    window_params = {**params, "b_since": first, "b_until": last + _MINUTE}
    statement = _per_minute_statement(conn.dialect.name, by_actor)
    for minute, status, n in conn.execute(statement, window_params):
        index = int(minute) - first_index
        if status in FINISHED and 0 <= index < window:
            per_minute[index].finished[status] += n

    row = conn.execute(_oldest_waiting_statement(by_actor), {**params, "b_now": now}).first()
    oldest = None
    if row is not None:
        oldest = WaitingJob(row.uuid, row.action, row.actor, row.created, row.attempt, row.since)
    return JobStats(now, window, counts, dict(sorted(by_action.items())), oldest, per_minute)


def stats_json(stats: JobStats, container_url: str) -> dict[str, Any]:
    """The body of ``GET /@jobs/@stats``; ``container_url`` is the ``@jobs`` URL."""
    oldest = None
    if stats.oldest_waiting is not None:
        job = stats.oldest_waiting
        age = max((stats.generated - job.since).total_seconds(), 0.0)
        oldest = {
            "@id": f"{container_url}/{job.uuid}",
            "uuid": job.uuid,
            "action": job.action,
            "actor": job.actor,
            "attempt": job.attempt,
            "created": isoformat(job.created),
            "waiting_since": isoformat(job.since),
            "age": round(age, 3),
        }
    return {
        "@id": f"{container_url}/@stats",
        "generated": isoformat(stats.generated),
        "window": stats.window,
        "total": stats.total,
        "counts": stats.counts,
        "by_action": stats.by_action,
        "oldest_waiting": oldest,
        "finished_per_minute": [
            {"minute": isoformat(minute.start), **minute.finished} for minute in stats.per_minute
        ],
    }
