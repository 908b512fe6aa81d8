"""Control on every backend: automatic retries with backoff, abort that really stops,
stop and resume from a checkpoint, restart with lineage."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from dramatiq import Message
from dramatiq.common import dq_name

from nick_jobs import main
from nick_jobs.db.after_commit import transaction
from nick_jobs.db.meta import utcnow
from nick_jobs.jobs import lifecycle
from nick_jobs.jobs.actions import ActionRegistry, JobAction
from nick_jobs.jobs.model import JobLog
from nick_jobs.worker.runner import JobAborted, JobInterrupted, JobRunner
from tests.conftest import (
    _purge_rabbitmq,
    attempt_of,
    base_settings,
    reset_database,
    start_worker,
    stop_process,
    write_ini,
)
from tests.control_actions import FLAKY, OBLIVIOUS_GRACE, FlakyParams, flaky

INCLUDES = "tests.actions_for_tests tests.control_actions"
jobs, history = lifecycle.jobs, lifecycle.history


@pytest.fixture(scope="module")
def control_settings(backend, tmp_path_factory):
    """App settings whose worker knows the control actions.

    In-process (SQLite) the embedded worker loads them from the settings; on PostgreSQL a
    worker process of its own consumes a queue of its own, from an ini that names them.
    """
    settings = {"nick_jobs.includes": INCLUDES}
    if not backend.real_worker:
        yield settings
        return
    settings["nick_jobs.queue"] = f"nick_jobs_control_{secrets.token_hex(4)}"
    ini = tmp_path_factory.mktemp("control") / f"{backend.name}.ini"
    worker = start_worker(write_ini(ini, {**backend.settings, **settings}))
    yield settings
    stop_process(worker)
    if backend.name == "postgres-rabbitmq":
        _purge_rabbitmq(settings["nick_jobs.queue"])


@pytest.fixture
def ctl(backend, make_app, control_settings):
    """An app (and worker) with the control test actions, on an empty database."""
    reset_database(backend.engine)
    return make_app(**control_settings)


@pytest.fixture
def engine(backend) -> sa.Engine:
    reset_database(backend.engine)
    return backend.engine


# --- helpers ------------------------------------------------------------------------------


def poll(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Call ``condition`` until it returns something true; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what} not met within {timeout} s")


def make_job(engine: sa.Engine, action: str, actor: str = "admin", **params: Any) -> str:
    with transaction(engine) as conn:
        return lifecycle.create(
            conn,
            action=action,
            params={"action": action, **params},
            actor=actor,
            title=action,
            description="",
        )["uuid"]


def row(engine: sa.Engine, uuid: str):
    with engine.connect() as conn:
        return conn.execute(sa.select(jobs).where(jobs.c.uuid == uuid)).one()


def events(engine: sa.Engine, uuid: str) -> list[tuple[str, str, int, dict]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(history.c.event, history.c.by, history.c.attempt, history.c.data)
            .where(history.c.job_uuid == uuid)
            .order_by(history.c.id)
        )
        return [tuple(r) for r in rows]


def runner_for(engine: sa.Engine, *actions: JobAction) -> JobRunner:
    registry = ActionRegistry()
    for action in actions:
        registry.add(action)
    return JobRunner(engine, registry)


def run_when_due(runner: JobRunner, uuid: str, timeout: float = 10.0) -> str:
    """Run the job as soon as its start is allowed (its next_run has come)."""
    return poll(lambda: runner.run(uuid), timeout, f"job {uuid} to start")


def marked(path: Path, word: str, timeout: float = 20.0) -> float:
    """Wait until the marker file says ``word``; return the time it was written."""

    def read():
        text = path.read_text() if path.exists() else ""
        return text.startswith(word + " ") and float(text.split()[1])

    return poll(read, timeout, f"{path.name} to say {word}")


def seconds(later: str | dt.datetime, earlier: str | dt.datetime) -> float:
    def parse(value):
        return dt.datetime.fromisoformat(value) if isinstance(value, str) else value

    return (parse(later) - parse(earlier)).total_seconds()


# --- the action's settings ------------------------------------------------------------------


def test_backoff_is_exponential_with_jitter_within_bounds():
    action = JobAction(name="a", handler=print, min_backoff=1.0, max_backoff=10.0)
    assert [action.backoff(n, lambda: 0.0) for n in (1, 2, 3, 4, 5, 60, 10_000)] == [
        1.0,
        2.0,
        4.0,
        8.0,
        10.0,
        10.0,
        10.0,
    ]
    assert action.backoff(1, lambda: 0.999) == pytest.approx(1.999)
    assert action.backoff(4, lambda: 0.999) == 10.0  # capped
    for retry in range(1, 8):
        base = min(10.0, 2.0 ** (retry - 1))
        assert base <= action.backoff(retry) <= min(10.0, 2 * base)


@pytest.mark.parametrize(
    "bad",
    [
        {"min_backoff": 5.0, "max_backoff": 1.0},
        {"min_backoff": -1.0},
        {"abort_grace": -1.0},
    ],
)
def test_impossible_control_settings_are_refused(bad):
    with pytest.raises(ValueError, match="job action 'a'"):
        ActionRegistry().add(JobAction(name="a", handler=print, **bad))


def test_job_actions_say_which_are_resumable(ctl):
    actions = {a["name"]: a for a in ctl.get("/@job-actions", headers=ctl.auth()).json}
    assert actions["dummy"]["resumable"] is True
    assert actions["prune"]["resumable"] is False
    assert actions["echo"]["resumable"] is False


# --- automatic retries --------------------------------------------------------------------


def test_start_waits_for_next_run(engine):
    uuid = make_job(engine, "dummy")
    with transaction(engine) as conn:
        conn.execute(
            jobs.update()
            .where(jobs.c.uuid == uuid)
            .values(next_run=utcnow() + dt.timedelta(seconds=60))
        )
        assert lifecycle.start(conn, uuid) is None
    assert row(engine, uuid).status == "created"
    with transaction(engine) as conn:
        conn.execute(jobs.update().where(jobs.c.uuid == uuid).values(next_run=utcnow()))
        assert lifecycle.start(conn, uuid).attempt == 1
    assert (row(engine, uuid).status, row(engine, uuid).next_run) == ("running", None)


def test_sweeper_does_not_resend_a_retry_before_its_next_run(engine):
    uuid = make_job(engine, "dummy")
    now = utcnow()
    with transaction(engine) as conn:
        lifecycle.start(conn, uuid)
        later = now + dt.timedelta(seconds=100)
        assert lifecycle.retry_later(conn, uuid, 1, None, ("E", "boom"), later, now=now)
    with transaction(engine) as conn:
        # Long past the grace of the moment it failed, but before next_run + grace.
        assert lifecycle.stale_created(conn, 30, now + dt.timedelta(seconds=120)) == []
        due = lifecycle.stale_created(conn, 30, now + dt.timedelta(seconds=131))
    assert due == [(uuid, "dummy")]


def test_automatic_retries_back_off_then_fail(engine):
    action = JobAction(name="flaky", handler=flaky, schema=FlakyParams, **FLAKY)
    runner = runner_for(engine, action)
    sent: list[tuple[str, str, float]] = []
    runner.send = lambda uuid, name, delay: sent.append((uuid, name, delay))
    uuid = make_job(engine, "flaky")

    assert runner.run(uuid) == "created"
    waiting = row(engine, uuid)
    assert (waiting.status, waiting.attempt, waiting.started, waiting.error) == (
        "created",
        2,
        None,
        None,
    )
    assert waiting.next_run is not None
    if utcnow() < waiting.next_run:
        assert runner.run(uuid) is None  # too early: the start refuses it
    [(sent_uuid, name, delay)] = sent
    assert (sent_uuid, name) == (uuid, "flaky")
    assert 0 < delay <= 0.6

    assert run_when_due(runner, uuid) == "created"
    assert row(engine, uuid).attempt == 3
    assert run_when_due(runner, uuid) == "failed"
    final = row(engine, uuid)
    assert (final.status, final.attempt, final.next_run) == ("failed", 3, None)
    assert final.error == {"type": "JobFailed", "message": "attempt 3 failed"}

    found = events(engine, uuid)
    assert [(e, by, n) for e, by, n, _ in found] == [
        ("created", "admin", 1),
        ("retry scheduled", lifecycle.WORKER, 2),
        ("retry scheduled", lifecycle.WORKER, 3),
    ]
    bounds = [(0.3, 0.6), (0.6, 1.0)]
    for (_, _, _, data), (low, high) in zip(found[1:], bounds, strict=True):
        previous = data["previous_attempt"]
        assert previous["error"]["message"] == f"attempt {previous['attempt']} failed"
        assert low - 0.05 <= seconds(data["next_run"], previous["finished"]) <= high
    # Each attempt started only once its next_run had come.
    assert seconds(found[2][3]["previous_attempt"]["started"], found[1][3]["next_run"]) >= 0


def test_a_manual_retry_starts_a_new_series(engine):
    action = JobAction(
        name="now",
        handler=flaky,
        schema=FlakyParams,
        max_retries=1,
        min_backoff=0.0,
        max_backoff=0.0,
    )
    runner = runner_for(engine, action)
    uuid = make_job(engine, "now")
    assert run_when_due(runner, uuid) == "created"
    assert run_when_due(runner, uuid) == "failed"
    with transaction(engine) as conn:
        assert lifecycle.retry(conn, uuid, "admin") == 3
    assert run_when_due(runner, uuid) == "created"  # attempt 3 is the first of its series
    assert run_when_due(runner, uuid) == "failed"
    assert row(engine, uuid).attempt == 4
    assert [(e, n) for e, _, n, _ in events(engine, uuid)] == [
        ("created", 1),
        ("retry scheduled", 2),
        ("retried", 3),
        ("retry scheduled", 4),
    ]


def test_retries_over_the_api_then_a_manual_retry(ctl):
    app = ctl
    job = app.submit({"action": "flaky"}, login="alice")
    url = f"/@jobs/{job['uuid']}"
    failed = app.wait_for(job["uuid"], "failed", login="alice")
    assert failed["attempt"] == 3
    assert failed["error"] == {"type": "JobFailed", "message": "attempt 3 failed"}
    assert failed["next_run"] is None

    app.post(f"{url}/retry", headers=app.auth("alice"), status=204)
    poll(lambda: app.get(url, headers=app.auth("alice")).json["attempt"] == 6, what="attempt 6")
    again = app.wait_for(job["uuid"], "failed", login="alice")
    assert again["attempt"] == 6
    found = events(app.backend.engine, job["uuid"])
    assert [(e, by, n) for e, by, n, _ in found] == [
        ("created", "alice", 1),
        ("retry scheduled", lifecycle.WORKER, 2),
        ("retry scheduled", lifecycle.WORKER, 3),
        ("retried", "alice", 4),
        ("retry scheduled", lifecycle.WORKER, 5),
        ("retry scheduled", lifecycle.WORKER, 6),
    ]
    # Each automatic retry waited out its backoff: it started no earlier than the
    # next_run its failed predecessor set.
    for (_, _, _, waited), (_, _, _, after) in [(found[1], found[2]), (found[4], found[5])]:
        assert seconds(after["previous_attempt"]["started"], waited["next_run"]) >= 0


def test_a_job_waiting_out_its_backoff_shows_it_over_the_api(ctl):
    """Between two attempts the job is ``created`` again, with the next attempt's number
    and the time it may start, and nothing of the failed attempt's run."""
    engine = ctl.backend.engine
    uuid = make_job(engine, "flaky", actor="alice")
    later = utcnow().replace(microsecond=0) + dt.timedelta(seconds=100)
    with transaction(engine) as conn:
        assert lifecycle.start(conn, uuid) is not None
        assert lifecycle.retry_later(conn, uuid, 1, None, ("JobFailed", "no"), later)
    waiting = ctl.get(f"/@jobs/{uuid}", headers=ctl.auth("alice")).json
    assert (waiting["status"], waiting["attempt"]) == ("created", 2)
    assert waiting["next_run"] == later.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert (waiting["started"], waiting["finished"]) == (None, None)
    assert "error" not in waiting


