"""Every change of a job's state, and everything that comes with it.

Each transition is one conditional statement (or a few in one transaction) whose
``WHERE`` clause is the state machine: a transition happens only from the states it
names, so racing requests and workers end in exactly one valid state and the loser
learns it lost (no row updated) instead of overwriting the winner.

    created ──start──▶ running ──complete──▶ completed
       │                  │ ╲──fail─────▶ failed ──retry──▶ created
       │                  │ ╲──stop─────▶ stopped ──resume──▶ created
       └──abort──▶ aborted ◀──abort──┘                aborted ──retry──▶ created
                                     failed with a checkpoint ──resume──▶ created

With its statement, each transition writes the job's history row and describes itself
as a :class:`Change`, whose effects happen here and only once the change has committed
(:func:`nick_jobs.db.after_commit.after_commit`): the message that makes a worker run
the job (through the ``send`` the caller passes: the app's queue), the state-change log
line (:func:`nick_jobs.ops.logging.state_change`) and the process's counters
(:func:`nick_jobs.ops.metrics.observe`). Views, the worker, the sweeper, the scheduler
and the command line change jobs only through these functions.

Functions take a SQLAlchemy ``Session`` or ``Connection``: the API passes the request's
session or its autocommit connection, the worker a bare connection (no ORM on its hot
path); one in a transaction is opened with :func:`nick_jobs.db.after_commit.transaction`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import uuid as uuidlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Session

from nick_jobs.db.after_commit import after_commit
from nick_jobs.db.meta import table
from nick_jobs.db.meta import utcnow as utcnow  # re-exported: callers use lifecycle.utcnow
from nick_jobs.jobs.model import FINISHED_STATUSES, Job, JobHistory, JobLog, JobStatus
from nick_jobs.ops import logging as state_log
from nick_jobs.ops import metrics
from nick_jobs.users.model import identity_holds

_log = logging.getLogger(__name__)

jobs = table(Job)
history = table(JobHistory)

CREATED, RUNNING, COMPLETED, FAILED, ABORTED = (
    JobStatus.CREATED.value,
    JobStatus.RUNNING.value,
    JobStatus.COMPLETED.value,
    JobStatus.FAILED.value,
    JobStatus.ABORTED.value,
)
RETRYABLE = (FAILED, ABORTED)
ABORTABLE = (CREATED, RUNNING)
DELETED = "deleted"

#: How a job's message goes out: ``send(uuid, action, delay_s)`` (the app's
#: ``Queue.send``). A transition given none sends nothing: the sweeper sends the job once
#: ``nick_jobs.resend_grace`` has passed.
Send = Callable[[str, str, float], None]


class GuardFailed(Exception):
    """A guarded statement wrote nothing: its guard did not hold."""


class TransitionRefused(Exception):
    """The job is not in a state that allows the transition (or no longer exists)."""

    def __init__(self, status: str | None, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Change:
    """One committed change of a job, as its effects see it."""

    event: str  # the history's name for it ("created", "retried", "completed", ...)
    uuid: str
    action: str
    actor: str
    status: str  # the job's status after it; DELETED when the job is gone
    by: str | None = None  # who made it, when not the job's actor
    took: float | None = None  # seconds the attempt ran, when it ended
    lag: float | None = None  # seconds the job waited for this start
    delay: float | None = None  # send the job's message after this many seconds; None: not
    details: tuple[tuple[str, Any], ...] = ()  # more key=value for the log line


#: The PostgreSQL notification channel on which a remote job that a consumer may claim
#: now is announced, in the transaction that made it so: PostgreSQL delivers it at commit
#: to every process that listens (nick_jobs.web.claim_bell), whichever process made it.
CLAIMS_CHANNEL = "nick_jobs_claims"
_ANNOUNCE_CLAIMABLE = sa.select(sa.func.pg_notify(CLAIMS_CHANNEL, ""))


def _changed(conn: Session | sa.Connection, change: Change, send: Send | None = None) -> None:
    """The effects of ``change``, once it has committed."""
    if _claimable_now(change):
        _announce_claimable(conn)
    after_commit(conn, functools.partial(_effects, change, send))


def _claimable_now(change: Change) -> bool:
    # Made created with no message to send: a remote action's job, for a consumer's claim.
    return change.status == CREATED and change.delay is None


def _announce_claimable(conn: Session | sa.Connection) -> None:
    """Announce, on PostgreSQL, that a remote job may be claimed once this commits."""
    if _dialect(conn) == "postgresql":
        conn.execute(_ANNOUNCE_CLAIMABLE)


def _effects(change: Change, send: Send | None) -> None:
    if change.delay is not None and send is not None:
        _send(send, change.uuid, change.action, change.delay)
    # A start is counted (its queue lag), not logged: a line per job at its end is enough.
    if change.event != "started":
        state_log.state_change(
            change.uuid,
            change.action,
            change.actor,
            change.status,
            change.took,
            change.by,
            *change.details,
            level=logging.WARNING if change.event in _LOST else logging.INFO,
        )
    metrics.observe(change)


# A worker that stopped answering is worth a warning, whatever became of its job.
_LOST = ("rescued", "lost")


def _send(send: Send, uuid: str, action: str, delay_s: float) -> None:
    try:
        send(uuid, action, delay_s)
    except Exception:
        # The row is committed as "created": the sweeper sends it again once
        # nick_jobs.resend_grace has passed (or the next start-up, embedded).
        _log.exception("could not send job %s to the broker; it stays created", uuid)


def _seconds(since: dt.datetime | None, until: dt.datetime | None) -> float | None:
    return (until - since).total_seconds() if since is not None and until is not None else None


def _record(
    conn: Session | sa.Connection,
    uuid: str,
    event: str,
    by: str,
    attempt: int,
    now: dt.datetime,
    **data: Any,
) -> None:
    conn.execute(
        history.insert().values(
            job_uuid=uuid, time=now, event=event, by=by, attempt=attempt, data=data
        )
    )


def _rowcount(result: sa.Result[Any]) -> int:
    """The rows an INSERT, UPDATE or DELETE matched."""
    # A Session's execute is typed as returning a plain Result, yet for these statements
    # it is a CursorResult, whether a Session or a Connection ran them.
    return cast("sa.CursorResult[Any]", result).rowcount


def _a(word: str | None) -> str:
    return "An" if word and word[0] in "aeiou" else "A"


def _current_status(conn: Session | sa.Connection, uuid: str) -> str | None:
    return conn.execute(sa.select(jobs.c.status).where(jobs.c.uuid == uuid)).scalar_one_or_none()


def create(
    conn: Session | sa.Connection,
    *,
    action: str,
    params: dict[str, Any],
    actor: str,
    title: str,
    description: str,
    idempotency_key: str | None = None,
    action_version: int | None = None,
    guard: dict[str, Any] | None = None,
    send: Send | None = None,
) -> dict[str, Any]:
    """Insert a new ``created`` job and return its row as a dict; its message goes out
    through ``send`` once it has committed. ``action_version``: the remote action's
    version (:mod:`nick_jobs.jobs.remote_actions`), whose job no message is sent for.

    With ``guard`` (on PostgreSQL: the ``b_guard_*`` parameters of
    :func:`~nick_jobs.users.model.identity_holds`), the job is inserted only if the caller
    still holds that identity, checked in the same statement; :class:`GuardFailed` if not.
    """
    now = utcnow()
    values = _new_job(
        action, params, actor, title, description, idempotency_key, action_version, now
    )
    params = {f"b_{key}": value for key, value in values.items()}
    if _dialect(conn) == "postgresql":
        # The job and its "created" history row in one statement: one round trip. On
        # the session's connection (the session's transaction, begun by asking for it):
        # a Core statement needs none of the ORM's execution path.
        bind = conn.connection() if isinstance(conn, Session) else conn
        if guard is not None:
            statement, params = _GUARDED_CREATE_WITH_HISTORY, {**params, **guard}
        else:
            statement = _CREATE_WITH_HISTORY
        rows = bind.execute(statement, params).all()
        if not rows:
            raise GuardFailed("the caller's identity no longer holds; nothing was written")
        values["id"] = rows[0][0]
    else:
        if guard is not None:
            raise ValueError("a guarded create needs PostgreSQL")
        values["id"] = conn.execute(_CREATE, params).scalar_one()
        _record(conn, values["uuid"], "created", actor, 1, now)
    delay = _first_delay(action_version)
    _changed(conn, Change("created", values["uuid"], action, actor, CREATED, delay=delay), send)
    values["checkin_data"] = None  # the job's JSON reads it: none yet
    return values


def _new_job(
    action: str,
    params: dict[str, Any],
    actor: str,
    title: str,
    description: str,
    idempotency_key: str | None,
    action_version: int | None,
    now: dt.datetime,
) -> dict[str, Any]:
    """The columns of a new ``created`` job (its id is the database's)."""
    return {
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
        "action_version": action_version,
    }


def create_many(
    conn: Session | sa.Connection,
    new_jobs: Sequence[dict[str, Any]],
    *,
    actor: str,
    send: Send | None = None,
) -> list[dict[str, Any]]:
    """Insert several ``created`` jobs (each a dict of :func:`create`'s keyword
    arguments, ``actor`` apart) in the caller's transaction, and return their rows in
    the order given.

    The same statements whatever their number (on PostgreSQL one, which writes the jobs
    and their history rows; elsewhere two multi-row INSERTs), and one after-commit
    hook that sends every message and writes every log line: a bulk submit costs a few
    round trips, not a few per job.
    """
    now = utcnow()
    rows = [
        _new_job(
            job["action"],
            job["params"],
            actor,
            job["title"],
            job["description"],
            job.get("idempotency_key"),
            job.get("action_version"),
            now,
        )
        | {"checkin_data": None}
        for job in new_jobs
    ]
    if not rows:
        return rows
    bind = conn.connection() if isinstance(conn, Session) else conn
    if _dialect(bind) == "postgresql":
        ids = _insert_many_postgresql(bind, rows, actor, now)
    else:
        ids = _insert_many(bind, rows, actor, now)
    for row in rows:
        row["id"] = ids[row["uuid"]]
    changes = [
        Change(
            "created",
            row["uuid"],
            row["action"],
            actor,
            CREATED,
            delay=_first_delay(row["action_version"]),
        )
        for row in rows
    ]
    if any(_claimable_now(change) for change in changes):
        _announce_claimable(conn)
    after_commit(conn, functools.partial(_effects_of_many, changes, send))
    return rows


def _insert_many(
    bind: sa.Connection, rows: list[dict[str, Any]], actor: str, now: dt.datetime
) -> dict[str, int]:
    # One multi-row INSERT … RETURNING (SQLAlchemy's "insertmanyvalues"). The ids are
    # matched by uuid: asking for them in the rows' order makes SQLAlchemy insert one
    # row at a time where the database can't promise that order (SQLite).
    result = bind.execute(jobs.insert().returning(jobs.c.uuid, jobs.c.id), rows)
    ids = {row.uuid: row.id for row in result}
    created = {"time": now, "event": "created", "by": actor, "attempt": 1, "data": {}}
    bind.execute(history.insert(), [{"job_uuid": row["uuid"], **created} for row in rows])
    return ids


def _insert_many_postgresql(
    bind: sa.Connection, rows: list[dict[str, Any]], actor: str, now: dt.datetime
) -> dict[str, int]:
    # The columns that vary between the jobs travel as one JSON array: the statement's
    # text is short and always the same, so the driver and PostgreSQL prepare it once,
    # where a multi-row VALUES of 500 jobs has 9,000 parameters to convert every time.
    varying = [
        {"n": n, **{name: row[name] for name in _CREATE_MANY_VARYING}} for n, row in enumerate(rows)
    ]
    result = bind.execute(
        _CREATE_MANY_WITH_HISTORY, {"b_rows": varying, "b_actor": actor, "b_now": now}
    )
    return {row.uuid: row.id for row in result}


def _effects_of_many(changes: Sequence[Change], send: Send | None) -> None:
    for change in changes:
        _effects(change, send)


def _dialect(conn: Session | sa.Connection | sa.Engine) -> str:
    """The dialect's name of a ``Session``, ``Connection`` or ``Engine``."""
    bind = conn.get_bind() if isinstance(conn, Session) else conn
    return bind.dialect.name


_CREATE_COLUMNS = [
    *("uuid", "title", "description", "action", "params", "actor", "status", "created"),
    *("started", "finished", "result", "error", "attempt", "idempotency_key", "heartbeat"),
    *("enqueued", "action_version"),
]
_CREATE = (
    jobs.insert()
    .values({name: sa.bindparam(f"b_{name}") for name in _CREATE_COLUMNS})
    .returning(jobs.c.id)
)


# The same insert, of a row only when the caller's identity still holds.
_GUARDED_CREATE = (
    jobs.insert()
    .from_select(
        _CREATE_COLUMNS,
        sa.select(
            *(sa.bindparam(f"b_{name}", type_=jobs.c[name].type) for name in _CREATE_COLUMNS)
        ).where(identity_holds()),
    )
    .returning(jobs.c.id)
)


def _create_with_history(create: sa.Insert) -> sa.Select[Any]:
    new_job = create.returning(jobs.c.uuid, jobs.c.created, jobs.c.actor).cte("new_job")
    event = history.insert().from_select(
        ["job_uuid", "time", "event", "by", "attempt", "data"],
        sa.select(
            new_job.c.uuid,
            new_job.c.created,
            sa.literal("created", history.c.event.type),
            new_job.c.actor,
            sa.literal(1, history.c.attempt.type),
            sa.literal({}, history.c.data.type),
        ),
    )
    return sa.select(new_job.c.id, new_job.c.uuid).add_cte(event.cte("created_event"))


_CREATE_WITH_HISTORY = _create_with_history(_CREATE)

# create_many on PostgreSQL: the columns that differ from job to job, read from one
# jsonb array; the others are the same for every job of a bulk submit.
_CREATE_MANY_VARYING = (
    *("uuid", "title", "description", "action", "params", "idempotency_key"),
    "action_version",
)
_CREATE_MANY_ROWS = (
    sa.func.jsonb_to_recordset(sa.bindparam("b_rows", type_=jobs.c.params.type))
    .table_valued(
        *(sa.column(name, jobs.c[name].type) for name in _CREATE_MANY_VARYING),
        # Each row's place in the submit: the ids are given in that order.
        sa.column("n", sa.Integer()),
    )
    .render_derived(name="new_rows", with_types=True)
)
_CREATE_MANY_SAME = {
    "actor": sa.bindparam("b_actor", type_=jobs.c.actor.type),
    "status": sa.literal(CREATED, jobs.c.status.type),
    "created": sa.bindparam("b_now", type_=jobs.c.created.type),
    "result": sa.literal({}, jobs.c.result.type),
    "attempt": sa.literal(1, jobs.c.attempt.type),
    # The messages go out right after this commits; a sweeper re-sends them if not.
    "enqueued": sa.bindparam("b_now", type_=jobs.c.enqueued.type),
}
_CREATE_MANY = (
    jobs.insert()
    .from_select(
        [*_CREATE_MANY_VARYING, *_CREATE_MANY_SAME],
        sa.select(
            *(_CREATE_MANY_ROWS.c[name] for name in _CREATE_MANY_VARYING),
            *_CREATE_MANY_SAME.values(),
        ).order_by(_CREATE_MANY_ROWS.c.n),
    )
    .returning(jobs.c.id)
)
_CREATE_MANY_WITH_HISTORY = _create_with_history(_CREATE_MANY)
_GUARDED_CREATE_WITH_HISTORY = _create_with_history(_GUARDED_CREATE)


@dataclass(frozen=True)
class StartedJob:
    uuid: str
    action: str
    params: dict[str, Any]
    actor: str
    attempt: int
    started: dt.datetime
    # What the handler saved when the job was last stopped (None: start from scratch).
    checkpoint: Any = None
    # Since when it waited for this start: its creation for a first attempt, its retry,
    # rescue or hand-back for a later one (the queue-lag metric).
    queued_since: dt.datetime | None = None


# The worker's statements are built once: constructing them per call costs more Python
# time than executing them on a warm connection.
# What a worker needs of the job it starts.
_STARTED_COLUMNS = (
    jobs.c.action,
    jobs.c.params,
    jobs.c.actor,
    jobs.c.attempt,
    jobs.c.checkpoint,
    jobs.c.created,
    jobs.c.enqueued,
)
_START = (
    jobs.update()
    .where(
        jobs.c.uuid == sa.bindparam("b_uuid"),
        jobs.c.status == CREATED,
        # An automatic retry waits out its backoff, even if its message comes early.
        sa.or_(jobs.c.next_run.is_(None), jobs.c.next_run <= sa.bindparam("b_now")),
    )
    .values(
        status=RUNNING,
        started=sa.bindparam("b_now"),
        heartbeat=sa.bindparam("b_now"),
        next_run=None,
    )
    .returning(*_STARTED_COLUMNS)
)
_RUNNING_ATTEMPT = (
    jobs.c.uuid == sa.bindparam("b_uuid"),
    jobs.c.status == RUNNING,
    jobs.c.attempt == sa.bindparam("b_attempt"),
)


def _finishing(status: str, column: str | None, with_progress: bool) -> sa.Update:
    values: dict[str, Any] = {"status": status, "finished": sa.bindparam("b_now")}
    if column is not None:
        values[column] = sa.bindparam("b_value")
    if with_progress:
        # The attempt's last reported progress lands with its outcome, in one statement.
        values["progress"] = sa.bindparam("b_progress")
    # No RETURNING: the worker knows the job it finishes (StartedJob), and rows to fetch
    # cost the hottest statement about a fifth of its CPU.
    return jobs.update().where(*_RUNNING_ATTEMPT).values(values)


# status → (without progress, with progress)
_FINISH = {
    status: (_finishing(status, column, False), _finishing(status, column, True))
    for status, column in (("completed", "result"), ("failed", "error"), ("stopped", None))
}


class _Unchanged:
    def __repr__(self) -> str:
        return "UNCHANGED"


#: The ``progress`` of :func:`complete`, :func:`fail` and :func:`stopped` that leaves the
#: stored progress as it is.
UNCHANGED: Any = _Unchanged()

job_logs = table(JobLog)
# One row of parameters per line (executemany): built once, whatever the number of lines.
_INSERT_LINES = job_logs.insert()


def insert_lines(conn: Session | sa.Connection, lines: Sequence[dict[str, Any]]) -> None:
    """Add log lines (``job_logs`` rows as dicts) in ``conn``'s transaction."""
    if lines:
        conn.execute(_INSERT_LINES, list(lines))


def one_statement(conn: Session | sa.Connection | sa.Engine) -> bool:
    """Does a finishing statement with log lines run as one statement on ``conn`` (a
    ``Session``, ``Connection`` or ``Engine``)?

    On PostgreSQL it does (a data-modifying CTE), so autocommit is enough; elsewhere it
    is two, which the caller must put in one transaction.
    """
    return _dialect(conn) == "postgresql"


_WITH_LINES: dict[int, sa.Insert] = {}


def _with_lines(finishing: sa.Update) -> sa.Insert:
    """``finishing`` as a CTE whose ``RETURNING`` feeds the INSERT of the attempt's lines:
    the lines go in only when it matched, in the same statement (PostgreSQL)."""
    statement = _WITH_LINES.get(id(finishing))
    if statement is not None:
        return statement
    done = finishing.returning(jobs.c.uuid, jobs.c.attempt).cte("finished")
    # An INSERT's rowcount is read only when asked for: it says whether the UPDATE matched.
    statement = _lines_of(done, per_job=False).execution_options(preserve_rowcount=True)
    _WITH_LINES[id(finishing)] = statement
    return statement


def _lines_of(done: sa.CTE, per_job: bool) -> sa.Insert:
    """The INSERT of the log lines of the attempts ``done`` returns (its ``uuid`` and
    ``attempt``), from ``b_lines``, in the order given: every line for each of them, or
    with ``per_job`` each line for the job its ``uuid`` names. The lines are one JSON
    array: one parameter to adapt, however many lines."""
    lines = (
        sa.func.jsonb_array_elements(sa.bindparam("b_lines", type_=JSONB()))
        .table_valued(sa.column("line", JSONB()), with_ordinality="n")
        .render_derived(name="lines")
    )
    line = lines.c.line
    joined = line["uuid"].astext == done.c.uuid if per_job else sa.true()
    rows = (
        sa.select(
            done.c.uuid,
            done.c.attempt,
            line["time"].astext.cast(sa.DateTime(timezone=True)),
            line["level"].astext.cast(sa.SmallInteger()),
            line["message"].astext,
        )
        .select_from(done.join(lines, joined))
        .order_by(lines.c.n)  # ids in the order the lines were logged
    )
    columns = ["job_uuid", "attempt", "time", "level", "message"]
    return job_logs.insert().from_select(columns, rows)


def _finish(
    conn: Session | sa.Connection,
    job: StartedJob,
    finishing: sa.Update,
    params: dict[str, Any],
    progress: Any,
    lines: Sequence[dict[str, Any]],
    status: str,
    *details: tuple[str, Any],
) -> bool:
    """Run a finishing statement and, if it matched, its change; False if it did not."""
    if progress is not UNCHANGED:
        params["b_progress"] = progress
    bind = conn.connection() if isinstance(conn, Session) else conn
    if not lines:
        matched = bind.execute(finishing, params).rowcount == 1
    elif one_statement(conn):
        params["b_lines"] = [
            {"time": line["time"].isoformat(), "level": line["level"], "message": line["message"]}
            for line in lines
        ]
        # Lines were given, so rows were inserted exactly when the UPDATE matched.
        matched = bind.execute(_with_lines(finishing), params).rowcount > 0
    else:
        matched = bind.execute(finishing, params).rowcount == 1
        if matched:
            insert_lines(bind, lines)
    if matched:
        took = _seconds(job.started, params["b_now"])
        change = Change(status, job.uuid, job.action, job.actor, status, took=took)
        _changed(conn, _with_details(change, details) if details else change)
    return matched


def _with_details(change: Change, details: tuple[tuple[str, Any], ...]) -> Change:
    return dataclasses.replace(change, details=details)


def _finishing_params(job: StartedJob) -> dict[str, Any]:
    return {"b_uuid": job.uuid, "b_attempt": job.attempt, "b_now": utcnow()}


def start(
    conn: Session | sa.Connection, uuid: str, now: dt.datetime | None = None
) -> StartedJob | None:
    """``created → running``; None when the job is gone, aborted or already taken.

    A duplicate delivery of the same message, or a message for an aborted or deleted job,
    changes nothing here, which is what makes at-least-once delivery safe. ``now`` is the
    start's time, which :func:`own_start` recognises.
    """
    now = now or utcnow()
    row = conn.execute(_START, {"b_uuid": uuid, "b_now": now}).one_or_none()
    if row is None:
        return None
    job = _started(uuid, row, now)
    lag = max(_seconds(job.queued_since, now) or 0.0, 0.0)
    _changed(conn, Change("started", uuid, job.action, job.actor, RUNNING, lag=lag))
    return job


def own_start(conn: Session | sa.Connection, uuid: str, now: dt.datetime) -> StartedJob | None:
    """The job as :func:`start` at ``now`` started it, if it did; else None.

    A start whose commit went through but whose answer was lost with the connection
    looks, when tried again, like a job another worker took: the time it wrote, to the
    microsecond, tells the two apart.
    """
    row = conn.execute(
        sa.select(*_STARTED_COLUMNS).where(
            jobs.c.uuid == uuid, jobs.c.status == RUNNING, jobs.c.started == now
        )
    ).one_or_none()
    return None if row is None else _started(uuid, row, now)


def attempt_status(conn: Session | sa.Connection, uuid: str, attempt: int) -> str | None:
    """The status of the job if it is still at ``attempt``; None otherwise (or gone)."""
    return conn.execute(
        sa.select(jobs.c.status).where(jobs.c.uuid == uuid, jobs.c.attempt == attempt)
    ).scalar_one_or_none()


def _started(uuid: str, row: Any, now: dt.datetime) -> StartedJob:
    queued_since = row.created if row.attempt == 1 else (row.enqueued or row.created)
    return StartedJob(
        uuid,
        row.action,
        row.params or {},
        row.actor,
        row.attempt,
        now,
        row.checkpoint,
        queued_since,
    )


def complete(
    conn: Session | sa.Connection,
    job: StartedJob,
    result: dict[str, Any],
    progress: Any = UNCHANGED,
    lines: Sequence[dict[str, Any]] = (),
) -> bool:
    """``running → completed`` for the attempt ``job`` (as :func:`start` returned it);
    False if it was aborted meanwhile.

    ``progress``, when given, is stored by the same statement; ``lines`` (``job_logs``
    rows) are added only if it matched: see :func:`one_statement` for the transaction.
    """
    params = _finishing_params(job)
    params["b_value"] = result
    statement = _FINISH[COMPLETED][progress is not UNCHANGED]
    return _finish(conn, job, statement, params, progress, lines, COMPLETED)


def fail(
    conn: Session | sa.Connection,
    job: StartedJob,
    error_type: str,
    message: str,
    progress: Any = UNCHANGED,
    lines: Sequence[dict[str, Any]] = (),
    checkpoint: Any = None,
) -> bool:
    """``running → failed`` for the attempt ``job``; False if it was aborted meanwhile.

    ``progress`` and ``lines`` as for :func:`complete`. ``checkpoint``, when given (not
    None), is the last one the handler saved: stored with the failure, a failed job of a
    resumable action can be resumed from it (:func:`resume`). Without one, the stored
    checkpoint stays as it is.
    """
    params = _finishing_params(job)
    params["b_value"] = {"type": error_type, "message": message}
    if checkpoint is not None:
        params["b_checkpoint"] = checkpoint
    statement = _FAIL[(checkpoint is not None, progress is not UNCHANGED)]
    return _finish(conn, job, statement, params, progress, lines, FAILED, ("error", error_type))


# (with a checkpoint, with progress) → statement.
_FAIL = {
    (saved, with_progress): (
        _FINISH[FAILED][with_progress].values(checkpoint=sa.bindparam("b_checkpoint"))
        if saved
        else _FINISH[FAILED][with_progress]
    )
    for saved in (False, True)
    for with_progress in (False, True)
}


def heartbeat(conn: Session | sa.Connection, running: dict[str, int], now: dt.datetime) -> int:
    """Mark running jobs (uuid → attempt) as alive; one statement for a whole process.

    Fenced on the attempt: a leftover handler of an aborted attempt can't keep a retried
    job's heartbeat fresh while the worker running its new attempt is dead.
    """
    if not running:
        return 0
    pairs = list(running.items())
    return _rowcount(
        conn.execute(
            jobs.update()
            .where(sa.tuple_(jobs.c.uuid, jobs.c.attempt).in_(pairs), jobs.c.status == RUNNING)
            .values(heartbeat=now)
        )
    )


def is_current(conn: Session | sa.Connection, uuid: str, attempt: int) -> bool:
    """Is this attempt still the running one? (False once aborted, deleted or retried.)"""
    status = conn.execute(
        sa.select(jobs.c.status).where(jobs.c.uuid == uuid, jobs.c.attempt == attempt)
    ).scalar_one_or_none()
    return status == RUNNING


def abort(conn: Session | sa.Connection, uuid: str, by: str) -> None:
    """``created|running → aborted``.

    A running handler learns of it at its next check (it is no longer the current
    attempt) and stops; its late result can't land because finishing is fenced on status.
    """
    now = utcnow()
    row = conn.execute(
        jobs.update()
        .where(jobs.c.uuid == uuid, jobs.c.status.in_(ABORTABLE))
        .values(status=ABORTED, finished=now, next_run=None)
        .returning(jobs.c.attempt, jobs.c.action, jobs.c.actor, jobs.c.started)
    ).one_or_none()
    if row is None:
        status = _current_status(conn, uuid)
        raise TransitionRefused(status, f"{_a(status)} {status} job can't be aborted.")
    _record(conn, uuid, "aborted", by, row.attempt, now)
    took = _seconds(row.started, now)
    _changed(conn, Change("aborted", uuid, row.action, row.actor, ABORTED, by, took))


def retry(conn: Session | sa.Connection, uuid: str, by: str, send: Send | None = None) -> int:
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
            jobs.c.action,
            jobs.c.actor,
            jobs.c.action_version,
        ).where(jobs.c.uuid == uuid)
    ).one_or_none()
    if old is None or old.status not in RETRYABLE:
        status = old.status if old else None
        raise TransitionRefused(status, f"{_a(status)} {status} job can't be retried.")
    updated = _rowcount(
        conn.execute(
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
                # A retry starts from scratch, now: not from a stopped run's checkpoint, and
                # with none of the previous attempt's progress.
                checkpoint=sa.null(),
                progress=sa.null(),
                next_run=None,
            )
        )
    )
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
    delay = _first_delay(old.action_version)
    _changed(conn, Change("retried", uuid, old.action, old.actor, CREATED, by, delay=delay), send)
    attempt: int = old.attempt + 1
    return attempt


