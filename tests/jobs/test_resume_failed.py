"""Resuming a failed job from the checkpoint its handler saved, on every backend.

A failing attempt keeps the handler's last checkpoint; ``POST /@jobs/{uuid}/resume`` of a
failed job of a resumable action starts a new attempt from it, recorded as ``resumed``.
Without a checkpoint the answer is a 409 that says to retry.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from nick_jobs.db.after_commit import transaction
from nick_jobs.jobs import lifecycle
from nick_jobs.jobs.actions import JobAction
from nick_jobs.jobs.model import JobLog
from nick_jobs.worker.runner import JobFailed
from tests.conftest import attempt_of, reset_database
from tests.jobs.test_control import events, make_job, row, runner_for


@pytest.fixture
def engine(backend) -> sa.Engine:
    reset_database(backend.engine)
    return backend.engine


def test_a_failure_keeps_the_checkpoint_and_resume_continues_from_it(engine):
    starts: list[Any] = []

    def counts(params, ctx):
        starts.append(ctx.saved_checkpoint)
        first = (ctx.saved_checkpoint or 0) + 1
        for step in range(first, 11):
            ctx.checkpoint(step)
            if step == 4 and ctx.saved_checkpoint is None:
                raise JobFailed("the disk is full")
        return {"from": first}

    runner = runner_for(engine, JobAction(name="counts", handler=counts, resumable=True))
    uuid = make_job(engine, "counts")
    assert runner.run(uuid) == "failed"
    failed = row(engine, uuid)
    assert failed.status == "failed"
    assert failed.checkpoint == 4
    assert failed.error == {"type": "JobFailed", "message": "the disk is full"}

    with transaction(engine) as conn:
        assert lifecycle.resume(conn, uuid, "alice", failed=True) == (2, "counts")
    resumed = row(engine, uuid)
    assert (resumed.status, resumed.attempt, resumed.error) == ("created", 2, None)
    assert resumed.checkpoint == 4
    assert runner.run(uuid) == "completed"
    assert starts == [None, 4]
    assert row(engine, uuid).result == {"from": 5}
    recorded = events(engine, uuid)
    assert [(e, by, n) for e, by, n, _ in recorded] == [
        ("created", "admin", 1),
        ("resumed", "alice", 2),
    ]
    previous = recorded[1][3]["previous_attempt"]
    assert previous["status"] == "failed"
    assert previous["attempt"] == 1
    assert previous["error"] == {"type": "JobFailed", "message": "the disk is full"}


def test_a_failure_of_a_handler_that_wrote_through_its_session_keeps_no_checkpoint(engine):
    def writes(params, ctx):
        ctx.dbsession.execute(sa.text("SELECT 1"))
        ctx.checkpoint(7)
        raise JobFailed("no")

    runner = runner_for(engine, JobAction(name="writes", handler=writes, resumable=True))
    uuid = make_job(engine, "writes")
    assert runner.run(uuid) == "failed"
    # Its session's writes were rolled back with the failure: a checkpoint past them would
    # make a resume skip work whose writes are lost.
    assert row(engine, uuid).checkpoint is None
    with pytest.raises(lifecycle.TransitionRefused) as refused, transaction(engine) as conn:
        lifecycle.resume(conn, uuid, "admin", failed=True)
    assert refused.value.status == "failed"
    assert "retry it instead" in str(refused.value)


def test_only_a_resumable_caller_resumes_a_failure(engine):
    uuid = make_job(engine, "dummy")
    with transaction(engine) as conn:
        lifecycle.start(conn, uuid)
        assert lifecycle.fail(conn, attempt_of(uuid, 1), "JobFailed", "no", checkpoint=3)
    with pytest.raises(lifecycle.TransitionRefused) as refused, transaction(engine) as conn:
        lifecycle.resume(conn, uuid, "admin")
    assert refused.value.status == "failed"
    assert row(engine, uuid).status == "failed"


def test_resume_of_a_failed_dummy_over_the_api(app):
    job = app.submit({"action": "dummy", "steps": 3, "fail": "disk full"})
    uuid = job["uuid"]
    url = f"/@jobs/{uuid}"
    app.wait_for(uuid, "failed")
    engine = app.backend.engine
    assert row(engine, uuid).checkpoint == 3
    app.post(f"{url}/resume", headers=app.auth(), status=204)
    # Resumed from its third step: it runs none again, and fails as its params say.
    again = app.wait_for(uuid, "failed")
    assert again["attempt"] == 2
    with engine.connect() as conn:
        lines = conn.execute(
            sa.select(JobLog.attempt, JobLog.message)
            .where(JobLog.job_uuid == uuid)
            .order_by(JobLog.id)
        ).all()
    assert [tuple(line) for line in lines] == [
        (1, "step 1 of 3 done"),
        (1, "step 2 of 3 done"),
        (1, "step 3 of 3 done"),
    ]
    history = app.get(f"{url}/history", headers=app.auth()).json
    assert [(e["event"], e["by"], e["attempt"]) for e in history] == [
        ("created", "admin", 1),
        ("started", "worker", 1),
        ("failed", "worker", 1),
        ("resumed", "admin", 2),
        ("started", "worker", 2),
        ("failed", "worker", 2),
    ]
    assert history[2]["error"] == {"type": "JobFailed", "message": "disk full"}
    assert history[3]["previous_attempt"]["status"] == "failed"


def test_a_resumed_failure_is_recorded_in_the_history(app_without_worker):
    app = app_without_worker
    job = app.submit({"action": "dummy", "steps": 5})
    uuid = job["uuid"]
    engine = app.backend.engine
    with transaction(engine) as conn:
        lifecycle.start(conn, uuid)
        assert lifecycle.fail(conn, attempt_of(uuid, 1), "OSError", "disk full", checkpoint=2)
    app.post(f"/@jobs/{uuid}/resume", headers=app.auth(), status=204)
    resumed = app.get(f"/@jobs/{uuid}", headers=app.auth()).json
    assert (resumed["status"], resumed["attempt"]) == ("created", 2)
    assert row(engine, uuid).checkpoint == 2
    history = app.get(f"/@jobs/{uuid}/history", headers=app.auth()).json
    assert [(e["event"], e["by"], e["attempt"]) for e in history] == [
        ("created", "admin", 1),
        ("started", "worker", 1),
        ("failed", "worker", 1),
        ("resumed", "admin", 2),
    ]
    assert history[2]["error"] == {"type": "OSError", "message": "disk full"}
    previous = history[3]["previous_attempt"]
    assert previous["status"] == "failed"
    assert previous["started"] == history[1]["time"]
    assert previous["finished"] == history[2]["time"]
    # Resumed, it is created again: a second resume is refused.
    res = app.post(f"/@jobs/{uuid}/resume", headers=app.auth(), status=409)
    assert res.json["error"]["message"] == "A created job can't be resumed."


def test_a_failed_job_without_a_checkpoint_is_retried_not_resumed(app_without_worker):
    app = app_without_worker
    job = app.submit({"action": "dummy", "steps": 5})
    uuid = job["uuid"]
    with transaction(app.backend.engine) as conn:
        lifecycle.start(conn, uuid)
        assert lifecycle.fail(conn, attempt_of(uuid, 1), "JobFailed", "no")
    res = app.post(f"/@jobs/{uuid}/resume", headers=app.auth(), status=409)
    assert res.json["error"] == {
        "type": "Invalid state",
        "message": "This failed job saved no checkpoint to resume from; retry it instead.",
        "status": "failed",
    }
    assert app.get(f"/@jobs/{uuid}", headers=app.auth()).json["attempt"] == 1
    app.post(f"/@jobs/{uuid}/retry", headers=app.auth(), status=204)


def test_a_failed_job_of_an_action_that_cannot_resume_is_not_resumable(app_without_worker):
    app = app_without_worker
    job = app.submit({"action": "echo", "message": "hi"})
    uuid = job["uuid"]
    with transaction(app.backend.engine) as conn:
        lifecycle.start(conn, uuid)
        assert lifecycle.fail(conn, attempt_of(uuid, 1, "echo"), "JobFailed", "no", checkpoint=1)
    res = app.post(f"/@jobs/{uuid}/resume", headers=app.auth(), status=409)
    assert res.json["error"] == {
        "type": "Not resumable",
        "message": "Jobs of action 'echo' can't be resumed; retry it instead.",
        "status": "failed",
    }
    assert app.get(f"/@jobs/{uuid}", headers=app.auth()).json["status"] == "failed"