def test_a_retried_attempt_that_succeeds_completes(ctl):
    job = ctl.submit({"action": "flaky", "succeed_on": 2})
    done = ctl.wait_for(job["uuid"], "completed")
    assert (done["attempt"], done["result"]) == (2, {"attempt": 2})


# --- abort that really stops ----------------------------------------------------------------


def test_abort_of_a_handler_that_checks(ctl, tmp_path):
    marker = tmp_path / "checker"
    job = ctl.submit({"action": "checker", "marker": str(marker)})
    marked(marker, "running")
    asked = time.time()
    ctl.post(f"/@jobs/{job['uuid']}/abort", headers=ctl.auth(), status=204)
    # Its grace is 30 s: stopping within seconds means it stopped by checking.
    stopped = marked(marker, "JobAborted", timeout=20)
    assert stopped - asked < 15
    assert ctl.get(f"/@jobs/{job['uuid']}", headers=ctl.auth()).json["status"] == "aborted"
    # The worker thread is free again.
    echo = ctl.submit({"action": "echo", "message": "after"})
    assert ctl.wait_for(echo["uuid"], "completed")["result"]["message"] == "after"


def test_abort_of_a_handler_that_never_checks(ctl, tmp_path):
    marker = tmp_path / "oblivious"
    job = ctl.submit({"action": "oblivious", "marker": str(marker)}, login="alice")
    marked(marker, "running")
    asked = time.time()
    ctl.post(f"/@jobs/{job['uuid']}/abort", headers=ctl.auth("alice"), status=204)
    interrupted = marked(marker, "JobInterrupted", timeout=20)
    # Interrupted once its grace was over, within seconds more (it would run for 60).
    assert OBLIVIOUS_GRACE - 0.1 <= interrupted - asked < OBLIVIOUS_GRACE + 10
    aborted = ctl.get(f"/@jobs/{job['uuid']}", headers=ctl.auth("alice")).json
    assert (aborted["status"], aborted["result"]) == ("aborted", {})
    assert [(e, by) for e, by, _, _ in events(ctl.backend.engine, job["uuid"])] == [
        ("created", "alice"),
        ("aborted", "alice"),
    ]
    echo = ctl.submit({"action": "echo", "message": "after"})
    assert ctl.wait_for(echo["uuid"], "completed")["result"]["message"] == "after"


