"""Bulk submit: ``POST /@jobs`` with an array of job bodies creates all of them in one
transaction, or none, on every backend."""

from __future__ import annotations

import secrets

import sqlalchemy as sa

from nick_jobs.db.after_commit import transaction
from nick_jobs.jobs import lifecycle
from nick_jobs.jobs.model import Job, JobHistory
from nick_jobs.jobs.submission import MAX_BULK
from tests.conftest import reset_database


def _count_jobs(app) -> int:
    with app.backend.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(Job)).scalar_one()


def _bodies(count: int, **extra) -> list[dict]:
    return [
        {"params": {"action": "dummy", "result": {"n": n}}, "title": f"Job {n}", **extra}
        for n in range(count)
    ]


def test_an_array_of_jobs_is_created_in_order_and_every_one_runs(app):
    res = app.post_json("/@jobs", _bodies(5), headers=app.auth(), status=201)
    jobs = res.json
    assert [job["title"] for job in jobs] == [f"Job {n}" for n in range(5)]
    assert {job["status"] for job in jobs} == {"created"}
    assert len({job["uuid"] for job in jobs}) == 5
    for job in jobs:
        assert job["@id"] == f"http://localhost:8080/@jobs/{job['uuid']}"
        assert job["actor"] == "admin"
    # Every message went out after the commit: each job runs, with its own params.
    for n, job in enumerate(jobs):
        done = app.wait_for(job["uuid"], "completed")
        assert done["result"] == {"n": n}
        history = app.get(f"/@jobs/{job['uuid']}/history", headers=app.auth()).json
        assert [event["event"] for event in history] == ["created", "started", "completed"]


def test_one_invalid_body_refuses_them_all_with_the_errors_by_index(app):
    bodies = _bodies(4)
    bodies[1]["params"]["steps"] = -1
    bodies[3]["params"] = {"action": "no-such-action"}
    res = app.post_json("/@jobs", bodies, headers=app.auth(), status=400)
    error = res.json["error"]
    assert error["type"] == "Validation error"
    assert set(error["fields"]) == {"1", "3"}
    assert "steps" in error["fields"]["1"]["params"]
    assert error["fields"]["3"] == {"params": {"action": ["Unknown action 'no-such-action'."]}}
    assert _count_jobs(app) == 0


def test_a_body_that_is_not_an_object_is_an_error_at_its_index(app):
    res = app.post_json("/@jobs", [_bodies(1)[0], "dummy"], headers=app.auth(), status=400)
    assert set(res.json["error"]["fields"]) == {"1"}
    assert _count_jobs(app) == 0


def test_an_empty_or_too_long_array_is_refused(app):
    for bodies in ([], _bodies(1) * (MAX_BULK + 1)):
        res = app.post_json("/@jobs", bodies, headers=app.auth(), status=400)
        assert res.json["error"]["type"] == "Validation error"
        assert f"1 to {MAX_BULK} jobs" in str(res.json["error"]["fields"])
    assert _count_jobs(app) == 0


def test_a_job_the_caller_may_not_submit_refuses_them_all(backend, make_app):
    reset_database(backend.engine)
    # Nobody runs these jobs (no worker knows the test actions): only what is stored counts.
    app = make_app(
        **{
            "nick_jobs.includes": "tests.control_actions",
            "nick_jobs.queue": f"nobody_consumes_{secrets.token_hex(4)}",
            "nick_jobs.embedded_worker_threads": "0",
        }
    )
    flaky = {"params": {"action": "flaky"}}
    bodies = [flaky, flaky, {"params": {"action": "dummy"}}]
    res = app.post_json("/@jobs", bodies, headers=app.auth("alice"), status=403)
    assert res.json["error"]["message"] == (
        "You are not allowed to submit 'dummy' jobs (job 2); none was submitted."
    )
    assert _count_jobs(app) == 0
    # The same array without it is alice's to submit.
    res = app.post_json("/@jobs", bodies[:2], headers=app.auth("alice"), status=201)
    assert [job["actor"] for job in res.json] == ["alice", "alice"]


def test_a_repeated_bulk_submit_with_its_idempotency_key_returns_the_first_jobs(app_without_worker):
    app = app_without_worker
    headers = {**app.auth(), "Idempotency-Key": "nightly-2026-12-07"}
    first = app.post_json("/@jobs", _bodies(3), headers=headers, status=201).json
    again = app.post_json("/@jobs", _bodies(3), headers=headers, status=200).json
    assert [job["uuid"] for job in again] == [job["uuid"] for job in first]
    assert _count_jobs(app) == 3
    # Another key is another bulk submit.
    other = {**app.auth(), "Idempotency-Key": "nightly-2026-12-08"}
    app.post_json("/@jobs", _bodies(3), headers=other, status=201)
    assert _count_jobs(app) == 6


