"""JobRunner.run on every backend, the prune action, and sending after commit."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import dramatiq
import pytest
import sqlalchemy as sa
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker
from marshmallow import Schema, fields

from nick_jobs import main
from nick_jobs.db.after_commit import transaction
from nick_jobs.db.meta import utcnow
from nick_jobs.jobs import lifecycle
from nick_jobs.jobs.actions import ActionRegistry, JobAction
from nick_jobs.jobs.builtin_actions import prune_action
from nick_jobs.ops.logging import STATE_LOGGER
from nick_jobs.users.model import User
from nick_jobs.worker.interrupts import Interrupts
from nick_jobs.worker.queue import ACTOR_NAME
from nick_jobs.worker.runner import JobAborted, JobContext, JobFailed, JobInterrupted, JobRunner
from tests.conftest import attempt_of, base_settings, reset_database

jobs = lifecycle.jobs
history = lifecycle.history


@pytest.fixture
def engine(backend) -> sa.Engine:
    reset_database(backend.engine)
    return backend.engine


@pytest.fixture(autouse=True)
def quick_abort_checks(monkeypatch):
    # A handler's abort check is normally answered from a cache for half a second.
    monkeypatch.setattr(JobContext, "CHECK_INTERVAL_S", 0.01)


def runner_for(engine: sa.Engine, *actions: JobAction, **handlers: Callable) -> JobRunner:
    registry = ActionRegistry()
    for action in actions:
        registry.add(action)
    for name, handler in handlers.items():
        registry.add(JobAction(name=name, handler=handler))
    return JobRunner(engine, registry)


def make_job(engine: sa.Engine, action: str, actor: str = "admin", **params: Any) -> str:
    with transaction(engine) as conn:
        job = lifecycle.create(
            conn,
            action=action,
            params={"action": action, **params},
            actor=actor,
            title=action,
            description="",
        )
    return job["uuid"]


def row(engine: sa.Engine, uuid: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        found = conn.execute(sa.select(jobs).where(jobs.c.uuid == uuid)).one_or_none()
    return dict(found._mapping) if found is not None else None


def user_exists(engine: sa.Engine, login: str) -> bool:
    with engine.connect() as conn:
        return conn.execute(sa.select(User.login).where(User.login == login)).first() is not None


def new_user(login: str) -> User:
    return User(login=login, fullname="", password_hash="x", roles=[], created=utcnow())


def abort_now(engine: sa.Engine, uuid: str) -> None:
    with transaction(engine) as conn:
        lifecycle.abort(conn, uuid, "admin")


# --- outcomes ---------------------------------------------------------------------------


def test_completed_with_the_handlers_result(engine):
    seen = {}

    def handler(params, ctx):
        seen.update(params=params, uuid=ctx.uuid, actor=ctx.actor, attempt=ctx.attempt)
        return {"answer": 42}

    uuid = make_job(engine, "answer", actor="alice")
    assert runner_for(engine, answer=handler).run(uuid) == "completed"
    stored = row(engine, uuid)
    assert stored["status"] == "completed"
    assert stored["result"] == {"answer": 42}
    assert stored["error"] is None
    assert stored["started"] <= stored["finished"]
    # The handler gets its params without "action", and who and which attempt it runs.
    assert seen == {"params": {}, "uuid": uuid, "actor": "alice", "attempt": 1}


@pytest.mark.parametrize(
    ("value", "result"),
    [
        (None, {}),
        (7, {"value": 7}),
        ("done", {"value": "done"}),
        ([1, 2], {"value": [1, 2]}),
        ({"nested": {"a": [1]}}, {"nested": {"a": [1]}}),
    ],
)
def test_handler_return_values_become_an_object_result(engine, value, result):
    uuid = make_job(engine, "returns")
    assert runner_for(engine, returns=lambda params, ctx: value).run(uuid) == "completed"
    assert row(engine, uuid)["result"] == result


@pytest.mark.parametrize(
    ("value", "error_type", "message"),
    [
        ({"when": dt.datetime(2024, 1, 1)}, "TypeError", "not JSON serializable"),
        ({"ids": {1, 2}}, "TypeError", "not JSON serializable"),
        (object(), "TypeError", "not JSON serializable"),
        ({"ratio": float("nan")}, "ValueError", "not JSON compliant"),
        ([float("inf")], "ValueError", "not JSON compliant"),
    ],
)
def test_a_result_that_is_not_json_fails_the_job(engine, value, error_type, message):
    uuid = make_job(engine, "returns")
    assert runner_for(engine, returns=lambda params, ctx: value).run(uuid) == "failed"
    stored = row(engine, uuid)
    assert stored["status"] == "failed"
    assert stored["result"] == {}
    assert stored["error"]["type"] == error_type
    assert message in stored["error"]["message"]


@pytest.mark.parametrize("outcome", ["result", "error"])
def test_an_outcome_the_database_refuses_still_finishes_the_job(backend, engine, outcome):
    def handler(params, ctx):
        if outcome == "error":
            raise JobFailed("bad byte \x00 here")
        return {"text": "bad byte \x00 here"}

    uuid = make_job(engine, "nul")
    status = runner_for(engine, nul=handler).run(uuid)
    stored = row(engine, uuid)
    assert stored["status"] == status
    if backend.name == "sqlite":
        # SQLite stores the escaped character as it is.
        if outcome == "result":
            assert (status, stored["result"]) == ("completed", {"text": "bad byte \x00 here"})
        else:
            assert (status, stored["error"]["message"]) == ("failed", "bad byte \x00 here")
    else:
        # PostgreSQL's jsonb refuses \u0000: the job fails instead of staying running.
        assert status == "failed"
        assert stored["error"] == {
            "type": "DataError",
            "message": "The database refused the job's outcome.",
        }
        assert stored["result"] == {}


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (JobFailed("disk full"), {"type": "JobFailed", "message": "disk full"}),
        (
            JobFailed("over quota", error_type="QuotaExceeded"),
            {"type": "QuotaExceeded", "message": "over quota"},
        ),
    ],
)
def test_job_failed_fails_with_its_type_and_message(engine, exc, error, caplog):
    def handler(params, ctx):
        raise exc

    uuid = make_job(engine, "fails")
    with caplog.at_level(logging.ERROR, logger="nick_jobs.worker.runner"):
        assert runner_for(engine, fails=handler).run(uuid) == "failed"
    stored = row(engine, uuid)
    assert stored["status"] == "failed"
    assert stored["error"] == error
    assert stored["finished"] is not None
    # A deliberate failure is not logged as a crash.
    assert not [r for r in caplog.records if r.exc_info]


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (ValueError("bad input"), {"type": "ValueError", "message": "bad input"}),
        (ZeroDivisionError(), {"type": "ZeroDivisionError", "message": "ZeroDivisionError"}),
    ],
)
def test_other_exceptions_fail_with_their_class_name(engine, exc, error, caplog):
    def handler(params, ctx):
        raise exc

    uuid = make_job(engine, "crashes")
    with caplog.at_level(logging.ERROR, logger="nick_jobs.worker.runner"):
        assert runner_for(engine, crashes=handler).run(uuid) == "failed"
    assert row(engine, uuid)["error"] == error
    assert any(r.exc_info and uuid in r.getMessage() for r in caplog.records)


def test_unknown_action_fails_the_job(engine):
    uuid = make_job(engine, "vanished")
    assert runner_for(engine).run(uuid) == "failed"
    stored = row(engine, uuid)
    assert stored["status"] == "failed"
    assert stored["error"]["type"] == "LookupError"
    assert "'vanished'" in stored["error"]["message"]


def test_params_the_schema_refuses_fail_the_job(engine):
    class Params(Schema):
        count = fields.Integer(required=True)

    action = JobAction(name="counts", handler=lambda params, ctx: params, schema=Params)
    uuid = make_job(engine, "counts", count="many")
    assert runner_for(engine, action).run(uuid) == "failed"
    error = row(engine, uuid)["error"]
    assert error["type"] == "ValidationError"
    assert "count" in error["message"]


# --- the handler's own session ----------------------------------------------------------


def test_handler_writes_commit_together_with_completion(engine):
    def handler(params, ctx):
        ctx.dbsession.add(new_user("made-by-job"))
        ctx.dbsession.flush()
        return {"made": "made-by-job"}

    uuid = make_job(engine, "writes")
    assert runner_for(engine, writes=handler).run(uuid) == "completed"
    assert user_exists(engine, "made-by-job")
    stored = row(engine, uuid)
    assert stored["status"] == "completed"
    assert stored["result"] == {"made": "made-by-job"}


def test_handler_writes_roll_back_when_the_job_was_aborted_meanwhile(engine):
    def handler(params, ctx):
        abort_now(engine, ctx.uuid)
        ctx.dbsession.add(new_user("made-by-aborted-job"))
        ctx.dbsession.flush()
        return {"made": "made-by-aborted-job"}

    uuid = make_job(engine, "writes")
    assert runner_for(engine, writes=handler).run(uuid) == "aborted"
    assert not user_exists(engine, "made-by-aborted-job")
    stored = row(engine, uuid)
    assert stored["status"] == "aborted"
    assert stored["result"] == {}


def test_handler_writes_roll_back_when_the_job_fails(engine):
    def handler(params, ctx):
        ctx.dbsession.add(new_user("made-by-failed-job"))
        ctx.dbsession.flush()
        raise JobFailed("changed my mind")

    uuid = make_job(engine, "writes")
    assert runner_for(engine, writes=handler).run(uuid) == "failed"
    assert not user_exists(engine, "made-by-failed-job")
    assert row(engine, uuid)["error"] == {"type": "JobFailed", "message": "changed my mind"}


def test_a_handler_session_that_cannot_commit_fails_the_job(engine, caplog):
    def handler(params, ctx):
        ctx.dbsession.add(new_user("admin"))  # reset_database made admin already
        with contextlib.suppress(sa.exc.IntegrityError):  # leaves the session unusable
            ctx.dbsession.flush()
        return {"done": True}

    uuid = make_job(engine, "swallows")
    with caplog.at_level(logging.ERROR, logger="nick_jobs.worker.runner"):
        assert runner_for(engine, swallows=handler).run(uuid) == "failed"
    stored = row(engine, uuid)
    assert stored["status"] == "failed"
    assert stored["result"] == {}
    assert stored["error"]["message"] == "The job's database writes could not be committed."
    assert "INSERT" not in stored["error"]["message"]
    assert any(r.exc_info and uuid in r.getMessage() for r in caplog.records)


def test_a_late_result_of_an_aborted_job_is_dropped(engine):
    def handler(params, ctx):
        abort_now(engine, ctx.uuid)
        return {"late": True}

    uuid = make_job(engine, "late")
    assert runner_for(engine, late=handler).run(uuid) == "aborted"
    stored = row(engine, uuid)
    assert stored["status"] == "aborted"
    assert stored["result"] == {}
    assert stored["error"] is None


# --- abort while running, duplicate delivery --------------------------------------------


def test_abort_from_another_thread_stops_a_running_handler(engine):
    looping = threading.Event()
    seen: list[str] = []

    def handler(params, ctx):
        looping.set()
        deadline = time.monotonic() + 15
        try:
            while time.monotonic() < deadline:
                ctx.check()
        except JobAborted:
            seen.append("JobAborted")
            raise
        return {"ran": "to the end"}

    uuid = make_job(engine, "loops")
    runner = runner_for(engine, loops=handler)
    outcome: list[str | None] = []
    thread = threading.Thread(target=lambda: outcome.append(runner.run(uuid)))
    thread.start()
    assert looping.wait(timeout=10), "the handler did not start"
    abort_now(engine, uuid)
    thread.join(timeout=20)
    assert not thread.is_alive()
    assert outcome == ["aborted"]
    assert seen == ["JobAborted"]
    stored = row(engine, uuid)
    assert stored["status"] == "aborted"
    assert stored["result"] == {}
    assert stored["error"] is None
    with engine.connect() as conn:
        names = conn.execute(
            sa.select(history.c.event).where(history.c.job_uuid == uuid).order_by(history.c.id)
        ).scalars()
        assert list(names) == ["created", "aborted"]


def test_a_duplicate_delivery_does_nothing(engine):
    calls = []

    def handler(params, ctx):
        calls.append(ctx.attempt)
        return {"call": len(calls)}

    uuid = make_job(engine, "once")
    runner = runner_for(engine, once=handler)
    assert runner.run(uuid) == "completed"
    done = row(engine, uuid)
    assert runner.run(uuid) is None
    assert calls == [1]
    assert row(engine, uuid) == done


def test_a_message_for_a_running_aborted_or_deleted_job_does_nothing(engine):
    calls = []
    runner = runner_for(engine, noop=lambda params, ctx: calls.append(1))
    running = make_job(engine, "noop")
    with transaction(engine) as conn:
        lifecycle.start(conn, running)
    aborted = make_job(engine, "noop")
    abort_now(engine, aborted)
    deleted = make_job(engine, "noop")
    with transaction(engine) as conn:
        lifecycle.delete(conn, deleted)
    for uuid in (running, aborted, deleted):
        assert runner.run(uuid) is None
    assert calls == []
    assert row(engine, running)["status"] == "running"
    assert row(engine, aborted)["status"] == "aborted"
    assert row(engine, deleted) is None


# --- prune ------------------------------------------------------------------------------


def test_prune_deletes_only_old_finished_jobs_in_batches(engine):
    long_ago = utcnow() - dt.timedelta(days=40)
    recently = utcnow() - dt.timedelta(days=1)
    old = []
    for status in ("completed", "completed", "failed", "failed", "aborted"):
        uuid = make_job(engine, "noop")
        with transaction(engine) as conn:
            if status == "aborted":
                lifecycle.abort(conn, uuid, "admin")
            else:
                lifecycle.start(conn, uuid)
            if status == "completed":
                lifecycle.complete(conn, attempt_of(uuid, 1), {})
            elif status == "failed":
                lifecycle.fail(conn, attempt_of(uuid, 1), "JobFailed", "old")
            conn.execute(jobs.update().where(jobs.c.uuid == uuid).values(finished=long_ago))
        old.append(uuid)
    recent = make_job(engine, "noop")
    running = make_job(engine, "noop")
    created = make_job(engine, "noop")
    with transaction(engine) as conn:
        lifecycle.start(conn, recent)
        lifecycle.complete(conn, attempt_of(recent, 1), {})
        conn.execute(jobs.update().where(jobs.c.uuid == recent).values(finished=recently))
        lifecycle.start(conn, running)
        conn.execute(jobs.update().where(jobs.c.uuid == running).values(started=long_ago))
        conn.execute(jobs.update().where(jobs.c.uuid == created).values(created=long_ago))
    kept = [recent, running, created]

    deletes: list[str] = []

    def count_deletes(conn, cursor, statement, parameters, context, executemany):
        # The statement, not its rowcount: with RETURNING, a cursor's rowcount is known
        # only once its rows are fetched.
        if statement.lstrip().upper().startswith("DELETE FROM JOBS"):
            deletes.append(statement)

    prune = make_job(engine, "prune", days=30, batch_size=2)
    sa.event.listen(engine, "after_cursor_execute", count_deletes)
    try:
        assert runner_for(engine, prune_action).run(prune) == "completed"
    finally:
        sa.event.remove(engine, "after_cursor_execute", count_deletes)

    result = row(engine, prune)["result"]
    assert result["deleted"] == len(old)
    assert dt.datetime.fromisoformat(result["cutoff"]) < recently
    # One DELETE per batch: 5 old jobs in batches of 2 are 3 batches.
    assert len(deletes) == 3
    with engine.connect() as conn:
        remaining = set(conn.execute(sa.select(jobs.c.uuid)).scalars())
        with_history = set(conn.execute(sa.select(history.c.job_uuid)).scalars())
    assert remaining == {*kept, prune}
    assert with_history == {*kept, prune}


# --- sending after commit ---------------------------------------------------------------


@pytest.fixture
def stub_registry(tmp_path):
    """An app on its own SQLite file with the in-memory broker and no worker consuming it."""
    settings = base_settings(
        **{
            "sqlalchemy.url": f"sqlite:///{tmp_path / 'queue.sqlite'}",
            "nick_jobs.broker_url": "stub://",
            "nick_jobs.auto_migrate": "true",
            "nick_jobs.embedded_worker_threads": "0",
        }
    )
    app = main({}, **settings)
    yield app.registry
    app.registry["nick_jobs.engine"].dispose()


def waiting_messages(registry) -> list[Message]:
    queue = registry["nick_jobs.queue"]
    pending = queue.broker.queues[queue.settings.queue_name]
    messages = []
    while not pending.empty():
        messages.append(Message.decode(pending.get_nowait()))
    return messages


class Rollback(Exception):
    pass


def create_sent(engine: sa.Engine, queue, action: str) -> str:
    with transaction(engine) as conn:
        job = lifecycle.create(
            conn,
            action=action,
            params={"action": action},
            actor="admin",
            title=action,
            description="",
            send=queue.send,
        )
    return job["uuid"]


def test_a_created_job_is_sent_only_once_its_transaction_committed(stub_registry):
    engine, queue = stub_registry["nick_jobs.engine"], stub_registry["nick_jobs.queue"]
    unsent: list[list[Message]] = []

    def create_then_fail() -> None:
        with transaction(engine) as conn:
            lifecycle.create(
                conn,
                action="dummy",
                params={"action": "dummy"},
                actor="admin",
                title="dummy",
                description="",
                send=queue.send,
            )
            unsent.append(waiting_messages(stub_registry))  # not committed yet
            raise Rollback

    with pytest.raises(Rollback):
        create_then_fail()
    assert unsent == [[]]
    assert waiting_messages(stub_registry) == []


def test_a_committed_job_is_sent_to_the_broker_with_its_actions_options(stub_registry):
    stub_registry["nick_jobs.actions"].add(
        JobAction(name="quick", handler=lambda params, ctx: None, time_limit=5)
    )
    engine, queue = stub_registry["nick_jobs.engine"], stub_registry["nick_jobs.queue"]
    first, second = create_sent(engine, queue, "dummy"), create_sent(engine, queue, "quick")
    messages = waiting_messages(stub_registry)
    assert [(m.actor_name, list(m.args)) for m in messages] == [
        (ACTOR_NAME, [first]),
        (ACTOR_NAME, [second]),
    ]
    assert "time_limit" not in messages[0].options
    assert messages[1].options["time_limit"] == 5000


def test_a_broker_error_after_commit_is_logged_and_the_job_stays_created(
    stub_registry, monkeypatch, caplog
):
    queue = stub_registry["nick_jobs.queue"]

    def unreachable(message, *, delay=None):
        raise ConnectionError("broker down")

    monkeypatch.setattr(queue.broker, "enqueue", unreachable)
    engine = stub_registry["nick_jobs.engine"]
    with caplog.at_level(logging.ERROR, logger="nick_jobs.jobs.lifecycle"):
        uuid = create_sent(engine, queue, "dummy")  # does not raise
    [record] = [r for r in caplog.records if r.name == "nick_jobs.jobs.lifecycle"]
    assert uuid in record.getMessage()
    assert record.exc_info[0] is ConnectionError
    assert row(engine, uuid)["status"] == "created"
    assert waiting_messages(stub_registry) == []


# --- the log line of each job the runner ends -------------------------------------------


def test_the_runner_logs_one_state_line_per_job_it_ends(engine, caplog):
    runner = runner_for(engine, noop=lambda params, ctx: {}, boom=lambda params, ctx: 1 / 0)
    done, failed = make_job(engine, "noop"), make_job(engine, "boom")
    with caplog.at_level(logging.INFO, logger=STATE_LOGGER):
        assert runner.run(done) == lifecycle.COMPLETED
        assert runner.run(failed) == lifecycle.FAILED
        # A duplicate delivery: the job is no longer waiting, nothing changes or is logged.
        assert runner.run(done) is None
    lines = [r.getMessage() for r in caplog.records if r.name == STATE_LOGGER]
    assert len(lines) == 2
    assert lines[0].startswith(f"job {done} action=noop actor=admin status=completed duration=")
    assert lines[1].startswith(f"job {failed} action=boom actor=admin status=failed duration=")
    assert lines[1].endswith(" error=ZeroDivisionError")


# --- the middleware that interrupts overdue handlers ------------------------------------


class Interrupted(Exception):
    pass


def test_the_apps_broker_has_the_runners_interrupts_middleware(stub_registry):
    # The embedded worker and `nick-jobs worker` processes both consume this broker.
    queue = stub_registry["nick_jobs.queue"]
    assert isinstance(queue.runner.interrupts, Interrupts)
    assert queue.runner.interrupts in queue.broker.middleware
    assert queue.runner.watcher.interrupts is queue.runner.interrupts


def test_interrupts_reach_a_thread_only_while_it_runs_the_jobs_handler():
    interrupts = Interrupts()
    inside, left = threading.Event(), threading.Event()
    caught: list[type] = []

    def handler() -> None:
        with interrupts.handler("job-1"):
            inside.set()
            deadline = time.monotonic() + 30
            try:
                while time.monotonic() < deadline:
                    time.sleep(0.005)
            except Interrupted as exc:
                caught.append(type(exc))
        left.set()

    assert not interrupts.interrupt("job-1", Interrupted)  # nothing runs yet
    thread = threading.Thread(target=handler)
    thread.start()
    assert inside.wait(10)
    assert interrupts.running() == {"job-1": thread.ident}
    assert not interrupts.interrupt("job-2", Interrupted)  # another job's: nobody to reach
    assert interrupts.interrupt("job-1", Interrupted)
    assert left.wait(10)
    thread.join(10)
    assert caught == [Interrupted]
    assert interrupts.running() == {}
    assert not interrupts.interrupt("job-1", Interrupted)


def test_a_thread_done_with_its_message_is_never_interrupted():
    """Should a handler's exit be cut short (another interruption landing in it), the
    message's end still takes the thread out of reach: Dramatiq's worker thread, on to
    its next message, never gets the job's interruption."""
    broker = StubBroker()
    interrupts = Interrupts()
    broker.add_middleware(interrupts)
    entered: list[contextlib.AbstractContextManager] = []

    def leaky(uuid: str) -> None:
        handler = interrupts.handler(uuid)
        handler.__enter__()  # entered, never left (kept, so that no collection closes it)
        entered.append(handler)

    actor = dramatiq.Actor(
        leaky, broker=broker, actor_name="leaky", queue_name="q", priority=0, options={}
    )
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        actor.send("job-1")
        broker.join("q", timeout=10_000)
        worker.join()
        assert len(entered) == 1
        assert interrupts.running() == {}
        assert not interrupts.interrupt("job-1", Interrupted)
    finally:
        worker.stop()


def test_the_runner_interrupts_through_the_middleware_it_is_given(engine):
    """The handler runs inside the given middleware's reach, and an abort past the grace
    is raised through it."""
    interrupts = Interrupts()
    looping = threading.Event()
    seen: list[dict[str, int]] = []
    caught: list[type] = []

    def never_checks(params, ctx):
        seen.append(interrupts.running())
        looping.set()
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                time.sleep(0.01)
        except JobAborted as exc:
            caught.append(type(exc))
            raise

    registry = ActionRegistry()
    registry.add(JobAction(name="loops", handler=never_checks, abort_grace=0))
    runner = JobRunner(engine, registry, abort_check_interval_s=0.05, interrupts=interrupts)
    uuid = make_job(engine, "loops")
    outcome: list[str | None] = []
    thread = threading.Thread(target=lambda: outcome.append(runner.run(uuid)))
    thread.start()
    assert looping.wait(10)
    abort_now(engine, uuid)
    thread.join(20)
    assert not thread.is_alive()
    assert seen == [{uuid: thread.ident}]
    assert (outcome, caught) == (["aborted"], [JobInterrupted])
    assert interrupts.running() == {}