def test_the_runner_interrupts_an_aborted_handler_after_its_grace(engine):
    caught: list[type] = []
    looping = threading.Event()

    def never_checks(params, ctx):
        looping.set()
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                time.sleep(0.01)
        except JobAborted as exc:
            caught.append(type(exc))
            raise
        return {"ran": "to the end"}

    runner = runner_for(engine, JobAction(name="loops", handler=never_checks, abort_grace=0.3))
    uuid = make_job(engine, "loops")
    outcome: list[str | None] = []
    thread = threading.Thread(target=lambda: outcome.append(runner.run(uuid)))
    thread.start()
    assert looping.wait(10)
    with transaction(engine) as conn:
        lifecycle.abort(conn, uuid, "admin")
    aborted_at = time.monotonic()
    thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - aborted_at >= 0.3
    assert (outcome, caught) == (["aborted"], [JobInterrupted])
    assert runner.running() == {}
    assert row(engine, uuid).status == "aborted"


# --- stop and resume ----------------------------------------------------------------------


def test_stop_keeps_the_checkpoint_and_resume_continues_from_it(engine):
    starts: list[Any] = []
    past_three = threading.Event()

    def counts(params, ctx):
        starts.append(ctx.saved_checkpoint)
        first = (ctx.saved_checkpoint or 0) + 1
        for step in range(first, 3001):
            ctx.checkpoint(step)
            if step >= 3:
                past_three.set()
            ctx.check()
            if ctx.saved_checkpoint is None:
                time.sleep(0.01)  # paced until it is stopped; resumed, it runs straight on
        return {"from": first}

    runner = runner_for(engine, JobAction(name="counts", handler=counts, resumable=True))
    uuid = make_job(engine, "counts")
    outcome: list[str | None] = []
    thread = threading.Thread(target=lambda: outcome.append(runner.run(uuid)))
    thread.start()
    assert past_three.wait(10)
    with transaction(engine) as conn:
        lifecycle.request_stop(conn, uuid, "admin")
    with transaction(engine) as conn:
        lifecycle.request_stop(conn, uuid, "admin")  # asking twice is asking once
    thread.join(10)
    assert outcome == ["stopped"]
    stopped = row(engine, uuid)
    assert stopped.status == "stopped"
    assert stopped.finished is not None
    checkpoint = stopped.checkpoint
    assert 3 <= checkpoint < 3000

    with transaction(engine) as conn:
        assert lifecycle.resume(conn, uuid, "alice") == (2, "counts")
    past_three.clear()
    assert runner.run(uuid) == "completed"
    assert starts == [None, checkpoint]
    assert row(engine, uuid).result == {"from": checkpoint + 1}
    assert [(e, by, n) for e, by, n, _ in events(engine, uuid)] == [
        ("created", "admin", 1),
        ("stop requested", "admin", 1),
        ("resumed", "alice", 2),
    ]


