"""A job costs the worker two commits, start and finish, however much it reported.

What a handler reported and was not written yet (its last progress, its buffered log
lines) goes with the statement that ends the attempt: one statement on PostgreSQL, one
``BEGIN`` … ``COMMIT`` elsewhere. The commits are counted with SQLAlchemy's events on an
engine that only the runner uses.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa

from nick_jobs.db import get_engine
from nick_jobs.db.after_commit import transaction
from nick_jobs.db.meta import utcnow
from nick_jobs.jobs import lifecycle
from nick_jobs.jobs.actions import ActionRegistry, JobAction
from nick_jobs.jobs.model import JobLog
from nick_jobs.users.model import User
from nick_jobs.worker.runner import JobContext, JobFailed, JobRunner, JobStopped
from tests.conftest import reset_database

jobs, history, job_logs = lifecycle.jobs, lifecycle.history, JobLog.__table__
WATCHER_THREAD = "nick-jobs-watcher"


@pytest.fixture(autouse=True)
def quick_abort_checks(monkeypatch):
    monkeypatch.setattr(JobContext, "CHECK_INTERVAL_S", 0.01)


@pytest.fixture
def engine(backend) -> Iterator[sa.Engine]:
    """The runner's own engine: what it runs is all the runner's."""
    reset_database(backend.engine)
    engine = get_engine(backend.settings["sqlalchemy.url"])
    yield engine
    engine.dispose()


def _watcher() -> bool:
    return threading.current_thread().name == WATCHER_THREAD


@dataclass
class Transactions:
    """What an engine committed: each transaction as the statements it ran.

    A statement on an autocommit connection outside an explicit ``BEGIN`` is a
    transaction of its own; an explicit ``BEGIN`` … ``COMMIT``, or a SQLAlchemy
    transaction (``engine.begin()``, a session), is one.

    The abort watcher's looks are left out: one query per interval for all the jobs a
    process runs, not a cost of this job, and taken whenever its thread wakes, so a test
    counting them would count the machine's timing.
    """

    committed: list[list[str]] = field(default_factory=list)
    rolled_back: list[list[str]] = field(default_factory=list)
    open: dict[int, list[str]] = field(default_factory=dict)

    def statement(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if _watcher():
            return
        text = " ".join(statement.split())
        key = id(conn.connection.dbapi_connection)
        autocommit = conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT"
        if text == "BEGIN":
            self.open[key] = []
        elif text == "COMMIT":
            self.committed.append(self.open.pop(key))
        elif text == "ROLLBACK":
            self.rolled_back.append(self.open.pop(key))
        elif key in self.open:
            self.open[key].append(text)
        elif autocommit:
            self.committed.append([text])
        else:
            self.open[key] = [text]  # SQLAlchemy began a transaction: its event ends it

    def commit(self, conn) -> None:
        if _watcher():
            return
        self.committed.append(self.open.pop(id(conn.connection.dbapi_connection), []))

    def rollback(self, conn) -> None:
        if _watcher():
            return
        self.rolled_back.append(self.open.pop(id(conn.connection.dbapi_connection), []))

    @property
    def statements(self) -> list[str]:
        return [s for transaction in self.committed for s in transaction]


@contextlib.contextmanager
def transactions(engine: sa.Engine) -> Iterator[Transactions]:
    seen = Transactions()
    listeners = [
        ("before_cursor_execute", seen.statement),
        ("commit", seen.commit),
        ("rollback", seen.rollback),
    ]
    for name, listener in listeners:
        sa.event.listen(engine, name, listener)
    try:
        yield seen
    finally:
        for name, listener in listeners:
            sa.event.remove(engine, name, listener)


def runner_for(engine: sa.Engine, **actions: JobAction) -> JobRunner:
    registry = ActionRegistry()
    for action in actions.values():
        registry.add(action)
    # No heartbeat thread: its one UPDATE per interval is per process, not per job.
    return JobRunner(engine, registry, heartbeat_interval_s=0, abort_check_interval_s=0.002)


def make_job(engine: sa.Engine, action: str) -> str:
    with transaction(engine) as conn:
        return lifecycle.create(
            conn, action=action, params={"action": action}, actor="admin", title="", description=""
        )["uuid"]


def row(engine: sa.Engine, uuid: str):
    with engine.connect() as conn:
        return conn.execute(sa.select(jobs).where(jobs.c.uuid == uuid)).one()


def lines(engine: sa.Engine, uuid: str) -> list[tuple[int, int, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(job_logs.c.attempt, job_logs.c.level, job_logs.c.message)
            .where(job_logs.c.job_uuid == uuid)
            .order_by(job_logs.c.id)
        )
        return [tuple(r) for r in rows]


def reports(ctx: JobContext) -> None:
    """Steps, progress, a message and more log lines than fit one page of anything."""
    ctx.steps(["fetch", "store"])
    ctx.step("fetch", done=1, total=1)
    ctx.progress(1, 2, message="storing", step="store")
    for i in range(1, 51):
        ctx.log(f"line {i}", "warning" if i % 10 == 0 else "info")


EXPECTED_LINES = [(1, 30 if i % 10 == 0 else 20, f"line {i}") for i in range(1, 51)]
EXPECTED_PROGRESS = {
    "percent": 75.0,
    "message": "storing",
    "steps": [
        {"name": "fetch", "done": 1, "total": 1, "status": "done"},
        {"name": "store", "done": 1, "total": 2, "status": "running"},
    ],
}


def completes(params, ctx):
    reports(ctx)
    return {"ok": True}


def fails(params, ctx):
    reports(ctx)
    raise JobFailed("no")


def stops(params, ctx):
    reports(ctx)
    ctx.checkpoint({"at": 1})
    raise JobStopped(ctx.uuid)


def writes(params, ctx):
    reports(ctx)
    ctx.dbsession.add(
        User(
            login=f"made-by-{ctx.uuid}", fullname="", password_hash="x", roles=[], created=utcnow()
        )
    )
    ctx.dbsession.flush()
    return {"ok": True}


OUTCOMES: dict[str, tuple[JobAction, str]] = {
    "completed": (JobAction(name="completes", handler=completes), "completed"),
    "failed": (JobAction(name="fails", handler=fails), "failed"),
    "stopped": (JobAction(name="stops", handler=stops, resumable=True), "stopped"),
    "with its session": (JobAction(name="writes", handler=writes), "completed"),
}


@pytest.mark.parametrize("case", list(OUTCOMES))
def test_a_reporting_job_costs_the_worker_two_commits(engine, case, monkeypatch):
    # A job that runs past the report interval has its progress written on the way, and
    # one past the check interval looks for an abort from its own thread, by design: both
    # intervals are made longer than any run here, so that what is counted is the start
    # and the end alone (on a loaded machine a run took over a second).
    monkeypatch.setattr(JobContext, "REPORT_INTERVAL_S", 600.0)
    monkeypatch.setattr(JobContext, "CHECK_INTERVAL_S", 600.0)
    action, status = OUTCOMES[case]
    uuid = make_job(engine, action.name)
    runner = runner_for(engine, job=action)
    with transactions(engine) as seen:
        assert runner.run(uuid) == status
    assert len(seen.committed) == 2, seen.committed
    start, finish = seen.committed
    assert start[0].startswith("UPDATE jobs SET status="), start
    assert any("progress=" in s and "SET status=" in s for s in finish), finish
    assert not seen.rolled_back, seen.rolled_back
    # No extra round trip to read anything back.
    assert not [s for s in seen.statements if s.startswith("SELECT")], seen.statements
    stored = row(engine, uuid)
    assert stored.status == status
    assert stored.progress == EXPECTED_PROGRESS
    assert lines(engine, uuid) == EXPECTED_LINES


def test_an_automatic_retry_takes_the_failed_attempt_s_lines_in_its_transaction(engine):
    action = JobAction(name="fails", handler=fails, max_retries=1, min_backoff=60)
    uuid = make_job(engine, "fails")
    runner = runner_for(engine, job=action)
    with transactions(engine) as seen:
        assert runner.run(uuid) == "created"
    assert len(seen.committed) == 2, seen.committed
    stored = row(engine, uuid)
    assert (stored.status, stored.attempt) == ("created", 2)
    # The new attempt shows none of the failed one's progress; its lines are kept.
    assert stored.progress is None
    assert lines(engine, uuid) == EXPECTED_LINES


def test_a_job_that_reports_nothing_is_two_statements(engine):
    uuid = make_job(engine, "quiet")
    runner = runner_for(engine, job=JobAction(name="quiet", handler=lambda params, ctx: {}))
    with transactions(engine) as seen:
        assert runner.run(uuid) == "completed"
    assert [len(t) for t in seen.committed] == [1, 1], seen.committed
    assert row(engine, uuid).progress is None


# --- the last lines are kept when the outcome can't take them ------------------------------


def aborted_as_it_returns(abort: Callable[[str], None]):
    def handler(params, ctx):
        reports(ctx)
        abort(ctx.uuid)  # after its last check: it returns as if nothing happened
        return {"late": True}

    return handler


@pytest.mark.parametrize("session", [False, True], ids=["autocommit", "with its session"])
def test_an_attempt_aborted_as_it_finished_keeps_its_last_report(backend, engine, session):
    def abort(uuid: str) -> None:
        with transaction(backend.engine) as conn:
            lifecycle.abort(conn, uuid, "admin")

    handler = aborted_as_it_returns(abort)

    def with_session(params, ctx):
        ctx.dbsession.execute(sa.select(1))
        return handler(params, ctx)

    uuid = make_job(engine, "late")
    action = JobAction(name="late", handler=with_session if session else handler)
    assert runner_for(engine, job=action).run(uuid) == "aborted"
    stored = row(engine, uuid)
    assert (stored.status, stored.result) == ("aborted", {})
    assert stored.progress == EXPECTED_PROGRESS
    assert lines(engine, uuid) == EXPECTED_LINES


def test_lines_of_an_attempt_replaced_as_it_finished_are_fenced_out(backend, engine):
    def replace(uuid: str) -> None:
        with transaction(backend.engine) as conn:
            lifecycle.abort(conn, uuid, "admin")
            lifecycle.retry(conn, uuid, "admin")

    uuid = make_job(engine, "late")
    action = JobAction(name="late", handler=aborted_as_it_returns(replace))
    assert runner_for(engine, job=action).run(uuid) == "aborted"
    stored = row(engine, uuid)
    assert (stored.status, stored.attempt, stored.progress) == ("created", 2, None)
    assert lines(engine, uuid) == []


def test_an_outcome_the_database_refuses_still_keeps_the_last_lines(backend, engine):
    def handler(params, ctx):
        reports(ctx)
        return {"text": "bad byte \x00 here"}

    uuid = make_job(engine, "nul")
    status = runner_for(engine, job=JobAction(name="nul", handler=handler)).run(uuid)
    # SQLite stores the character; PostgreSQL's jsonb refuses it and the job fails.
    assert status == ("completed" if backend.name == "sqlite" else "failed")
    stored = row(engine, uuid)
    assert stored.status == status
    assert stored.progress == EXPECTED_PROGRESS
    assert lines(engine, uuid) == EXPECTED_LINES


def test_a_report_the_database_would_refuse_does_not_cost_the_outcome(engine):
    def handler(params, ctx):
        ctx.progress(float("nan"), float("inf"), step="odd")
        ctx.log("a level beyond any", 10**9)
        ctx.log("a lone \ud800 surrogate")
        return {"ok": True}

    uuid = make_job(engine, "odd")
    assert runner_for(engine, job=JobAction(name="odd", handler=handler)).run(uuid) == "completed"
    stored = row(engine, uuid)
    assert stored.progress["steps"] == [
        {"name": "odd", "done": None, "total": None, "status": "running"}
    ]
    assert lines(engine, uuid) == [
        (1, 32_767, "a level beyond any"),
        (1, 20, "a lone ? surrogate"),
    ]
