"""Running one job: claim the row, call the action's handler, store the outcome.

This is the worker's hot path. It uses SQLAlchemy Core on a bare connection, one
``UPDATE ... RETURNING`` per transition and two commits per job (start, finish), because
on these machines the commit is the ceiling and the ORM would cost most of the budget.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import marshmallow
import sqlalchemy as sa
from dramatiq.middleware.time_limit import TimeLimitExceeded
from sqlalchemy.orm import Session

from nick_jobs.db import lost_connection
from nick_jobs.db.after_commit import transaction
from nick_jobs.db.meta import utcnow
from nick_jobs.jobs import lifecycle
from nick_jobs.jobs.actions import ActionRegistry
from nick_jobs.worker import reporting
from nick_jobs.worker.interrupts import Interrupts

log = logging.getLogger(__name__)

# A write the database could not take because it was away is tried again after these
# waits, doubling from the first to the last, until it goes through.
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0


def _log_failure(exc: Exception, message: str) -> None:
    """A database that is away is one line each time; anything else its stack trace."""
    if lost_connection(exc):
        log.warning("%s: %s", message, str(exc).splitlines()[0])
    else:
        log.exception(message)


# What a job handed back because the database lost its handler's writes says.
WRITES_LOST = {
    "type": "DatabaseUnavailable",
    "message": "The database connection was lost before the job's writes were committed; "
    "it runs again.",
}


class JobAborted(Exception):
    """Raised inside a handler when its job was aborted, deleted or retried meanwhile.

    A handler may catch it to clean up; it should then return or re-raise.
    """


class JobInterrupted(JobAborted):
    """Raised in the thread of an aborted job's handler that did not stop within its
    action's ``abort_grace``: the worker interrupts it."""


class JobStopped(Exception):
    """Raised inside a handler when its job was asked to stop (``POST .../stop``).

    The job becomes ``stopped`` with the last checkpoint the handler saved through
    ``ctx.checkpoint(data)``; a resume calls the handler again with it in
    ``ctx.saved_checkpoint``. A handler may catch it to save a last checkpoint, then
    re-raise.
    """


class JobFailed(Exception):
    """Raised by a handler to fail its job with a clear message and no stack trace logged."""

    def __init__(self, message: str, error_type: str = "JobFailed") -> None:
        super().__init__(message)
        self.error_type = error_type