def test_stop_and_resume_dummy_over_the_api(ctl):
    app = ctl
    job = app.submit({"action": "dummy", "sleep": 4, "steps": 20})
    url = f"/@jobs/{job['uuid']}"

    def some_progress():
        progress = app.get(url, headers=app.auth()).json.get("progress") or {}
        return progress.get("percent", 0) > 0

    poll(some_progress, what="dummy's first step")
    app.post(f"{url}/stop", headers=app.auth(), status=204)
    stopped = app.wait_for(job["uuid"], "stopped", timeout=10)
    assert stopped["finished"] is not None
    done = row(app.backend.engine, job["uuid"]).checkpoint
    assert 1 <= done < 20
    # A stopped job is not retried, only resumed (or deleted).
    res = app.post(f"{url}/retry", headers=app.auth(), status=409)
    assert res.json["error"]["status"] == "stopped"

    app.post(f"{url}/resume", headers=app.auth(), status=204)
    completed = app.wait_for(job["uuid"], "completed")
    assert completed["attempt"] == 2
    with app.backend.engine.connect() as conn:
        lines = conn.execute(
            sa.select(JobLog.message)
            .where(JobLog.job_uuid == job["uuid"], JobLog.attempt == 2)
            .order_by(JobLog.id)
        ).scalars()
        ran = [int(m.group(1)) for line in lines if (m := re.match(r"step (\d+) of 20", line))]
    # The resumed attempt did only the steps the stopped one had not done.
    assert ran == list(range(done + 1, 21))


