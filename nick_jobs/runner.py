"""Running one job: claim the row, call the action's handler, store the outcome.

This is the worker's hot path. It uses SQLAlchemy Core on a bare connection, one
``UPDATE ... RETURNING`` per transition and two commits per job (start, finish), because
on these machines the commit is the ceiling and the ORM would cost most of the budget.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from typing import Any

import marshmallow
import sqlalchemy as sa
from dramatiq.middleware.time_limit import TimeLimitExceeded
from sqlalchemy.orm import Session

from . import transitions
from .actions import ActionRegistry
from .models import utcnow

log = logging.getLogger(__name__)


class JobAborted(Exception):
    """Raised inside a handler when its job was aborted, deleted or retried meanwhile.

    A handler may catch it to clean up; it should then return or re-raise.
    """


class JobFailed(Exception):
    """Raised by a handler to fail its job with a clear message and no stack trace logged."""

    def __init__(self, message: str, error_type: str = "JobFailed") -> None:
        super().__init__(message)
        self.error_type = error_type


class JobContext:
    """What a handler gets besides its params: who, a database session, abort checks."""

    # How stale the handler's view of "am I aborted?" may get. A check costs a query,
    # so a handler that checks in a tight loop is answered from this cache.
    CHECK_INTERVAL_S = 0.5

    def __init__(self, engine: sa.Engine, uuid: str, actor: str, attempt: int) -> None:
        self.uuid = uuid
        self.actor = actor
        self.attempt = attempt
        self._engine = engine
        self._session: Session | None = None
        self._last_check = time.monotonic()
        self._aborted = False

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
        now = time.monotonic()
        if now - self._last_check < self.CHECK_INTERVAL_S:
            return
        self._last_check = now
        with self._engine.connect() as conn:
            current = transitions.is_current(conn, self.uuid, self.attempt)
        if not current:
            self._aborted = True
            raise JobAborted(self.uuid)

    def progress(self, done: int, total: int | None = None, message: str = "") -> None:
        """Report progress (``done`` of ``total``) and check for abort."""
        log.debug("job %s progress %s/%s %s", self.uuid, done, total, message)
        self.check()

    def sleep(self, seconds: float) -> None:
        """Sleep, checking for abort at least every :attr:`CHECK_INTERVAL_S`."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(remaining, self.CHECK_INTERVAL_S))
            self.check()

    def _close(self, commit: bool) -> None:
        if self._session is not None:
            if commit:
                self._session.commit()
            else:
                self._session.rollback()
            self._session.close()
            self._session = None