def delete(conn: Session | sa.Connection, uuid: str, by: str | None = None) -> None:
    """Remove a job that is not running, with its history and its log."""
    row = conn.execute(
        jobs.delete()
        .where(jobs.c.uuid == uuid, jobs.c.status != RUNNING)
        .returning(jobs.c.action, jobs.c.actor)
    ).one_or_none()
    if row is None:
        status = _current_status(conn, uuid)
        raise TransitionRefused(status, "A running job can't be deleted; abort it first.")
    conn.execute(history.delete().where(history.c.job_uuid == uuid))
    conn.execute(table(JobLog).delete().where(JobLog.job_uuid == uuid))
    _changed(conn, Change("deleted", uuid, row.action, row.actor, DELETED, by))


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
    # A remote action's job: its consumer let its lease run out.
    remote: bool = False
    # Its row's id: the rescues of a round lock their rows in this order.
    id: int = 0


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
        # A remote job's lease ends with its attempt.
        "lease_id": None,
        # A new attempt starts with no progress: the last one's would show until its first
        # report. (A resume keeps it: the job goes on from its checkpoint.)
        "progress": sa.null(),
    }


def lost_jobs(
    conn: Session | sa.Connection,
    lease_s: float,
    now: dt.datetime,
    limit: int = DEFAULT_RECOVERY_BATCH,
) -> list[LostJob]:
    """Running jobs whose heartbeat is older than ``lease_s`` seconds (oldest first).

    A row without a heartbeat (started before heartbeats existed) counts from its start.
    """
    cutoff = now - dt.timedelta(seconds=lease_s)
    stale = sa.or_(
        jobs.c.heartbeat < cutoff,
        sa.and_(
            jobs.c.heartbeat.is_(None),
            sa.or_(jobs.c.started.is_(None), jobs.c.started < cutoff),
        ),
    )
    # A remote job's lease is its action's, renewed by each check-in of its consumer.
    lapsed = sa.and_(jobs.c.action_version.is_not(None), jobs.c.lease_expires < now)
    remote = jobs.c.action_version.is_not(None)
    rows = conn.execute(
        sa.select(
            jobs.c.uuid,
            jobs.c.action,
            jobs.c.attempt,
            jobs.c.heartbeat,
            jobs.c.started,
            remote.label("remote"),
            jobs.c.id,
        )
        .where(jobs.c.status == RUNNING, sa.or_(sa.and_(_MESSAGED, stale), lapsed))
        # The longest silent first, the same on every database (which put NULLs at
        # different ends), ties in a fixed order: the batch a sweep takes when more are
        # lost than its limit.
        .order_by(sa.func.coalesce(jobs.c.heartbeat, jobs.c.started).nulls_first(), jobs.c.id)
        .limit(limit)
    ).all()
    return [
        LostJob(r.uuid, r.action, r.attempt, r.heartbeat, r.started, bool(r.remote), r.id)
        for r in rows
    ]