def test_stop_of_an_action_that_cannot_resume_is_409(ctl):
    job = ctl.submit({"action": "echo", "message": "hi", "sleep": 30})
    ctl.wait_for(job["uuid"], "running")
    res = ctl.post(f"/@jobs/{job['uuid']}/stop", headers=ctl.auth(), status=409)
    assert res.json["error"] == {
        "type": "Not resumable",
        "message": "Jobs of action 'echo' can't be stopped and resumed; abort it instead.",
        "status": "running",
    }
    ctl.post(f"/@jobs/{job['uuid']}/abort", headers=ctl.auth(), status=204)


def test_stop_and_resume_in_other_states_are_409(app_without_worker):
    app = app_without_worker
    job = app.submit({"action": "dummy"})
    url = f"/@jobs/{job['uuid']}"
    res = app.post(f"{url}/stop", headers=app.auth(), status=409)
    assert res.json["error"] == {
        "type": "Invalid state",
        "message": "A created job can't be stopped.",
        "status": "created",
    }
    res = app.post(f"{url}/resume", headers=app.auth(), status=409)
    assert res.json["error"]["message"] == "A created job can't be resumed."
    # Someone else's job is not there for alice.
    app.post(f"{url}/stop", headers=app.auth("alice"), status=404)
    app.post(f"{url}/resume", headers=app.auth("alice"), status=404)
    app.post(f"{url}/abort", headers=app.auth(), status=204)
    res = app.post(f"{url}/stop", headers=app.auth(), status=409)
    assert res.json["error"]["status"] == "aborted"