def _as_result(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        value = {"value": value}
    # Refuse what the API could not serialise later; NaN and Infinity are not JSON (and
    # PostgreSQL's jsonb rejects them at the UPDATE, which would leave the job running).
    json.dumps(value, allow_nan=False)
    return value


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
    def use(self):
        try:
            yield self.get()
        except sa.exc.DBAPIError:
            self.discard()  # whatever state it is in, the next job gets a fresh one
            raise


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
            return transitions.heartbeat(conn, running, utcnow())

    def _loop(self) -> None:
        while True:
            time.sleep(self.interval_s)
            try:
                self.beat()
            except Exception:
                log.exception("could not refresh job heartbeats; trying again")


class JobRunner:
    def __init__(
        self, engine: sa.Engine, actions: ActionRegistry, heartbeat_interval_s: float = 10.0
    ) -> None:
        self.engine = engine
        self.actions = actions
        self.connections = _ThreadConnections(engine)
        self.heartbeats = Heartbeats(engine, heartbeat_interval_s)

    def __call__(self, uuid: str) -> None:
        self.run(uuid)

    def running(self) -> dict[str, int]:
        """The jobs this process is running now: uuid → attempt."""
        with self.heartbeats.lock:
            return dict(self.heartbeats.running)

    def run(self, uuid: str) -> str | None:
        """Run job ``uuid`` if it is still waiting; return the status it ended in."""
        with self.connections.use() as conn:
            job = transitions.start(conn, uuid)
        if job is None:
            log.info("job %s is not waiting to run (duplicate, aborted or deleted)", uuid)
            return None
        self.heartbeats.add(uuid, job.attempt)
        try:
            return self._run(job)
        finally:
            self.heartbeats.remove(uuid)

    def _run(self, job: transitions.StartedJob) -> str | None:
        uuid = job.uuid
        started_at = time.monotonic()
        action = self.actions.get(job.action)
        ctx = JobContext(self.engine, job.uuid, job.actor, job.attempt)
        outcome: tuple[str, Any]
        try:
            if action is None:
                raise LookupError(f"no job action named {job.action!r} is registered")
            # "scheduled_job" names the scheduled job that created it: not a param either.
            params = {k: v for k, v in job.params.items() if k not in ("action", "scheduled_job")}
            value = action.handler(action.load_params(params), ctx)
            outcome = (transitions.COMPLETED, _as_result(value))
        except JobAborted:
            ctx._close(commit=False)
            log.info("job %s stopped: it was aborted", uuid)
            return transitions.ABORTED
        except TimeLimitExceeded:
            outcome = (
                transitions.FAILED,
                ("TimeLimitExceeded", "The job ran past its time limit."),
            )
        except marshmallow.ValidationError as exc:
            outcome = (transitions.FAILED, ("ValidationError", json.dumps(exc.messages)))
        except JobFailed as exc:
            outcome = (transitions.FAILED, (exc.error_type, str(exc)))
        except Exception as exc:
            log.exception("job %s (%s) failed", uuid, job.action)
            outcome = (transitions.FAILED, (type(exc).__name__, str(exc) or type(exc).__name__))
        return self._finish(job, ctx, outcome, time.monotonic() - started_at)

    def _finish(
        self, job: transitions.StartedJob, ctx: JobContext, outcome: tuple[str, Any], took: float
    ) -> str:
        status, payload = outcome
        succeeded = status == transitions.COMPLETED
        # When the handler used its session, the completion rides on the same transaction:
        # the handler's writes and "completed" commit together, or not at all.
        finished: bool | None = None
        if succeeded and ctx._session is not None:
            try:
                finished = transitions.complete(
                    ctx._session.connection(), job.uuid, job.attempt, payload
                )
                ctx._close(commit=finished)
            except Exception as exc:
                # The handler's writes can't commit (e.g. it swallowed a failed flush):
                # fail the job rather than leave it running with nobody to finish it.
                log.exception(
                    "job %s (%s): its writes could not be committed", job.uuid, job.action
                )
                ctx._close(commit=False)
                # The details (SQL, parameters) go to the log only, not to the job's error.
                status = transitions.FAILED
                payload = (type(exc).__name__, "The job's database writes could not be committed.")
                succeeded, finished = False, None
        if finished is None:
            ctx._close(commit=False)
            try:
                with self.connections.use() as conn:
                    if succeeded:
                        finished = transitions.complete(conn, job.uuid, job.attempt, payload)
                    else:
                        finished = transitions.fail(conn, job.uuid, job.attempt, *payload)
            except sa.exc.DataError:
                # The database refused the outcome itself (PostgreSQL's jsonb takes no NUL
                # character): store a failure it accepts rather than leave the job running.
                log.exception("job %s (%s): its outcome could not be stored", job.uuid, job.action)
                status = transitions.FAILED
                with self.connections.use() as conn:
                    finished = transitions.fail(
                        conn,
                        job.uuid,
                        job.attempt,
                        "DataError",
                        "The database refused the job's outcome.",
                    )
        if not finished:
            log.info("job %s was aborted while running; its outcome is dropped", job.uuid)
            return transitions.ABORTED
        log.info(
            "job %s action=%s actor=%s status=%s duration=%.3fs",
            job.uuid,
            job.action,
            job.actor,
            status,
            took,
        )
        return status