def _lost_fence(job: LostJob) -> tuple[sa.ColumnElement[bool], ...]:
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


def rescue(
    conn: Session | sa.Connection,
    job: LostJob,
    retry: bool,
    lease_s: float,
    now: dt.datetime,
    send: Send | None = None,
) -> bool:
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
    if job.remote:
        error["message"] = (
            "The consumer holding this job did not check in before its lease ran out."
        )
    details = (("error", error["type"]),)
    if not retry:
        row = conn.execute(
            jobs.update()
            .where(*_lost_fence(job))
            .values(status=FAILED, finished=now, error=error)
            .returning(jobs.c.actor)
        ).one_or_none()
        if row is None:
            return False
        took = _seconds(job.started, now)
        change = Change("lost", job.uuid, job.action, row.actor, FAILED, SWEEPER, took)
        _changed(conn, _with_details(change, details))
        return True
    row = conn.execute(
        jobs.update()
        .where(*_lost_fence(job))
        .values(_as_new_attempt(job.attempt, now))
        .returning(jobs.c.actor)
    ).one_or_none()
    if row is None:
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
    delay = None if job.remote else 0.0  # a remote job waits for a consumer's claim
    change = Change("rescued", job.uuid, job.action, row.actor, CREATED, SWEEPER, delay=delay)
    _changed(conn, _with_details(change, details), send)
    return True