def test_a_stopped_job_can_be_deleted(engine, make_app):
    app = make_app(**{"nick_jobs.embedded_worker_threads": "0"})
    uuid = make_job(engine, "dummy")
    with transaction(engine) as conn:
        lifecycle.start(conn, uuid)
        assert lifecycle.stopped(conn, attempt_of(uuid, 1), 4)
    res = app.post(f"/@jobs/{uuid}/abort", headers=app.auth(), status=409)
    assert res.json["error"]["status"] == "stopped"
    app.delete(f"/@jobs/{uuid}", headers=app.auth(), status=204)


# --- restart with lineage -----------------------------------------------------------------


def test_restart_makes_a_new_job_with_its_parent(ctl):
    app = ctl
    old = app.submit(
        {"action": "echo", "message": "again"}, login="alice", title="T", description="D"
    )
    app.wait_for(old["uuid"], "completed", login="alice")
    before = app.get(f"/@jobs/{old['uuid']}", headers=app.auth("alice")).json
    res = app.post(f"/@jobs/{old['uuid']}/restart", headers=app.auth("alice"), status=201)
    new = res.json
    assert res.headers["Location"] == new["@id"]
    assert new["uuid"] != old["uuid"]
    assert new["parent"] == old["uuid"]
    assert (new["title"], new["description"], new["params"]) == (
        "T",
        "D",
        {"action": "echo", "message": "again"},
    )
    assert (new["status"], new["attempt"], new["actor"]) == ("created", 1, "alice")
    assert app.get(f"/@jobs/{old['uuid']}", headers=app.auth("alice")).json == before
    rerun = app.wait_for(new["uuid"], "completed", login="alice")
    assert rerun["parent"] == old["uuid"]
    assert rerun["result"] == {"message": "again", "actor": "alice"}


def test_a_jobs_restarts_are_listed_by_parent(ctl):
    app = ctl
    old = app.submit({"action": "echo", "message": "again"}, login="alice")
    app.wait_for(old["uuid"], "completed", login="alice")
    restarts = []
    for _ in range(2):
        res = app.post(f"/@jobs/{old['uuid']}/restart", headers=app.auth("alice"), status=201)
        restarts.append(res.json["uuid"])
        app.wait_for(restarts[-1], "completed", login="alice")
    app.submit({"action": "echo", "message": "unrelated"}, login="alice")

    def listed(query: str, login: str = "alice") -> list[str]:
        return [j["uuid"] for j in app.get(f"/@jobs?{query}", headers=app.auth(login)).json]

    assert listed(f"parent={old['uuid']}") == restarts[::-1]
    assert listed(f"parent={old['uuid'].upper()}") == restarts[::-1]  # any spelling of it
    assert listed(f"parent={old['uuid']}", login="admin") == restarts[::-1]
    assert listed(f"parent={old['uuid']}", login="bob") == []  # alice's restarts
    assert listed(f"parent={restarts[0]}") == []
    assert listed(f"parent={old['uuid']}&status=completed&action=echo") == restarts[::-1]
    page = app.get(f"/@jobs?parent={old['uuid']}&b_size=1&count=true", headers=app.auth("alice"))
    assert [j["uuid"] for j in page.json] == restarts[-1:]
    assert page.headers["X-Total-Count"] == "2"
    assert f"parent={old['uuid']}" in page.headers["Link"]