def test_an_idempotency_key_reused_for_another_number_of_jobs_is_a_conflict(app_without_worker):
    app = app_without_worker
    headers = {**app.auth(), "Idempotency-Key": "batch-1"}
    app.post_json("/@jobs", _bodies(2), headers=headers, status=201)
    res = app.post_json("/@jobs", _bodies(3), headers=headers, status=409)
    assert res.json["error"]["type"] == "Conflict"
    assert "2 of these 3" in res.json["error"]["message"]
    assert _count_jobs(app) == 2


def test_a_bulk_idempotency_key_leaves_room_for_the_index(app):
    headers = {**app.auth(), "Idempotency-Key": "k" * 200}
    res = app.post_json("/@jobs", _bodies(2), headers=headers, status=400)
    assert res.json["error"]["type"] == "Invalid header"
    assert _count_jobs(app) == 0


def test_follow_takes_one_job_not_an_array(app):
    res = app.post_json("/@jobs?follow=true", _bodies(2), headers=app.auth(), status=400)
    assert "array" in res.json["error"]["message"]
    assert _count_jobs(app) == 0


def test_a_scalar_body_is_refused(app):
    res = app.post_json("/@jobs", 3, headers=app.auth(), status=400)
    assert res.json["error"] == {
        "type": "Invalid JSON",
        "message": "The body must be a JSON object or array.",
    }


def test_many_jobs_cost_the_same_few_statements_as_one(app_without_worker):
    """The jobs and their history rows cost the same statements whatever their number:
    two multi-row INSERTs on SQLite, and on PostgreSQL one statement whose text is the
    same for 1 job as for 200 (so it is prepared once, not converted again each time)."""
    app = app_without_worker
    registry = app.app.registry
    # The request's own connection on PostgreSQL (a submit runs in no transaction of
    # pyramid_tm's there), its session's on SQLite.
    engines = {id(e): e for e in (registry["nick_jobs.read_engine"], registry["nick_jobs.engine"])}
    counts = []
    texts = []
    for size in (1, 200):
        seen: list[str] = []

        def before(conn, cursor, statement, parameters, context, executemany, seen=seen) -> None:
            seen.append(statement)

        for engine in engines.values():
            sa.event.listen(engine, "before_cursor_execute", before)
        try:
            app.post_json("/@jobs", _bodies(size), headers=app.auth(), status=201)
        finally:
            for engine in engines.values():
                sa.event.remove(engine, "before_cursor_execute", before)
        counts.append(len(seen))
        texts.append(seen)
    assert counts[0] == counts[1], counts
    if app.backend.engine.dialect.name == "postgresql":
        assert texts[0] == texts[1]
        inserts = [text for text in texts[1] if "INSERT INTO jobs" in text]
        assert len(inserts) == 1, inserts
        assert "INSERT INTO job_history" in inserts[0]
    with app.backend.engine.connect() as conn:
        created = conn.execute(
            sa.select(sa.func.count()).select_from(JobHistory).where(JobHistory.event == "created")
        ).scalar_one()
    assert created == 201


def test_the_messages_of_a_rolled_back_bulk_never_go_out(backend, make_app):
    """The lifecycle sends a bulk's messages once its transaction has committed, and
    none when it rolls back."""
    reset_database(backend.engine)
    app = make_app(**{"nick_jobs.embedded_worker_threads": "0"})
    engine = app.app.registry["nick_jobs.engine"]
    sent: list[str] = []

    def send(uuid: str, action: str, delay: float) -> None:
        sent.append(uuid)

    new_jobs = [
        {"action": "dummy", "params": {"action": "dummy"}, "title": "t", "description": ""}
    ] * 3

    class Undo(Exception):
        pass

    try:
        with transaction(engine) as conn:
            lifecycle.create_many(conn, new_jobs, actor="admin", send=send)
            assert sent == []
            raise Undo
    except Undo:
        pass
    assert sent == []
    assert _count_jobs(app) == 0
    with transaction(engine) as conn:
        rows = lifecycle.create_many(conn, new_jobs, actor="admin", send=send)
        assert sent == []
    assert sent == [row["uuid"] for row in rows]
    assert _count_jobs(app) == 3