@dataclass
class Rescued:
    """What :func:`rescue_lost` did: the jobs created again (sent once committed), and
    those it failed."""

    retried: list[tuple[str, str]]  # (uuid, action)
    failed: list[str]


def rescue_lost(
    conn: Session | sa.Connection,
    lease_s: float,
    now: dt.datetime,
    max_retries: Callable[[str], int] | None = None,
    limit: int = DEFAULT_RECOVERY_BATCH,
    send: Send | None = None,
) -> Rescued:
    """Rescue the running jobs whose heartbeat is older than ``lease_s`` seconds.

    A job whose action allows another attempt goes back to ``created`` as a new attempt,
    to be sent again; any other fails with error type ``WorkerLost``. As for automatic
    retries, ``max_retries(action)`` (None: no retries) counts the attempts of the current
    series, since the job's creation or its latest manual retry or resume: the lost
    attempt is the series' ``n``-th, and another is allowed while ``n <= max_retries``.
    """
    out = Rescued([], [])
    # The longest lost first (lost_jobs' order) are chosen; rescued in the order of their
    # ids, which is the order a batch complete locks rows in (leased_many).
    for job in sorted(lost_jobs(conn, lease_s, now, limit), key=lambda lost: lost.id):
        allowed = max_retries(job.action) if max_retries is not None else 0
        first = functools.partial(series_start, conn, job.uuid)
        retry = retry_number(job.attempt, allowed, first) is not None
        if rescue(conn, job, retry, lease_s, now, send):
            if retry:
                out.retried.append((job.uuid, job.action))
            else:
                out.failed.append(job.uuid)
    return out