def test_restart_of_an_unfinished_job_is_409(app_without_worker):
    app = app_without_worker
    job = app.submit({"action": "dummy"})
    res = app.post(f"/@jobs/{job['uuid']}/restart", headers=app.auth(), status=409)
    assert res.json["error"] == {
        "type": "Invalid state",
        "message": "A created job can't be restarted.",
        "status": "created",
    }
    assert len(app.get("/@jobs", headers=app.auth()).json) == 1


def test_restart_needs_the_actions_permission(engine, make_app):
    app = make_app(**{"nick_jobs.embedded_worker_threads": "0"})
    # alice's own dummy job (made by an administrator for her, say): she may not submit it.
    uuid = make_job(engine, "dummy", actor="alice")
    with transaction(engine) as conn:
        lifecycle.abort(conn, uuid, "admin")
    res = app.post(f"/@jobs/{uuid}/restart", headers=app.auth("alice"), status=403)
    assert res.json["error"]["message"] == "You are not allowed to submit 'dummy' jobs."
    new = app.post(f"/@jobs/{uuid}/restart", headers=app.auth(), status=201).json
    assert (new["actor"], new["parent"]) == ("admin", uuid)


def test_a_retry_waiting_at_start_up_is_sent_delayed_until_its_next_run(tmp_path):
    settings = base_settings(
        **{
            "sqlalchemy.url": f"sqlite:///{tmp_path / 'delay.sqlite'}",
            "nick_jobs.broker_url": "stub://",
            "nick_jobs.auto_migrate": "true",
            "nick_jobs.embedded_worker_threads": "0",
        }
    )
    registry = main({}, **settings).registry
    engine, queue = registry["nick_jobs.engine"], registry["nick_jobs.queue"]
    try:
        due, waiting = make_job(engine, "dummy"), make_job(engine, "dummy")
        with transaction(engine) as conn:
            later = utcnow() + dt.timedelta(seconds=30)
            conn.execute(jobs.update().where(jobs.c.uuid == waiting).values(next_run=later))
        with engine.connect() as conn:
            assert lifecycle.send_waiting(conn, queue.send) == 2
        name = queue.settings.queue_name
        [now] = [Message.decode(m) for m in queue.broker.queues[name].queue]
        [delayed] = [Message.decode(m) for m in queue.broker.queues[dq_name(name)].queue]
        assert (list(now.args), list(delayed.args)) == ([due], [waiting])
        # Delivered at its next_run (and a few milliseconds' margin), however long the
        # sending took.
        assert 0 <= delayed.options["eta"] - later.timestamp() * 1000 < 1_000
    finally:
        engine.dispose()


def test_the_history_of_a_resumed_job_keeps_the_stopped_attempt(app_without_worker):
    app = app_without_worker
    job = app.submit({"action": "dummy", "steps": 3})
    engine = app.backend.engine
    with transaction(engine) as conn:
        lifecycle.start(conn, job["uuid"])
        lifecycle.request_stop(conn, job["uuid"], by="admin")
        assert lifecycle.stopped(conn, attempt_of(job["uuid"], 1), 2)
    app.post(f"/@jobs/{job['uuid']}/resume", headers=app.auth(), status=204)
    history = app.get(f"/@jobs/{job['uuid']}/history", headers=app.auth()).json
    assert [(e["event"], e["by"], e["attempt"]) for e in history] == [
        ("created", "admin", 1),
        ("started", "worker", 1),
        ("stop requested", "admin", 1),
        ("stopped", "worker", 1),
        ("resumed", "admin", 2),
    ]
    resumed = history[-1]["previous_attempt"]
    assert resumed["status"] == "stopped"
    assert resumed["started"] == history[1]["time"]
    assert resumed["finished"] == history[3]["time"]


def test_the_abort_check_interval_reaches_the_worker(make_app, backend):
    app = make_app(**{"nick_jobs.abort_check_interval": "0.2"})
    assert app.app.registry["nick_jobs.queue"].runner.watcher.interval_s == 0.2
