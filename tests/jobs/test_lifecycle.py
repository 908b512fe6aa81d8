"""The job state machine, on every backend: each transition, each refusal, and races.

Races run two real threads released together by a barrier, many times over, each side on
its own connection and transaction, as an API request and a worker would.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from nick_jobs.db.after_commit import transaction
from nick_jobs.jobs import lifecycle
from nick_jobs.jobs.lifecycle import (
    ABORTED,
    COMPLETED,
    CREATED,
    FAILED,
    RUNNING,
    StartedJob,
    TransitionRefused,
)
from tests.conftest import attempt_of, reset_database

ROUNDS = 20
MISSING = "00000000-0000-4000-8000-000000000000"
ALL_STATUSES = (CREATED, RUNNING, COMPLETED, FAILED, ABORTED)


@pytest.fixture
def engine(backend) -> sa.Engine:
    reset_database(backend.engine)
    return backend.engine


def make_job(engine: sa.Engine, actor: str = "admin") -> str:
    with transaction(engine) as conn:
        job = lifecycle.create(
            conn,
            action="dummy",
            params={"action": "dummy", "steps": 2},
            actor=actor,
            title="A job",
            description="",
        )
    return job["uuid"]


def job_in(engine: sa.Engine, status: str) -> str:
    """A job brought to ``status`` through the legal transitions (attempt 1)."""
    uuid = make_job(engine)
    with transaction(engine) as conn:
        if status == CREATED:
            return uuid
        if status == ABORTED:
            lifecycle.abort(conn, uuid, "admin")
            return uuid
        assert lifecycle.start(conn, uuid) is not None
        if status == COMPLETED:
            assert lifecycle.complete(conn, attempt_of(uuid, 1), {"answer": 42})
        elif status == FAILED:
            assert lifecycle.fail(conn, attempt_of(uuid, 1), "JobFailed", "disk full")
    return uuid


def row(engine: sa.Engine, uuid: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(lifecycle.jobs).where(lifecycle.jobs.c.uuid == uuid)
        ).one_or_none()
    return dict(found._mapping) if found is not None else None


def events(engine: sa.Engine, uuid: str) -> list[dict[str, Any]]:
    history = lifecycle.history
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(history).where(history.c.job_uuid == uuid).order_by(history.c.id)
        ).all()
    return [dict(r._mapping) for r in rows]


def in_transaction(engine: sa.Engine, fn: Callable, *args: Any) -> Callable[[], Any]:
    def call() -> Any:
        with transaction(engine) as conn:
            return fn(conn, *args)

    return call


def race(*calls: Callable[[], Any]) -> list[tuple[str, Any]]:
    """Run ``calls`` on threads released at once: ("ok", value) or ("refused", status) each."""
    barrier = threading.Barrier(len(calls))
    outcomes: list[tuple[str, Any] | None] = [None] * len(calls)

    def run(index: int, call: Callable[[], Any]) -> None:
        barrier.wait(timeout=10)
        try:
            outcomes[index] = ("ok", call())
        except TransitionRefused as exc:
            outcomes[index] = ("refused", exc.status)
        except BaseException as exc:
            outcomes[index] = ("error", exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive(), "a racing transition did not return"
    errors = [o[1] for o in outcomes if o is not None and o[0] == "error"]
    if errors:
        raise errors[0]
    return outcomes  # type: ignore[return-value]


# --- each legal transition --------------------------------------------------------------


def test_create_inserts_a_created_job_with_history(engine):
    with transaction(engine) as conn:
        job = lifecycle.create(
            conn,
            action="echo",
            params={"action": "echo", "message": "hi"},
            actor="alice",
            title="Echo",
            description="says hi",
            idempotency_key="k-1",
        )
    stored = row(engine, job["uuid"])
    assert stored["status"] == CREATED
    assert stored["attempt"] == 1
    assert stored["params"] == {"action": "echo", "message": "hi"}
    assert stored["actor"] == "alice"
    assert stored["idempotency_key"] == "k-1"
    assert stored["started"] is None
    assert stored["finished"] is None
    assert stored["result"] == {}
    assert stored["error"] is None
    assert stored["id"] == job["id"]
    assert [(e["event"], e["by"], e["attempt"]) for e in events(engine, job["uuid"])] == [
        ("created", "alice", 1)
    ]


def test_start_moves_created_to_running(engine):
    uuid = make_job(engine, actor="bob")
    with transaction(engine) as conn:
        started = lifecycle.start(conn, uuid)
    assert isinstance(started, StartedJob)
    assert (started.uuid, started.action, started.actor, started.attempt) == (
        uuid,
        "dummy",
        "bob",
        1,
    )
    assert started.params == {"action": "dummy", "steps": 2}
    stored = row(engine, uuid)
    assert stored["status"] == RUNNING
    assert stored["started"] == started.started
    assert stored["finished"] is None


def test_complete_moves_running_to_completed_with_result(engine):
    uuid = job_in(engine, RUNNING)
    with transaction(engine) as conn:
        assert lifecycle.complete(conn, attempt_of(uuid, 1), {"answer": 42}) is True
    stored = row(engine, uuid)
    assert stored["status"] == COMPLETED
    assert stored["result"] == {"answer": 42}
    assert stored["error"] is None
    assert stored["started"] <= stored["finished"]


def test_fail_moves_running_to_failed_with_error(engine):
    uuid = job_in(engine, RUNNING)
    with transaction(engine) as conn:
        assert lifecycle.fail(conn, attempt_of(uuid, 1), "JobFailed", "disk full") is True
    stored = row(engine, uuid)
    assert stored["status"] == FAILED
    assert stored["error"] == {"type": "JobFailed", "message": "disk full"}
    assert stored["result"] == {}
    assert stored["finished"] is not None


@pytest.mark.parametrize("status", [CREATED, RUNNING])
def test_abort_moves_created_or_running_to_aborted(engine, status):
    uuid = job_in(engine, status)
    with transaction(engine) as conn:
        lifecycle.abort(conn, uuid, "alice")
    stored = row(engine, uuid)
    assert stored["status"] == ABORTED
    assert stored["finished"] is not None
    assert (stored["started"] is None) == (status == CREATED)
    assert [(e["event"], e["by"], e["attempt"]) for e in events(engine, uuid)][-1] == (
        "aborted",
        "alice",
        1,
    )


@pytest.mark.parametrize("status", [FAILED, ABORTED])
def test_retry_moves_failed_or_aborted_to_created_as_a_new_attempt(engine, status):
    uuid = job_in(engine, status)
    with transaction(engine) as conn:
        assert lifecycle.retry(conn, uuid, "bob") == 2
    stored = row(engine, uuid)
    assert stored["status"] == CREATED
    assert stored["attempt"] == 2
    assert stored["started"] is None
    assert stored["finished"] is None
    assert stored["result"] == {}
    assert stored["error"] is None
    last = events(engine, uuid)[-1]
    assert (last["event"], last["by"], last["attempt"]) == ("retried", "bob", 2)


@pytest.mark.parametrize("status", [CREATED, COMPLETED, FAILED, ABORTED])
def test_delete_removes_a_job_that_is_not_running_with_its_history(engine, status):
    uuid = job_in(engine, status)
    keep = job_in(engine, status)
    with transaction(engine) as conn:
        lifecycle.delete(conn, uuid)
    assert row(engine, uuid) is None
    assert events(engine, uuid) == []
    assert row(engine, keep)["status"] == status
    assert events(engine, keep) != []


# --- each illegal transition ------------------------------------------------------------


@pytest.mark.parametrize("status", [RUNNING, COMPLETED, FAILED, ABORTED])
def test_start_refuses_a_job_that_is_not_created(engine, status):
    uuid = job_in(engine, status)
    before = row(engine, uuid)
    with transaction(engine) as conn:
        assert lifecycle.start(conn, uuid) is None
    assert row(engine, uuid) == before


def test_start_of_a_missing_job_is_none(engine):
    with transaction(engine) as conn:
        assert lifecycle.start(conn, MISSING) is None


@pytest.mark.parametrize("status", [CREATED, COMPLETED, FAILED, ABORTED])
@pytest.mark.parametrize("finish", ["complete", "fail"])
def test_finishing_refuses_a_job_that_is_not_running(engine, status, finish):
    uuid = job_in(engine, status)
    before = row(engine, uuid)
    with transaction(engine) as conn:
        if finish == "complete":
            assert lifecycle.complete(conn, attempt_of(uuid, 1), {"late": True}) is False
        else:
            assert lifecycle.fail(conn, attempt_of(uuid, 1), "Late", "too late") is False
        assert lifecycle.is_current(conn, uuid, 1) is False
    assert row(engine, uuid) == before


def test_finishing_a_missing_job_does_nothing(engine):
    with transaction(engine) as conn:
        assert lifecycle.complete(conn, attempt_of(MISSING, 1), {}) is False
        assert lifecycle.fail(conn, attempt_of(MISSING, 1), "X", "y") is False
        assert lifecycle.is_current(conn, MISSING, 1) is False


@pytest.mark.parametrize("status", [COMPLETED, FAILED, ABORTED])
def test_abort_refuses_a_finished_job_with_its_status(engine, status):
    uuid = job_in(engine, status)
    before, history_before = row(engine, uuid), events(engine, uuid)
    with pytest.raises(TransitionRefused) as refused, engine.begin() as conn:
        lifecycle.abort(conn, uuid, "admin")
    assert refused.value.status == status
    assert row(engine, uuid) == before
    assert events(engine, uuid) == history_before


@pytest.mark.parametrize("status", [CREATED, RUNNING, COMPLETED])
def test_retry_refuses_a_job_that_is_not_failed_or_aborted(engine, status):
    uuid = job_in(engine, status)
    before, history_before = row(engine, uuid), events(engine, uuid)
    with pytest.raises(TransitionRefused) as refused, engine.begin() as conn:
        lifecycle.retry(conn, uuid, "admin")
    assert refused.value.status == status
    assert row(engine, uuid) == before
    assert events(engine, uuid) == history_before


def test_delete_refuses_a_running_job(engine):
    uuid = job_in(engine, RUNNING)
    before, history_before = row(engine, uuid), events(engine, uuid)
    with pytest.raises(TransitionRefused) as refused, engine.begin() as conn:
        lifecycle.delete(conn, uuid)
    assert refused.value.status == RUNNING
    assert row(engine, uuid) == before
    assert events(engine, uuid) == history_before


@pytest.mark.parametrize("transition", ["abort", "retry", "delete"])
def test_refusals_for_a_missing_job_carry_no_status(engine, transition):
    call = {
        "abort": lambda conn: lifecycle.abort(conn, MISSING, "admin"),
        "retry": lambda conn: lifecycle.retry(conn, MISSING, "admin"),
        "delete": lambda conn: lifecycle.delete(conn, MISSING),
    }[transition]
    with pytest.raises(TransitionRefused) as refused, engine.begin() as conn:
        call(conn)
    assert refused.value.status is None


# --- races ------------------------------------------------------------------------------


@pytest.mark.parametrize("finish", ["complete", "fail"])
def test_abort_racing_the_worker_finishing_has_exactly_one_winner(engine, finish):
    for _ in range(ROUNDS):
        uuid = job_in(engine, RUNNING)
        if finish == "complete":
            worker = in_transaction(engine, lifecycle.complete, attempt_of(uuid, 1), {"answer": 42})
        else:
            worker = in_transaction(
                engine, lifecycle.fail, attempt_of(uuid, 1), "JobFailed", "late"
            )
        aborted, finished = race(in_transaction(engine, lifecycle.abort, uuid, "admin"), worker)
        stored = row(engine, uuid)
        names = [e["event"] for e in events(engine, uuid)]
        if aborted == ("ok", None):
            # The abort won: the worker's outcome was dropped.
            assert finished == ("ok", False)
            assert stored["status"] == ABORTED
            assert stored["result"] == {}
            assert stored["error"] is None
            assert names == ["created", "aborted"]
        else:
            # The worker won: the abort was refused with the finished status.
            finished_status = COMPLETED if finish == "complete" else FAILED
            assert aborted == ("refused", finished_status)
            assert finished == ("ok", True)
            assert stored["status"] == finished_status
            assert names == ["created"]


@pytest.mark.parametrize("status", [CREATED, RUNNING])
def test_abort_racing_abort_aborts_once(engine, status):
    for _ in range(ROUNDS):
        uuid = job_in(engine, status)
        outcomes = race(
            in_transaction(engine, lifecycle.abort, uuid, "alice"),
            in_transaction(engine, lifecycle.abort, uuid, "bob"),
        )
        assert sorted(outcomes, key=repr) == [("ok", None), ("refused", ABORTED)]
        assert row(engine, uuid)["status"] == ABORTED
        aborts = [e for e in events(engine, uuid) if e["event"] == "aborted"]
        assert len(aborts) == 1
        winner = "alice" if outcomes[0] == ("ok", None) else "bob"
        assert aborts[0]["by"] == winner


def test_retry_racing_retry_adds_exactly_one_attempt(engine):
    for _ in range(ROUNDS):
        uuid = job_in(engine, FAILED)
        outcomes = race(
            in_transaction(engine, lifecycle.retry, uuid, "alice"),
            in_transaction(engine, lifecycle.retry, uuid, "bob"),
        )
        assert sorted(outcomes, key=repr) == [("ok", 2), ("refused", CREATED)]
        stored = row(engine, uuid)
        assert stored["status"] == CREATED
        assert stored["attempt"] == 2
        retried = [e for e in events(engine, uuid) if e["event"] == "retried"]
        assert len(retried) == 1
        assert retried[0]["by"] == ("alice" if outcomes[0][0] == "ok" else "bob")
        assert retried[0]["data"]["previous_attempt"]["attempt"] == 1


def test_delete_racing_start_never_runs_a_deleted_job(engine):
    for _ in range(ROUNDS):
        uuid = job_in(engine, CREATED)
        deleted, started = race(
            in_transaction(engine, lifecycle.delete, uuid),
            in_transaction(engine, lifecycle.start, uuid),
        )
        if deleted == ("ok", None):
            assert started == ("ok", None)
            assert row(engine, uuid) is None
            assert events(engine, uuid) == []
        else:
            assert deleted == ("refused", RUNNING)
            assert started[0] == "ok"
            assert isinstance(started[1], StartedJob)
            assert row(engine, uuid)["status"] == RUNNING


def test_start_racing_start_hands_the_job_to_one_worker(engine):
    for _ in range(ROUNDS):
        uuid = job_in(engine, CREATED)
        outcomes = race(
            in_transaction(engine, lifecycle.start, uuid),
            in_transaction(engine, lifecycle.start, uuid),
        )
        started = [value for kind, value in outcomes if kind == "ok" and value is not None]
        assert len(started) == 1
        assert [value for _, value in outcomes].count(None) == 1
        assert started[0].attempt == 1
        stored = row(engine, uuid)
        assert stored["status"] == RUNNING
        assert stored["started"] == started[0].started


# --- stale attempts and the history of retries -----------------------------------------


def test_a_stale_attempt_cannot_touch_the_retried_job(engine):
    uuid = job_in(engine, RUNNING)
    with transaction(engine) as conn:
        lifecycle.abort(conn, uuid, "admin")
        assert lifecycle.retry(conn, uuid, "admin") == 2
    waiting = row(engine, uuid)
    with transaction(engine) as conn:
        assert lifecycle.is_current(conn, uuid, 1) is False
        assert lifecycle.complete(conn, attempt_of(uuid, 1), {"stale": True}) is False
        assert lifecycle.fail(conn, attempt_of(uuid, 1), "Stale", "old attempt") is False
    assert row(engine, uuid) == waiting

    # Still fenced once the new attempt runs: the old handler can't finish it.
    with transaction(engine) as conn:
        started = lifecycle.start(conn, uuid)
    assert started is not None
    assert started.attempt == 2
    running = row(engine, uuid)
    with transaction(engine) as conn:
        assert lifecycle.is_current(conn, uuid, 1) is False
        assert lifecycle.is_current(conn, uuid, 2) is True
        assert lifecycle.complete(conn, attempt_of(uuid, 1), {"stale": True}) is False
        assert lifecycle.fail(conn, attempt_of(uuid, 1), "Stale", "old attempt") is False
    assert row(engine, uuid) == running
    with transaction(engine) as conn:
        assert lifecycle.complete(conn, attempt_of(uuid, 2), {"fresh": True}) is True
    assert row(engine, uuid)["result"] == {"fresh": True}


def test_retry_keeps_the_previous_attempts_outcome_in_history(engine):
    uuid = job_in(engine, FAILED)
    first = row(engine, uuid)
    with transaction(engine) as conn:
        lifecycle.retry(conn, uuid, "alice")
        lifecycle.start(conn, uuid)
        lifecycle.abort(conn, uuid, "bob")
    second = row(engine, uuid)
    with transaction(engine) as conn:
        assert lifecycle.retry(conn, uuid, "admin") == 3

    retried = [e for e in events(engine, uuid) if e["event"] == "retried"]
    assert [(e["by"], e["attempt"]) for e in retried] == [("alice", 2), ("admin", 3)]
    assert retried[0]["data"]["previous_attempt"] == {
        "attempt": 1,
        "status": FAILED,
        "started": first["started"].isoformat(),
        "finished": first["finished"].isoformat(),
        "result": {},
        "error": {"type": "JobFailed", "message": "disk full"},
    }
    assert retried[1]["data"]["previous_attempt"] == {
        "attempt": 2,
        "status": ABORTED,
        "started": second["started"].isoformat(),
        "finished": second["finished"].isoformat(),
        "result": {},
        "error": None,
    }
    names = [(e["event"], e["attempt"]) for e in events(engine, uuid)]
    assert names == [("created", 1), ("retried", 2), ("aborted", 2), ("retried", 3)]


def test_retry_of_a_job_aborted_before_it_started_records_no_start(engine):
    uuid = job_in(engine, ABORTED)
    aborted = row(engine, uuid)
    with transaction(engine) as conn:
        lifecycle.retry(conn, uuid, "admin")
    previous = events(engine, uuid)[-1]["data"]["previous_attempt"]
    assert previous["status"] == ABORTED
    assert previous["started"] is None
    assert previous["finished"] == aborted["finished"].isoformat()


def test_is_finished_names_the_terminal_statuses():
    assert [s for s in ALL_STATUSES if lifecycle.is_finished(s)] == [
        COMPLETED,
        FAILED,
        ABORTED,
    ]


# --- progress across attempts -----------------------------------------------------------

PROGRESS = {
    "percent": 50.0,
    "message": "halfway",
    "steps": [{"name": "main", "done": 1, "total": 2, "status": "running"}],
}


def _retry_later(conn, uuid: str) -> None:
    next_run = lifecycle.utcnow()
    assert lifecycle.retry_later(conn, uuid, 1, None, ("JobFailed", "no"), next_run)


def _rescue(conn, uuid: str) -> None:
    lost = lifecycle.lost_jobs(conn, 60, lifecycle.utcnow() + dt.timedelta(seconds=61))
    (job,) = [j for j in lost if j.uuid == uuid]
    assert lifecycle.rescue(conn, job, True, 60, lifecycle.utcnow())


NEW_ATTEMPTS: dict[str, Callable[[Any, str], None]] = {
    "retry": lambda conn, uuid: (
        lifecycle.fail(conn, attempt_of(uuid, 1), "JobFailed", "no"),
        lifecycle.retry(conn, uuid, "admin"),
    ),
    "retry later": _retry_later,
    "rescue": _rescue,
    "hand back": lambda conn, uuid: lifecycle.hand_back(conn, uuid, 1),
}


@pytest.mark.parametrize("new_attempt", list(NEW_ATTEMPTS))
def test_a_new_attempt_shows_none_of_the_previous_attempt_s_progress(engine, new_attempt):
    uuid = make_job(engine)
    with transaction(engine) as conn:
        lifecycle.start(conn, uuid)
        # As the worker's periodic report writes it.
        conn.execute(
            lifecycle.jobs.update().where(lifecycle.jobs.c.uuid == uuid).values(progress=PROGRESS)
        )
    with transaction(engine) as conn:
        NEW_ATTEMPTS[new_attempt](conn, uuid)
    stored = row(engine, uuid)
    assert (stored["status"], stored["attempt"], stored["progress"]) == (CREATED, 2, None)
    with transaction(engine) as conn:
        assert lifecycle.start(conn, uuid).attempt == 2
    assert row(engine, uuid)["progress"] is None


def test_a_resumed_job_keeps_its_progress_and_checkpoint(engine):
    uuid = make_job(engine)
    with transaction(engine) as conn:
        lifecycle.start(conn, uuid)
        assert lifecycle.stopped(conn, attempt_of(uuid, 1), {"done": 1}, progress=PROGRESS)
    with transaction(engine) as conn:
        assert lifecycle.resume(conn, uuid, "admin") == (2, "dummy")
    stored = row(engine, uuid)
    assert (stored["status"], stored["progress"], stored["checkpoint"]) == (
        CREATED,
        PROGRESS,
        {"done": 1},
    )
    with transaction(engine) as conn:
        started = lifecycle.start(conn, uuid)
    # It goes on from where it stopped: the checkpoint for its handler, the progress shown.
    assert (started.attempt, started.checkpoint) == (2, {"done": 1})
    assert row(engine, uuid)["progress"] == PROGRESS