def _first_delay(action_version: int | None) -> float | None:
    """The ``delay`` of a change that makes a job ``created``: its message at once, or
    none for a remote action's job, which a consumer claims (see :data:`_MESSAGED`)."""
    return 0.0 if action_version is None else None


# The jobs that go to the broker: a remote action's job (it has the action's version)
# waits to be claimed by a consumer instead.
_MESSAGED = jobs.c.action_version.is_(None)


def stale_created(
    conn: Session | sa.Connection,
    grace_s: float,
    now: dt.datetime,
    limit: int = DEFAULT_RECOVERY_BATCH,
    waiting: int = 0,
    send: Send | None = None,
) -> list[tuple[str, str]]:
    """Send again, once committed, the created jobs last sent more than ``grace_s``
    seconds ago; return them as ``(uuid, action)``.

    ``waiting`` is how many messages the job queue holds, not yet delivered. The queue
    delivers in the order messages were sent, so those are at most the last ``waiting``
    sends: the jobs sent last are taken as queued, however long ago that was, and only
    the older ones as lost. A backlog of messages older than the grace is then not sent
    a second time while it drains.

    Their ``enqueued`` moves to ``now`` in the same conditional statement, so each is
    returned (to be sent again) once per grace period, however many sweepers ask.
    """
    grace_ago = now - dt.timedelta(seconds=grace_s)
    cutoff: dt.datetime | None = grace_ago
    if waiting > 0:
        # When the newest of the sends that may still be queued went out. A delayed
        # retry's enqueued is its future delivery: its message is not in the queue yet.
        queued_since = conn.execute(
            sa.select(jobs.c.enqueued)
            .where(jobs.c.status == CREATED, _MESSAGED, jobs.c.enqueued <= now)
            .order_by(jobs.c.enqueued.desc())
            .offset(waiting - 1)
            .limit(1)
        ).scalar()
        # None: no more created jobs than queued messages, each may have its own.
        cutoff = None if queued_since is None else min(grace_ago, queued_since)
    # A job with no enqueued time (from before the column, or written by hand) is stale.
    stale: sa.ColumnElement[bool] = jobs.c.enqueued.is_(None)
    if cutoff is not None:
        stale = sa.or_(jobs.c.enqueued < cutoff, stale)
    stale = sa.and_(_MESSAGED, stale)
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
    stale_jobs = [(r.uuid, r.action) for r in sorted(rows, key=lambda r: r.id)]
    if send is not None:
        after_commit(conn, functools.partial(_send_all, stale_jobs, send))
    return stale_jobs


def send_waiting(conn: Session | sa.Connection, send: Send, now: dt.datetime | None = None) -> int:
    """Send every ``created`` job (the embedded queue lives in memory: what waited when
    its process stopped is sent again when it starts); a duplicate is a harmless no-op.

    A job waiting out the backoff of an automatic retry is sent delayed until its
    ``next_run``. Returns how many were sent.
    """
    waiting = conn.execute(
        sa.select(jobs.c.uuid, jobs.c.action, jobs.c.next_run)
        .where(jobs.c.status == CREATED, _MESSAGED)
        .order_by(jobs.c.id)
    ).all()
    now = now or utcnow()
    for uuid, action, next_run in waiting:
        delay = max((next_run - now).total_seconds(), 0.0) if next_run is not None else 0.0
        _send(send, uuid, action, delay)
    return len(waiting)


def _send_all(waiting: list[tuple[str, str]], send: Send) -> None:
    for uuid, action in waiting:
        _send(send, uuid, action, 0.0)


WORKER_STOPPED = {
    "type": "WorkerStopped",
    "message": "The worker stopped before the job finished; it runs again.",
}


def hand_back(
    conn: Session | sa.Connection,
    uuid: str,
    attempt: int,
    now: dt.datetime | None = None,
    error: dict[str, str] | None = None,
    send: Send | None = None,
    by: str = WORKER,
    started: dt.datetime | None = None,
) -> bool:
    """``running → created`` as a new attempt, for a job its worker gives up: it is
    stopping (``error`` :data:`WORKER_STOPPED`, the default), or the database lost the
    handler's writes with its connection; or a remote job its consumer releases (``by``
    its login), which gets no message: another consumer claims it.

    Fenced on the attempt the worker runs: if the job finished, was aborted or was
    rescued meanwhile, nothing changes. Returns whether the job was handed back.
    """
    now = now or utcnow()
    row = conn.execute(
        jobs.update()
        .where(jobs.c.uuid == uuid, jobs.c.status == RUNNING, jobs.c.attempt == attempt)
        .values(_as_new_attempt(attempt, now))
        .returning(jobs.c.action, jobs.c.actor, jobs.c.action_version)
    ).one_or_none()
    if row is None:
        return False
    error = error or WORKER_STOPPED
    _record(
        conn,
        uuid,
        "handed back",
        by,
        attempt + 1,
        now,
        previous_attempt=_previous_attempt(attempt, started, now, error),
    )
    delay = _first_delay(row.action_version)
    change = Change("handed back", uuid, row.action, row.actor, CREATED, by, delay=delay)
    _changed(conn, _with_details(change, (("error", error["type"]),)), send)
    return True


# --- control: automatic retries, stop and resume, restart with lineage -------------------

STOPPED = JobStatus.STOPPED.value
RESTARTABLE = tuple(s.value for s in FINISHED_STATUSES)
# The history events that begin a new series of attempts: an action's max_retries counts
# the attempts since the latest of them (or since the job was created).
SERIES_EVENTS = ("retried", "resumed")
STOP_REQUESTED = "stop requested"


def retry_number(attempt: int, max_retries: int, first_of_series: Callable[[], int]) -> int | None:
    """Which automatic retry (1, 2, ...) the failed or lost ``attempt`` would get, or None
    when its action's ``max_retries`` are spent.

    ``max_retries`` counts the attempts since the series began (the job's creation, or
    its latest manual retry or resume): ``first_of_series()`` (:func:`series_start`) is
    asked only when the attempt number alone can't tell.
    """
    if max_retries <= 0:
        return None
    position = attempt
    if position > max_retries:
        position -= first_of_series() - 1
    return position if position <= max_retries else None


def series_start(conn: Session | sa.Connection, uuid: str) -> int:
    """The first attempt of the job's current series: the attempt the latest manual
    retry or resume made, else 1. Read only when an attempt beyond ``max_retries`` fails
    or loses its worker."""
    first = conn.execute(
        sa.select(sa.func.max(history.c.attempt)).where(
            history.c.job_uuid == uuid, history.c.event.in_(SERIES_EVENTS)
        )
    ).scalar()
    return first or 1


def retry_later(
    conn: Session | sa.Connection,
    uuid: str,
    attempt: int,
    started: dt.datetime | None,
    error: tuple[str, str],
    next_run: dt.datetime,
    now: dt.datetime | None = None,
    lines: Sequence[dict[str, Any]] = (),
    send: Send | None = None,
) -> bool:
    """``running → created`` as the next attempt, which may not start before ``next_run``;
    its message goes out once committed, for the broker to deliver at ``next_run``.

    An automatic retry of a failed attempt: fenced on status and attempt like ``fail``,
    and the failed attempt's outcome goes to the history (event ``retry scheduled``),
    with its last log ``lines`` (``job_logs`` rows). Run it in a transaction.
    ``enqueued`` is ``next_run``, when the broker delivers the delayed message, so a
    sweeper re-sends it only once its grace has passed after that.
    Returns False when the attempt was aborted (or retried, deleted) meanwhile.
    """
    now = now or utcnow()
    values = _as_new_attempt(attempt, now)
    values.update(next_run=next_run, enqueued=next_run)
    row = conn.execute(
        jobs.update()
        .where(jobs.c.uuid == uuid, jobs.c.status == RUNNING, jobs.c.attempt == attempt)
        .values(values)
        .returning(jobs.c.action, jobs.c.actor)
    ).one_or_none()
    if row is None:
        return False
    failure = {"type": error[0], "message": error[1]}
    _record(
        conn,
        uuid,
        "retry scheduled",
        WORKER,
        attempt + 1,
        now,
        previous_attempt=_previous_attempt(attempt, started, now, failure),
        next_run=next_run.isoformat(),
    )
    insert_lines(conn, lines)
    change = Change(
        "retry scheduled",
        uuid,
        row.action,
        row.actor,
        CREATED,
        WORKER,
        took=_seconds(started, now),
        delay=max((next_run - now).total_seconds(), 0.0),
        details=(("error", error[0]), ("next_run", next_run.isoformat())),
    )
    _changed(conn, change, send)
    return True