class JobContext:
    """What a handler gets besides its params: who, a database session, abort checks,
    and the progress, steps and log lines it reports (see :mod:`nick_jobs.worker.reporting`)."""

    # How stale the handler's view of "am I aborted?" may get. A check costs a query,
    # so a handler that checks in a tight loop is answered from this cache.
    CHECK_INTERVAL_S = 0.5
    # How often at most the reported progress and log lines of a job are written.
    REPORT_INTERVAL_S = 1.0

    def __init__(
        self,
        engine: sa.Engine,
        uuid: str,
        actor: str,
        attempt: int,
        log_copy_rate: int = reporting.LOG_COPY_RATE,
    ) -> None:
        self.uuid = uuid
        self.actor = actor
        self.attempt = attempt
        self._engine = engine
        # Lines a second copied to the process log (reporting.LogCopy).
        self._log_copy_rate = log_copy_rate
        self._session: Session | None = None
        self._last_check = time.monotonic()
        self._aborted = False
        # Made at the first report: a job that reports nothing costs nothing.
        self._report: reporting.Report | None = None

    @property
    def dbsession(self) -> Session:
        """A session for the handler's own work; it commits with the job's completion."""
        if self._session is None:
            self._session = Session(bind=self._engine, expire_on_commit=False)
        return self._session

    def check(self) -> None:
        """Raise :class:`JobAborted` if the job should stop. Cheap to call often."""
        if self._aborted:
            raise JobAborted(self.uuid)
        if self._stop_requested:
            raise JobStopped(self.uuid)
        now = time.monotonic()
        report = self._report
        gone = report is not None and report.gone
        if now - self._last_check < self.CHECK_INTERVAL_S and not gone:
            return
        self._last_check = now
        try:
            with self._engine.connect() as conn:
                current = lifecycle.is_current(conn, self.uuid, self.attempt)
        except (sa.exc.DBAPIError, sa.exc.TimeoutError) as exc:
            if not lost_connection(exc):
                raise
            # The database is away: the handler goes on. The watcher tells it of an
            # abort once the database answers again.
            log.warning("job %s: could not check for an abort: %s", self.uuid, exc)
            return
        if not current:
            self._aborted = True
            raise JobAborted(self.uuid)
        if report is not None and gone:
            report.gone = False

    def _reporter(self) -> reporting.Report:
        if self._report is None:
            self._report = reporting.Report(
                self._engine, self.uuid, self.attempt, self.REPORT_INTERVAL_S, self._log_copy_rate
            )
        return self._report

    def steps(self, names: list[str]) -> None:
        """Announce the steps to come, in order; each shows as ``pending`` until started."""
        self._reporter().plan(list(names))
        self.check()

    def step(self, name: str, done: float | None = None, total: float | None = None) -> None:
        """Start or update the step ``name`` (``done`` of ``total``), then check for abort.

        Starting a step ends the one running before it; a step whose ``done`` reaches its
        ``total`` is done.
        """
        self._reporter().step(name, done, total, None)
        self.check()

    def progress(
        self,
        done: float,
        total: float | None = None,
        message: str = "",
        step: str | None = None,
    ) -> None:
        """Report ``done`` of ``total`` on ``step`` (by default the running one, or a
        step named ``main``), with an optional status message; then check for abort."""
        self._reporter().step(step, done, total, message or None)
        self.check()

    def message(self, text: str) -> None:
        """Set the job's short status message, then check for abort."""
        self._reporter().set_message(text)
        self.check()

    def log(self, message: str, level: str | int = "info") -> None:
        """Add a line to the job's log (``debug``, ``info``, ``warning`` or ``error``); it is
        copied to the process log too, up to ``nick_jobs.job_log_copy_rate`` lines a second."""
        number = reporting.level_number(level)
        self._reporter().add_line(number, message)
        self.check()

    def debug(self, message: str) -> None:
        self.log(message, "debug")

    def info(self, message: str) -> None:
        self.log(message, "info")

    def warning(self, message: str) -> None:
        self.log(message, "warning")

    def error(self, message: str) -> None:
        self.log(message, "error")

    def sleep(self, seconds: float) -> None:
        """Sleep, checking for abort at least every :attr:`CHECK_INTERVAL_S`."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(remaining, self.CHECK_INTERVAL_S))
            self.check()

    def end_report(self) -> None:
        """Write what the handler reported and was not written yet; idempotent.

        Called by :meth:`_close` when the attempt ends; after :meth:`_take_report` (the
        runner's finish) there is nothing left for it to write.
        """
        if self._report is not None:
            self._report.close()

    def _take_report(self) -> reporting.Final | None:
        """End the periodic writes and hand over what is left, for the finishing UPDATE."""
        return self._report.take_final() if self._report is not None else None

    def _close(self, commit: bool) -> None:
        if self._session is not None:
            if commit:
                self._session.commit()
            else:
                self._session.rollback()
            self._session.close()
            self._session = None
        self.end_report()

    # --- stop and resume --------------------------------------------------------------

    #: What the handler saved with :meth:`checkpoint` when the job was last stopped (or
    #: failed): where a resumed job continues from. None for a job that starts from scratch.
    saved_checkpoint: Any = None
    _checkpoint: Any = None
    _stop_requested = False  # set by the runner's watcher; the next check raises

    def checkpoint(self, data: Any) -> None:
        """Remember where the handler is (any JSON value); costs nothing but memory.

        If the job is stopped, or fails, the last checkpoint is stored with it, and a
        resume gives it back as :attr:`saved_checkpoint`. (Not on a failure of a handler
        that wrote through :attr:`dbsession`: the failure rolls those writes back.)
        """
        self._checkpoint = data


def _storable(checkpoint: Any) -> bool:
    try:
        json.dumps(checkpoint, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _stopped_outcome(checkpoint: Any) -> tuple[str, Any]:
    try:
        json.dumps(checkpoint, allow_nan=False)
    except (TypeError, ValueError) as exc:
        message = f"The job's checkpoint can't be stored as JSON: {exc}"
        return (lifecycle.FAILED, (type(exc).__name__, message))
    return (lifecycle.STOPPED, checkpoint)


def _as_result(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    result: dict[str, Any] = value if isinstance(value, dict) else {"value": value}
    # Refuse what the API could not serialise later; NaN and Infinity are not JSON (and
    # PostgreSQL's jsonb rejects them at the UPDATE, which would leave the job running).
    json.dumps(result, allow_nan=False)
    return result


class _ThreadConnections:
    """One autocommit connection per worker thread, kept between jobs.

    Each transition is a single statement, so autocommit makes it its own transaction
    without BEGIN/COMMIT round trips, and keeping the connection skips the pool's
    checkout ping on every job. A connection that failed is dropped and reopened.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.local = threading.local()

    def get(self) -> sa.Connection:
        conn = getattr(self.local, "conn", None)
        if conn is None or conn.closed or conn.invalidated:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self.local.conn = conn
        return conn

    def discard(self) -> None:
        conn = getattr(self.local, "conn", None)
        self.local.conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    @contextlib.contextmanager
    def use(self) -> Iterator[sa.Connection]:
        try:
            yield self.get()
        except sa.exc.DBAPIError:
            self.discard()  # whatever state it is in, the next job gets a fresh one
            raise

    @contextlib.contextmanager
    def transaction(self, needed: bool = True) -> Iterator[sa.Connection]:
        """The thread's connection inside one explicit ``BEGIN`` … ``COMMIT`` when
        ``needed`` (several statements that commit together); else autocommit, where a
        single statement is its own transaction without those two round trips."""
        with self.use() as conn:
            if not needed:
                yield conn
                return
            with transaction(conn):
                yield conn


class Heartbeats:
    """Keeps the ``heartbeat`` of the jobs this process runs fresh.

    One thread and one UPDATE per interval for the whole process, however many jobs run:
    nothing is added to the per-job path.
    """

    def __init__(self, engine: sa.Engine, interval_s: float) -> None:
        self.engine = engine
        self.interval_s = interval_s
        self.running: dict[str, int] = {}  # uuid → attempt
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def add(self, uuid: str, attempt: int) -> None:
        with self.lock:
            self.running[uuid] = attempt
            if self.thread is None and self.interval_s > 0:
                self.thread = threading.Thread(
                    target=self._loop, name="nick-jobs-heartbeat", daemon=True
                )
                self.thread.start()

    def remove(self, uuid: str) -> None:
        with self.lock:
            self.running.pop(uuid, None)

    def beat(self) -> int:
        with self.lock:
            running = dict(self.running)
        if not running:
            return 0
        with self.engine.begin() as conn:
            return lifecycle.heartbeat(conn, running, utcnow())

    def _loop(self) -> None:
        while True:
            time.sleep(self.interval_s)
            try:
                self.beat()
            except Exception as exc:
                # The jobs' heartbeats catch up at the first beat the database takes; the
                # sweeper waits a lease after an outage before it reads them.
                _log_failure(exc, "could not refresh job heartbeats; trying again")


@dataclass(eq=False)
class _Watched:
    attempt: int
    ctx: JobContext
    grace_s: float
    gone_since: float | None = None  # monotonic time the abort was seen
    interrupted: float | None = None


class Watcher:
    """Learns of aborts and stop requests for every job this process runs.

    One thread and one query per interval (:attr:`interval_s`) for all of them, and none
    while the process runs nothing. A job that no longer runs its attempt (aborted,
    deleted, retried, rescued) has its context told, so the handler's next check raises
    :class:`JobAborted`; if the handler is still running ``abort_grace`` seconds later,
    ``interrupts`` (the :class:`~nick_jobs.worker.interrupts.Interrupts` middleware) interrupts
    its thread with :class:`JobInterrupted`. A job asked to stop has its context told, so
    the next check raises :class:`JobStopped`.
    """

    def __init__(
        self, engine: sa.Engine, interval_s: float = 0.5, interrupts: Interrupts | None = None
    ) -> None:
        self.engine = engine
        self.interval_s = interval_s
        self.interrupts = interrupts if interrupts is not None else Interrupts()
        self.jobs: dict[str, _Watched] = {}
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def add(self, uuid: str, attempt: int, ctx: JobContext, grace_s: float) -> _Watched:
        """Watch a job whose handler is about to run."""
        entry = _Watched(attempt, ctx, grace_s)
        with self.lock:
            self.jobs[uuid] = entry
            if self.thread is None and self.interval_s > 0:
                self.thread = threading.Thread(
                    target=self._loop, name="nick-jobs-watcher", daemon=True
                )
                self.thread.start()
        return entry

    def remove(self, uuid: str) -> None:
        with self.lock:
            self.jobs.pop(uuid, None)

    def poll(self) -> None:
        """One round: one query, then tell contexts and interrupt overdue handlers."""
        with self.lock:
            watched = {uuid: entry.attempt for uuid, entry in self.jobs.items()}
        if not watched:
            return
        with self.engine.connect() as conn:
            gone, stopping = lifecycle.watch(conn, watched)
        now = time.monotonic()
        with self.lock:
            for uuid in stopping:
                entry = self.jobs.get(uuid)
                if entry is not None and entry.attempt == watched[uuid]:
                    entry.ctx._stop_requested = True
            for uuid in gone:
                entry = self.jobs.get(uuid)
                if entry is None or entry.attempt != watched[uuid]:
                    continue
                entry.ctx._aborted = True
                if entry.gone_since is None:
                    entry.gone_since = now
                overdue = now - entry.gone_since >= entry.grace_s
                # Again after each further grace period, in case the handler caught it.
                again = entry.interrupted is None or now - entry.interrupted >= max(
                    entry.grace_s, 1.0
                )
                if overdue and again and self.interrupts.interrupt(uuid, JobInterrupted):
                    log.warning(
                        "job %s was aborted %.1f s ago and its handler still runs; interrupting it",
                        uuid,
                        now - entry.gone_since,
                    )
                    entry.interrupted = now

    def _loop(self) -> None:
        while True:
            time.sleep(self.interval_s)
            try:
                self.poll()
            except Exception as exc:
                _log_failure(exc, "could not poll for aborted and stopped jobs; trying again")


class JobRunner:
    """Runs jobs by uuid: the Dramatiq actor's function.

    ``heartbeat_interval_s`` is ``nick_jobs.heartbeat_interval`` (0: no heartbeats) and
    ``abort_check_interval_s`` is ``nick_jobs.abort_check_interval``, how often the
    :class:`Watcher` looks for aborts and stop requests. :attr:`interrupts` is the
    middleware that interrupts overdue handlers; the app's broker has it
    (``nick_jobs.worker.broker``).
    """

    def __init__(
        self,
        engine: sa.Engine,
        actions: ActionRegistry,
        heartbeat_interval_s: float = 10.0,
        abort_check_interval_s: float = 0.5,
        log_copy_rate: int = reporting.LOG_COPY_RATE,
        interrupts: Interrupts | None = None,
    ) -> None:
        if not abort_check_interval_s > 0:
            raise ValueError("the abort check interval must be > 0")
        self.engine = engine
        self.actions = actions
        # nick_jobs.job_log_copy_rate: each job's lines a second copied to the process log.
        self.log_copy_rate = log_copy_rate
        self.connections = _ThreadConnections(engine)
        self.heartbeats = Heartbeats(engine, heartbeat_interval_s)
        self.interrupts = interrupts if interrupts is not None else Interrupts()
        self.watcher = Watcher(engine, abort_check_interval_s, self.interrupts)
        # How a job created again (an automatic retry, a hand-back) is sent, once that
        # has committed; the queue sets it. Without it, the sweeper sends the job once
        # its grace is over.
        self.send: lifecycle.Send | None = None
        # The jobs this process holds (started, not yet ended in the database), each with
        # an event set once its outcome is written: what a redelivery of its message waits
        # for.
        self._held: dict[str, threading.Event] = {}
        self._held_lock = threading.Lock()

    def __call__(self, uuid: str) -> None:
        self.run(uuid)

    def running(self) -> dict[str, int]:
        """The jobs this process is running now: uuid → attempt."""
        with self.heartbeats.lock:
            return dict(self.heartbeats.running)

    def run(self, uuid: str) -> str | None:
        """Run job ``uuid`` if it is still waiting; return the status it ended in.

        Its transitions are written whatever the database's state: one that can't reach
        it is tried again (:meth:`_persist`) until it goes through, while the job's
        heartbeat is kept, so a database restart costs the job time, not its outcome.
        """
        now = utcnow()
        job = self._persist(uuid, "start", lambda retried: self._start(uuid, now, retried))
        if job is None:
            held = self._held.get(uuid)
            if held is not None:
                # Redelivered while this process runs it (the broker lost the connection
                # the first delivery came on): acknowledged only once the outcome is
                # written, so the message is never gone before the job is done.
                log.warning("job %s runs in this process; its redelivery waits for it", uuid)
                while not held.wait(1.0):  # a wait a time limit can interrupt
                    pass
                return None
            log.info("job %s is not waiting to run (duplicate, aborted or deleted)", uuid)
            return None
        with self._held_lock:
            self._held[uuid] = threading.Event()
        self.heartbeats.add(uuid, job.attempt)
        try:
            return self._run(job)
        except JobAborted:
            # An interruption that landed just after the handler returned: the job was
            # aborted, and nothing is left to store.
            return lifecycle.ABORTED
        finally:
            self.watcher.remove(uuid)
            self.heartbeats.remove(uuid)
            with self._held_lock:
                held = self._held.pop(uuid, None)
            if held is not None:
                held.set()

    def _start(self, uuid: str, now: dt.datetime, retried: bool) -> lifecycle.StartedJob | None:
        with self.connections.use() as conn:
            job = lifecycle.start(conn, uuid, now)
            if job is None and retried:
                # The start that failed may have committed before its answer was lost.
                job = lifecycle.own_start(conn, uuid, now)
        return job

    def _persist(self, uuid: str, what: str, write: Callable[[bool], Any]) -> Any:
        """``write(retried)``, tried again with a growing wait while the database can't
        be reached, until it goes through; what it returns.

        ``retried`` tells the write that an earlier try may have committed before its
        answer was lost, so it checks for its own effect. Any other error is raised.
        """
        wait, tries = RETRY_FIRST_S, 0
        while True:
            try:
                try:
                    result = write(tries > 0)
                except (sa.exc.DBAPIError, sa.exc.TimeoutError) as exc:
                    if not lost_connection(exc):
                        raise
                    tries += 1
                    log.warning(
                        "job %s: could not write its %s, the database is unreachable (%s); "
                        "trying again in %.1f s",
                        uuid,
                        what,
                        str(exc).splitlines()[0],
                        wait,
                    )
                    time.sleep(wait)
                    wait = min(wait * 2, RETRY_MAX_S)
                    continue
            except TimeLimitExceeded:
                # The action's time limit is the handler's, which has returned: its
                # outcome still goes in (the write may have been cut, so it checks).
                tries += 1
                log.warning("job %s: its time limit passed while its %s waited", uuid, what)
                continue
            if tries:
                log.info("job %s: wrote its %s after %d failed tries", uuid, what, tries)
            return result

    def _run(self, job: lifecycle.StartedJob) -> str | None:
        uuid = job.uuid
        action = self.actions.get(job.action)
        ctx = JobContext(self.engine, job.uuid, job.actor, job.attempt, self.log_copy_rate)
        ctx.saved_checkpoint = ctx._checkpoint = job.checkpoint
        outcome: tuple[str, Any]
        try:
            if action is None:
                raise LookupError(f"no job action named {job.action!r} is registered")
            # "scheduled_job" names the scheduled job that created it: not a param either.
            params = {k: v for k, v in job.params.items() if k not in ("action", "scheduled_job")}
            self.watcher.add(uuid, job.attempt, ctx, action.abort_grace)
            with self.interrupts.handler(uuid):
                value = action.handler(action.load_params(params), ctx)
            outcome = (lifecycle.COMPLETED, _as_result(value))
        except JobStopped:
            outcome = _stopped_outcome(ctx._checkpoint)
        except JobAborted:
            ctx._close(commit=False)
            log.info("job %s stopped: it was aborted", uuid)
            return lifecycle.ABORTED
        except TimeLimitExceeded:
            outcome = (
                lifecycle.FAILED,
                ("TimeLimitExceeded", "The job ran past its time limit."),
            )
        except marshmallow.ValidationError as exc:
            outcome = (lifecycle.FAILED, ("ValidationError", json.dumps(exc.messages)))
        except JobFailed as exc:
            outcome = (lifecycle.FAILED, (exc.error_type, str(exc)))
        except Exception as exc:
            log.exception("job %s (%s) failed", uuid, job.action)
            outcome = (lifecycle.FAILED, (type(exc).__name__, str(exc) or type(exc).__name__))
        return self._finish(job, ctx, outcome)

    def _finish(self, job: lifecycle.StartedJob, ctx: JobContext, outcome: tuple[str, Any]) -> str:
        status, payload = outcome
        # What the handler reported and was not written yet goes with the outcome: its
        # progress in the finishing UPDATE, its log lines in the same transaction. So a job
        # costs the worker two commits, start and finish, however much it reported.
        final = ctx._take_report()
        pending = final  # not written yet: cleared once it went with a committed outcome
        # A failure keeps the handler's last checkpoint, for a resume to start from
        # (docs/control.md): unless the handler wrote through its session, whose writes a
        # failure rolls back, so that its checkpoint would be ahead of what was stored.
        checkpoint = ctx._checkpoint
        if ctx._session is not None or checkpoint is None or not _storable(checkpoint):
            checkpoint = None
        # When the handler used its session, the completion (or the stop, with its
        # checkpoint) rides on the same transaction: the handler's writes and the new
        # status commit together, or not at all.
        finished: bool | None = None
        if status != lifecycle.FAILED and ctx._session is not None:
            try:
                finished = self._store(ctx._session, job, status, payload, final)
                ctx._close(commit=finished)
                if finished:
                    pending = None
            except Exception as exc:
                with contextlib.suppress(Exception):
                    ctx._close(commit=False)
                if lost_connection(exc):
                    # The connection went with the handler's uncommitted writes, and the
                    # handler can't write them again: unless the commit went through
                    # before the answer was lost, the job runs again as a new attempt.
                    log.warning(
                        "job %s (%s): the database connection was lost before its writes "
                        "committed: %s",
                        job.uuid,
                        job.action,
                        str(exc).splitlines()[0],
                    )
                    ended = self._persist(
                        job.uuid, "outcome", lambda _: self._writes_lost(job, status)
                    )
                    finished = ended is not None
                    if ended == status:
                        pending = None  # they went with the outcome
                    status = ended or lifecycle.ABORTED
                else:
                    # The handler's writes can't commit (e.g. it swallowed a failed flush):
                    # fail the job rather than leave it running with nobody to finish it.
                    log.exception(
                        "job %s (%s): its writes could not be committed", job.uuid, job.action
                    )
                    # The details (SQL, parameters) go to the log only, not to the job's error.
                    status = lifecycle.FAILED
                    payload = (
                        type(exc).__name__,
                        "The job's database writes could not be committed.",
                    )
        if finished is None:
            ctx._close(commit=False)
            retry_at = None
            if status == lifecycle.FAILED:
                retry_at = self._persist(job.uuid, "retry", lambda _: self._retry_at(job, payload))
            try:
                if retry_at is not None:
                    finished = self._persist(
                        job.uuid,
                        "retry",
                        lambda retried: self._retry_later(job, payload, retry_at, final, retried),
                    )
                    status = lifecycle.CREATED
                else:
                    finished = self._persist(
                        job.uuid,
                        "outcome",
                        lambda retried: self._write_outcome(
                            job, status, payload, final, retried, checkpoint
                        ),
                    )
                if finished:
                    pending = None
            except sa.exc.DataError:
                # The database refused the outcome itself (PostgreSQL's jsonb takes no NUL
                # character): store a failure it accepts rather than leave the job running.
                log.exception("job %s (%s): its outcome could not be stored", job.uuid, job.action)
                status = lifecycle.FAILED
                refused = ("DataError", "The database refused the job's outcome.")
                finished = self._persist(
                    job.uuid,
                    "outcome",
                    lambda retried: self._write_outcome(job, status, refused, None, retried),
                )
        if pending is not None and ctx._report is not None:
            # The outcome did not take them (the attempt was aborted meanwhile, or its
            # outcome was refused): the last lines of an attempt are kept all the same.
            ctx._report.write_final(pending)
        if not finished:
            log.info("job %s was aborted while running; its outcome is dropped", job.uuid)
            return lifecycle.ABORTED
        return status

    def _write_outcome(
        self,
        job: lifecycle.StartedJob,
        status: str,
        payload: Any,
        final: reporting.Final | None,
        retried: bool,
        checkpoint: Any = None,
    ) -> bool:
        # One statement on PostgreSQL; elsewhere the lines are a second one.
        several = final is not None and bool(final.lines)
        several = several and not lifecycle.one_statement(self.engine)
        with self.connections.transaction(needed=several) as conn:
            if self._store(conn, job, status, payload, final, checkpoint):
                return True
            # A try whose commit went through before its answer was lost finds its own
            # outcome there, not a job aborted meanwhile.
            return retried and lifecycle.attempt_status(conn, job.uuid, job.attempt) == status

    def _writes_lost(self, job: lifecycle.StartedJob, status: str) -> str | None:
        """After the handler's transaction lost its connection: ``status`` if it committed
        all the same, ``created`` if the job was handed back to run again, None if it was
        aborted meanwhile."""
        with self.connections.transaction() as conn:
            current = lifecycle.attempt_status(conn, job.uuid, job.attempt)
            if current == status:
                return status
            if lifecycle.hand_back(conn, job.uuid, job.attempt, error=WRITES_LOST, send=self.send):
                handed = True
            else:
                # A try whose commit went through before its answer was lost: the job's
                # message goes out with the sweeper's next round.
                handed = lifecycle.attempt_status(conn, job.uuid, job.attempt + 1) is not None
        return lifecycle.CREATED if handed else None

    @staticmethod
    def _store(
        conn: sa.Connection | Session,
        job: lifecycle.StartedJob,
        status: str,
        payload: Any,
        final: reporting.Final | None = None,
        checkpoint: Any = None,
    ) -> bool:
        """The statement that ends the attempt as ``status``, with the attempt's last
        progress, and its last log lines if it matched; False if it was aborted.

        A failure stores ``checkpoint`` too, when given (the handler's last one)."""
        progress: Any = lifecycle.UNCHANGED
        lines: Sequence[dict[str, Any]] = ()
        if final is not None:
            lines = final.lines
            if final.progress is not None:
                progress = final.progress
        if status == lifecycle.COMPLETED:
            return lifecycle.complete(conn, job, payload, progress, lines)
        if status == lifecycle.STOPPED:
            return lifecycle.stopped(conn, job, payload, progress, lines)
        error_type, message = payload
        return lifecycle.fail(conn, job, error_type, message, progress, lines, checkpoint)

    def _retry_at(self, job: lifecycle.StartedJob, error: tuple[str, str]) -> dt.datetime | None:
        """When the failed attempt runs again, or None when no automatic retry is left.

        ``max_retries`` counts the attempts since the series began (the job's creation,
        or its latest manual retry or resume); the history is read only when the attempt
        number alone can't tell.
        """
        action = self.actions.get(job.action)
        if action is None or error[0] == "ValidationError":
            return None  # retrying params that no longer load can't help

        def first_of_series() -> int:
            with self.connections.use() as conn:
                return lifecycle.series_start(conn, job.uuid)

        position = lifecycle.retry_number(job.attempt, action.max_retries, first_of_series)
        if position is None:
            return None
        wait_ms = math.ceil(action.backoff(position) * 1000)
        return utcnow() + dt.timedelta(milliseconds=wait_ms)

    def _retry_later(
        self,
        job: lifecycle.StartedJob,
        error: tuple[str, str],
        next_run: dt.datetime,
        final: reporting.Final | None = None,
        retried: bool = False,
    ) -> bool:
        # The new attempt, the history row of the failed one and the failed attempt's last
        # log lines: one transaction. (Its progress goes: the new attempt starts without.)
        with self.connections.transaction() as conn:
            lines = final.lines if final is not None else ()
            done = lifecycle.retry_later(
                conn,
                job.uuid,
                job.attempt,
                job.started,
                error,
                next_run,
                lines=lines,
                send=self.send,
            )
            if not done and retried:
                # The try that failed may have committed before its answer was lost; its
                # message then goes out with the sweeper's round after next_run.
                done = lifecycle.attempt_status(conn, job.uuid, job.attempt + 1) is not None
        return done