def request_stop(conn: Session | sa.Connection, uuid: str, by: str) -> None:
    """Ask a running job to stop at its handler's next check; it stays ``running``.

    One conditional ``INSERT ... SELECT``: a ``stop requested`` history row for the
    running attempt, made only while the job runs that attempt, and only once (asking
    again is not an error). The worker running the job polls for it, see :func:`watch`.
    """
    now = utcnow()
    asked = sa.exists().where(
        history.c.job_uuid == jobs.c.uuid,
        history.c.attempt == jobs.c.attempt,
        history.c.event == STOP_REQUESTED,
    )
    request = sa.select(
        jobs.c.uuid,
        sa.bindparam("b_time", now, type_=history.c.time.type),
        sa.bindparam("b_event", STOP_REQUESTED, type_=history.c.event.type),
        sa.bindparam("b_by", by, type_=history.c.by.type),
        jobs.c.attempt,
        sa.bindparam("b_data", {}, type_=history.c.data.type),
    ).where(jobs.c.uuid == uuid, jobs.c.status == RUNNING, ~asked)
    columns = ["job_uuid", "time", "event", "by", "attempt", "data"]
    if _rowcount(conn.execute(history.insert().from_select(columns, request))) == 1:
        return
    status = _current_status(conn, uuid)
    if status != RUNNING:
        raise TransitionRefused(status, f"{_a(status)} {status} job can't be stopped.")


def watch(conn: Session | sa.Connection, running: dict[str, int]) -> tuple[set[str], set[str]]:
    """Of the jobs a process runs (uuid → attempt), one query: which are no longer that
    running attempt (aborted, deleted, retried, rescued), and which were asked to stop."""
    if not running:
        return set(), set()
    asked = sa.exists().where(
        history.c.job_uuid == jobs.c.uuid,
        history.c.attempt == jobs.c.attempt,
        history.c.event == STOP_REQUESTED,
    )
    rows = conn.execute(
        sa.select(jobs.c.uuid, asked.label("stop")).where(
            sa.tuple_(jobs.c.uuid, jobs.c.attempt).in_(list(running.items())),
            jobs.c.status == RUNNING,
        )
    ).all()
    gone = set(running) - {r.uuid for r in rows}
    return gone, {r.uuid for r in rows if r.stop}


# (has a checkpoint, with progress) → statement. A job stopped before it saved any
# checkpoint gets SQL NULL, not JSON null: a resume starts it from scratch.
_STOP = {
    (saved, with_progress): _FINISH[STOPPED][with_progress].values(
        checkpoint=sa.bindparam("b_checkpoint") if saved else sa.null()
    )
    for saved in (False, True)
    for with_progress in (False, True)
}


def stopped(
    conn: Session | sa.Connection,
    job: StartedJob,
    checkpoint: Any,
    progress: Any = UNCHANGED,
    lines: Sequence[dict[str, Any]] = (),
) -> bool:
    """``running → stopped`` for the attempt ``job``, keeping the handler's ``checkpoint``.

    False if the attempt was aborted (or retried, deleted) meanwhile. ``progress`` and
    ``lines`` as for :func:`complete`.
    """
    params = _finishing_params(job)
    if checkpoint is not None:
        params["b_checkpoint"] = checkpoint
    statement = _STOP[(checkpoint is not None, progress is not UNCHANGED)]
    return _finish(conn, job, statement, params, progress, lines, STOPPED)


def resume(
    conn: Session | sa.Connection,
    uuid: str,
    by: str,
    send: Send | None = None,
    failed: bool = False,
) -> tuple[int, str]:
    """``stopped → created`` as the next attempt, keeping the checkpoint for the handler.

    With ``failed`` (the caller knows the job's action is resumable), also
    ``failed → created`` for a failed job that saved a checkpoint: the new attempt starts
    from it, as from a stopped job's. A failed job without one is refused: it is retried.

    One conditional UPDATE fenced on the attempt it replaces; a ``resumed`` history row,
    with that attempt's times (and a failed one's error), begins a new series of
    attempts. Returns the new attempt and the job's action.
    """
    now = utcnow()
    resumable = jobs.c.status == STOPPED
    if failed:
        from_failure = sa.and_(jobs.c.status == FAILED, jobs.c.checkpoint.is_not(None))
        resumable = sa.or_(resumable, from_failure)
    # The replaced attempt's times, which the UPDATE clears: the history keeps them.
    previous = conn.execute(
        sa.select(
            jobs.c.attempt, jobs.c.status, jobs.c.started, jobs.c.finished, jobs.c.error
        ).where(jobs.c.uuid == uuid, resumable)
    ).one_or_none()
    row = None
    if previous is not None:
        row = conn.execute(
            jobs.update()
            .where(jobs.c.uuid == uuid, jobs.c.attempt == previous.attempt, resumable)
            .values(
                status=CREATED,
                attempt=jobs.c.attempt + 1,
                started=None,
                finished=None,
                result={},
                error=None,
                heartbeat=None,
                enqueued=now,
                next_run=None,
            )
            .returning(jobs.c.attempt, jobs.c.action, jobs.c.actor, jobs.c.action_version)
        ).one_or_none()
    if previous is None or row is None:
        raise _resume_refused(conn, uuid, failed)
    replaced = {
        "attempt": previous.attempt,
        "status": previous.status,
        "started": previous.started.isoformat() if previous.started else None,
        "finished": previous.finished.isoformat() if previous.finished else None,
        "result": {},
        "error": previous.error if previous.status == FAILED else None,
    }
    _record(conn, uuid, "resumed", by, row.attempt, now, previous_attempt=replaced)
    delay = _first_delay(row.action_version)
    _changed(conn, Change("resumed", uuid, row.action, row.actor, CREATED, by, delay=delay), send)
    return row.attempt, row.action


def _resume_refused(conn: Session | sa.Connection, uuid: str, failed: bool) -> TransitionRefused:
    current = conn.execute(
        sa.select(jobs.c.status, jobs.c.checkpoint.is_(None).label("no_checkpoint")).where(
            jobs.c.uuid == uuid
        )
    ).one_or_none()
    status = current.status if current is not None else None
    if status == FAILED and failed and current is not None and current.no_checkpoint:
        message = "This failed job saved no checkpoint to resume from; retry it instead."
    elif status == FAILED and not failed:
        message = "A failed job of this action can't be resumed; retry it instead."
    else:
        message = f"{_a(status)} {status} job can't be resumed."
    return TransitionRefused(status, message)


def restart(
    conn: Session | sa.Connection, uuid: str, by: str, send: Send | None = None
) -> dict[str, Any]:
    """A new job made from a finished one: same action, title, description and params,
    submitted by ``by``, with ``parent`` naming the old job, which does not change."""
    old = conn.execute(
        sa.select(
            jobs.c.status,
            jobs.c.action,
            jobs.c.params,
            jobs.c.title,
            jobs.c.description,
            jobs.c.action_version,
        ).where(jobs.c.uuid == uuid)
    ).one_or_none()
    if old is None or old.status not in RESTARTABLE:
        status = old.status if old else None
        raise TransitionRefused(status, f"{_a(status)} {status} job can't be restarted.")
    job = create(
        conn,
        action=old.action,
        params=old.params or {},
        actor=by,
        title=old.title,
        description=old.description,
        # A remote action's job is made again under the version the old one had.
        action_version=old.action_version,
        send=send,
    )
    # Through create, so the new row gets whatever a submitted job gets; then its parent.
    conn.execute(jobs.update().where(jobs.c.id == job["id"]).values(parent=uuid))
    job["parent"] = uuid
    return job


# --- remote jobs: claimed, checked in and finished by consumers over HTTP -------------
#
# A consumer claims created jobs of remote actions (nick_jobs.jobs.remote_actions) and
# holds each with a lease it renews by checking in. Finishing is the Python worker's
# complete/fail/stopped, once the lease is found to be the job's; a lease not renewed in
# time is rescued by the sweeper as a lost worker's job is (lost_jobs).

#: How many created jobs a claim looks at for each one it may take, where the claims
#: are checked in Python (not on PostgreSQL): those whose claim window keeps them for
#: other consumers are passed over.
CLAIM_SCAN = 4


@dataclass(frozen=True)
class RemoteAction:
    """What a claim needs of a remote action (nick_jobs.jobs.remote_actions)."""

    name: str
    lease: int
    claim_window: int


class LeaseRefused(Exception):
    """The lease is not the running job's (wrong, expired and rescued, or the job ended)."""

    def __init__(self, status: str | None) -> None:
        super().__init__(status)
        self.status = status


def claim(
    conn: Session | sa.Connection,
    actions: Sequence[RemoteAction],
    consumer: str,
    claims: dict[str, str],
    limit: int,
    now: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """``created → running`` for up to ``limit`` created jobs of ``actions``, oldest
    first, each with a new lease held by ``consumer``; returns their rows.

    On PostgreSQL all of them are taken by one statement, an UPDATE of the candidates it
    reads ``FOR UPDATE SKIP LOCKED``; elsewhere each by a conditional UPDATE of its own.
    Either way concurrent consumers never get the same job. A job submitted with
    ``claims`` goes only to a consumer presenting them all, for its action's
    ``claim_window`` seconds after it was created (:func:`_claims_allow`).
    """
    now = now or utcnow()
    by_name = {action.name: action for action in actions}
    if not by_name or limit < 1:
        return []
    if _dialect(conn) == "postgresql":
        claimed = _claim_postgresql(conn, by_name, consumer, claims, limit, now)
    else:
        claimed = _claim_each(conn, by_name, consumer, claims, limit, now)
    if claimed:
        changes = [_started_change(job, consumer, now) for job in claimed]
        after_commit(conn, functools.partial(_effects_of_many, changes, None))
    return claimed


def _started_change(job: dict[str, Any], consumer: str, now: dt.datetime) -> Change:
    """The change of a job a claim took: it waited since its creation, or since it was
    made ``created`` again (retried, rescued, handed back) for a later attempt."""
    queued_since = job["created"] if job["attempt"] == 1 else job["enqueued"]
    waited = _seconds(queued_since, now)
    return Change(
        "started", job["uuid"], job["action"], job["actor"], RUNNING, consumer,
        lag=None if waited is None else max(waited, 0.0),
    )  # fmt: skip


def _claimable(now: dt.datetime) -> tuple[sa.ColumnElement[bool], ...]:
    """What makes a job one a claim may take, whoever the consumer."""
    return (
        jobs.c.status == CREATED,
        jobs.c.action_version.is_not(None),
        sa.or_(jobs.c.next_run.is_(None), jobs.c.next_run <= now),
    )


def _claim_each(
    conn: Session | sa.Connection,
    by_name: dict[str, RemoteAction],
    consumer: str,
    claims: dict[str, str],
    limit: int,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """The candidates read, then each taken by a conditional UPDATE of its own."""
    query = (
        sa.select(jobs.c.id, jobs.c.action, jobs.c.params, jobs.c.created)
        .where(jobs.c.action.in_(list(by_name)), *_claimable(now))
        .order_by(jobs.c.id)
        .limit(limit * CLAIM_SCAN)
    )
    claimed: list[dict[str, Any]] = []
    for row in conn.execute(query).all():
        if len(claimed) == limit:
            break
        action = by_name[row.action]
        if not _claims_allow(row.params, row.created, action.claim_window, claims, now):
            continue
        taken = (
            conn.execute(
                jobs.update()
                .where(jobs.c.id == row.id, jobs.c.status == CREATED)
                .values(
                    status=RUNNING,
                    # Never before its creation: a look whose clock was read before the
                    # job's commit may still see it.
                    started=max(now, row.created),
                    heartbeat=now,
                    next_run=None,
                    worker=consumer,
                    # 122 random bits (uuid4 reads os.urandom), as hex.
                    lease_id=uuidlib.uuid4().hex,
                    lease_expires=now + dt.timedelta(seconds=action.lease),
                    checkin_data=sa.null(),
                )
                .returning(*jobs.c)
            )
            .mappings()
            .one_or_none()
        )
        if taken is None:
            continue  # another consumer's, taken since it was read
        claimed.append(dict(taken))
    return claimed


# A job's claims, as PostgreSQL reads them: NULL when its params are no object or have
# no "claims" (``->`` gives NULL where subscripting would fail on an array).
_WANTED = jobs.c.params.op("->", return_type=JSONB())(sa.literal_column("'claims'"))
# The claims that are none to Python (``not wanted``) besides an empty object, which any
# offer contains: JSON null, false, 0, "" and [] (a number equal to 0, as 0.0, is 0).
_NO_CLAIMS = tuple(
    sa.literal_column(f"'{value}'::jsonb", JSONB()) for value in ("null", "false", "0", '""', "[]")
)


def _per_action(values: dict[str, dt.datetime]) -> sa.ColumnElement[Any]:
    """``values[jobs.action]``: one parameter when all the actions share it, else a CASE."""
    distinct = set(values.values())
    if len(distinct) == 1:
        return sa.literal(distinct.pop(), jobs.c.created.type)
    return sa.case(
        {name: sa.literal(value, jobs.c.created.type) for name, value in values.items()},
        value=jobs.c.action,
    )


def _claim_postgresql(
    conn: Session | sa.Connection,
    by_name: dict[str, RemoteAction],
    consumer: str,
    claims: dict[str, str],
    limit: int,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """One statement: the oldest candidates the claims allow, read ``FOR UPDATE SKIP
    LOCKED`` (a job another claim holds is passed over, not waited for), taken by the
    UPDATE they feed."""
    window_start = {
        name: now - dt.timedelta(seconds=action.claim_window) for name, action in by_name.items()
    }
    expires = {name: now + dt.timedelta(seconds=action.lease) for name, action in by_name.items()}
    allowed = sa.or_(
        _WANTED.is_(None),
        _WANTED.in_(_NO_CLAIMS),
        # The window is over: now >= created + claim_window.
        jobs.c.created <= _per_action(window_start),
        # Every claim offered with its value; an empty object is contained in any offer.
        _WANTED.op("<@", is_comparison=True)(sa.literal(claims, JSONB())),
    )
    candidates = (
        sa.select(jobs.c.id)
        .where(jobs.c.action.in_(list(by_name)), *_claimable(now), allowed)
        .order_by(jobs.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("candidates")
    )
    # The candidates' ids as one array, read once: the UPDATE finds each by its primary
    # key. (A join with the CTE was planned on the statistics of the created jobs, which
    # lag a burst of them: with 10,000 waiting, a claim of 50 compared each of the 50
    # with every created job, 500,000 comparisons, 100 ms.)
    chosen = sa.cast(
        sa.select(sa.func.array_agg(candidates.c.id)).scalar_subquery(),
        ARRAY(sa.BigInteger()),
    )
    statement = (
        jobs.update()
        # Still created: each is locked since the candidates read it so.
        .where(jobs.c.id == sa.any_(chosen))
        .values(
            status=RUNNING,
            # Never before its creation: a look whose clock was read before the job's
            # commit may still see it.
            started=sa.func.greatest(sa.literal(now, sa.DateTime(timezone=True)), jobs.c.created),
            heartbeat=now,
            next_run=None,
            worker=consumer,
            # 122 random bits, as hex: what uuid4().hex gives the other databases.
            lease_id=sa.func.replace(sa.cast(sa.func.gen_random_uuid(), sa.Text), "-", ""),
            lease_expires=_per_action(expires),
            checkin_data=sa.null(),
        )
        .returning(*jobs.c)
    )
    bind = conn.connection() if isinstance(conn, Session) else conn
    rows = [dict(row) for row in bind.execute(statement).mappings()]
    # RETURNING promises no order: oldest first, as the candidates were read.
    rows.sort(key=lambda row: row["id"])
    return rows


def _claims_allow(
    params: Any, created: dt.datetime, window_s: int, offered: dict[str, str], now: dt.datetime
) -> bool:
    """Whether a job whose params are ``params`` may go to a consumer offering
    ``offered``: it has no claims (none, or a value that is false in Python: ``{}``,
    ``[]``, ``""``, ``0``, ``false``, ``null``), its window is over, or the offer holds
    each of its claims with the same value. Claims of any other shape (only a job not
    made through a submit can have them) are held by no offer until the window is over.
    ``_claim_postgresql`` says the same in SQL."""
    wanted = params.get("claims") if isinstance(params, dict) else None
    if not wanted or now >= created + dt.timedelta(seconds=window_s):
        return True
    if not isinstance(wanted, dict):
        return False
    return all(key in offered and offered[key] == value for key, value in wanted.items())


def leased(conn: Session | sa.Connection, uuid: str, lease_id: str) -> StartedJob:
    """The running job ``uuid`` whose lease is ``lease_id``, locked for the rest of the
    transaction; :class:`LeaseRefused` with its status otherwise."""
    query = sa.select(
        jobs.c.status,
        jobs.c.lease_id,
        jobs.c.action,
        jobs.c.params,
        jobs.c.actor,
        jobs.c.attempt,
        jobs.c.started,
        jobs.c.checkpoint,
    ).where(jobs.c.uuid == uuid)
    if _dialect(conn) == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).one_or_none()
    if row is None or row.status != RUNNING or row.lease_id != lease_id:
        raise LeaseRefused(row.status if row is not None else None)
    return StartedJob(
        uuid, row.action, row.params or {}, row.actor, row.attempt, row.started, row.checkpoint
    )


def leased_many(
    conn: Session | sa.Connection, leases: Sequence[tuple[str, str]]
) -> dict[str, StartedJob | LeaseRefused]:
    """For each ``(uuid, lease_id)`` (the uuids distinct), the running job the lease
    holds, as :func:`leased` finds it, or the :class:`LeaseRefused` it would raise.

    One query for the running jobs, which on PostgreSQL locks them for the rest of the
    transaction in the order of their ids, as the sweeper's rescues do: two batches, or
    a batch and a rescue, never wait for each other in a cycle. A job no longer running
    is not locked (a prune may be deleting it): a second query, only when some are,
    reads their statuses.
    """
    if not leases:
        return {}
    uuids = [uuid for uuid, _ in leases]
    query = (
        sa.select(
            jobs.c.uuid,
            jobs.c.status,
            jobs.c.lease_id,
            jobs.c.action,
            jobs.c.params,
            jobs.c.actor,
            jobs.c.attempt,
            jobs.c.started,
            jobs.c.checkpoint,
        )
        .where(jobs.c.uuid.in_(uuids), jobs.c.status == RUNNING)
        .order_by(jobs.c.id)
    )
    if _dialect(conn) == "postgresql":
        query = query.with_for_update()
    # On the session's connection (its transaction): a Core query needs none of the ORM.
    bind = conn.connection() if isinstance(conn, Session) else conn
    rows = {row.uuid: row for row in bind.execute(query)}
    others = [uuid for uuid in uuids if uuid not in rows]
    statuses: dict[str, str] = {}
    if others:
        query_others = sa.select(jobs.c.uuid, jobs.c.status).where(jobs.c.uuid.in_(others))
        statuses = {row.uuid: row.status for row in bind.execute(query_others)}
    found: dict[str, StartedJob | LeaseRefused] = {}
    for uuid, lease_id in leases:
        row = rows.get(uuid)
        if row is None:
            found[uuid] = LeaseRefused(statuses.get(uuid))
        elif row.lease_id != lease_id:
            found[uuid] = LeaseRefused(RUNNING)
        else:
            found[uuid] = StartedJob(
                uuid,
                row.action,
                row.params or {},
                row.actor,
                row.attempt,
                row.started,
                row.checkpoint,
            )
    return found


@dataclass(frozen=True)
class Completion:
    """One job for :func:`complete_many`: what :func:`complete` takes."""

    job: StartedJob
    result: dict[str, Any]
    progress: Any = UNCHANGED
    lines: Sequence[dict[str, Any]] = ()


def complete_many(conn: Session | sa.Connection, done: Sequence[Completion]) -> set[str]:
    """:func:`complete` for each of ``done`` (distinct jobs), with the same effects;
    returns the uuids of those completed (an attempt aborted or retried meanwhile is not).

    On PostgreSQL one statement finishes them all and adds their log lines; elsewhere
    each is completed by :func:`complete`. Run it in a transaction.
    """
    if not done:
        return set()
    if _dialect(conn) != "postgresql":
        return {
            item.job.uuid
            for item in done
            if complete(conn, item.job, item.result, item.progress, item.lines)
        }
    now = utcnow()
    items = []
    for item in done:
        values: dict[str, Any] = {
            "uuid": item.job.uuid,
            "attempt": item.job.attempt,
            "result": item.result,
        }
        if item.progress is not UNCHANGED:
            # Wrapped, so that a progress of None stays JSON null as complete stores it.
            values["progress"] = {"value": item.progress}
        items.append(values)
    lines = [
        {
            "uuid": item.job.uuid,
            "time": line["time"].isoformat(),
            "level": line["level"],
            "message": line["message"],
        }
        for item in done
        for line in item.lines
    ]
    bind = conn.connection() if isinstance(conn, Session) else conn
    params = {"b_items": items, "b_lines": lines, "b_now": now}
    matched = set(bind.execute(_COMPLETE_MANY, params).scalars())
    changes = [
        Change(
            COMPLETED,
            item.job.uuid,
            item.job.action,
            item.job.actor,
            COMPLETED,
            took=_seconds(item.job.started, now),
        )
        for item in done
        if item.job.uuid in matched
    ]
    if changes:
        after_commit(conn, functools.partial(_effects_of_many, changes, None))
    return matched


def _complete_many() -> sa.Select[Any]:
    """complete_many's statement on PostgreSQL: the jobs, each fenced on its running
    attempt as :func:`complete` is, finished from one JSON array (``uuid``, ``attempt``,
    ``result`` and, when it changes, ``progress``), and the log lines of those it
    finished added from another, in the order given; it returns their uuids."""
    items = (
        sa.func.jsonb_to_recordset(sa.bindparam("b_items", type_=JSONB()))
        .table_valued(
            sa.column("uuid", jobs.c.uuid.type),
            sa.column("attempt", jobs.c.attempt.type),
            sa.column("result", JSONB()),
            sa.column("progress", JSONB()),
        )
        .render_derived(name="items", with_types=True)
    )
    progress = items.c.progress.op("->", return_type=JSONB())(sa.literal_column("'value'"))
    finished = (
        jobs.update()
        .where(
            jobs.c.uuid == items.c.uuid,
            jobs.c.status == RUNNING,
            jobs.c.attempt == items.c.attempt,
        )
        .values(
            status=COMPLETED,
            finished=sa.bindparam("b_now", type_=jobs.c.finished.type),
            result=items.c.result,
            progress=sa.case((items.c.progress.is_(None), jobs.c.progress), else_=progress),
        )
        .returning(jobs.c.uuid, jobs.c.attempt)
        .cte("finished")
    )
    added = _lines_of(finished, per_job=True).cte("finished_lines")
    return sa.select(finished.c.uuid).add_cte(added)


_COMPLETE_MANY = _complete_many()


def stop_requested(conn: Session | sa.Connection, job: StartedJob) -> bool:
    """Whether the running attempt ``job`` was asked to stop (:func:`request_stop`)."""
    return conn.execute(
        sa.select(
            sa.exists().where(
                history.c.job_uuid == job.uuid,
                history.c.attempt == job.attempt,
                history.c.event == STOP_REQUESTED,
            )
        )
    ).scalar_one()


def checkin(
    conn: Session | sa.Connection,
    job: StartedJob,
    lease_s: int,
    progress: Any = UNCHANGED,
    lines: Sequence[dict[str, Any]] = (),
    data: Any = UNCHANGED,
    now: dt.datetime | None = None,
) -> dt.datetime:
    """Renew the lease of ``job`` (found by :func:`leased` in this transaction) for
    ``lease_s`` seconds from now, storing its progress, log lines and check-in data;
    returns when the lease now runs out."""
    now = now or utcnow()
    expires = now + dt.timedelta(seconds=lease_s)
    values: dict[str, Any] = {"heartbeat": now, "lease_expires": expires}
    if progress is not UNCHANGED:
        values["progress"] = progress
    if data is not UNCHANGED:
        values["checkin_data"] = data
    conn.execute(jobs.update().where(*_running(job)).values(values))
    insert_lines(conn, lines)
    return expires


def _running(job: StartedJob) -> tuple[sa.ColumnElement[bool], ...]:
    return (jobs.c.uuid == job.uuid, jobs.c.status == RUNNING, jobs.c.attempt == job.attempt)
