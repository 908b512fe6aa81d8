"""Progress, steps and log lines a handler reports; ``/log`` and ``/history``, on every backend."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from nick_jobs.db import get_engine
from nick_jobs.db.after_commit import transaction
from nick_jobs.db.meta import utcnow
from nick_jobs.jobs import lifecycle
from nick_jobs.jobs.actions import ActionRegistry, JobAction
from nick_jobs.jobs.builtin_actions import dummy_action, prune_action
from nick_jobs.jobs.model import JobLog
from nick_jobs.worker import reporting
from nick_jobs.worker.runner import JobAborted, JobContext, JobFailed, JobRunner

job_logs = JobLog.__table__


@pytest.fixture(autouse=True)
def quick_abort_checks(monkeypatch):
    monkeypatch.setattr(JobContext, "CHECK_INTERVAL_S", 0.01)


@pytest.fixture
def engine(app_without_worker) -> Iterator[sa.Engine]:
    """An engine of its own for the runner, so its statements can be counted."""
    engine = get_engine(app_without_worker.backend.settings["sqlalchemy.url"])
    yield engine
    engine.dispose()


@contextlib.contextmanager
def counted(engine: sa.Engine) -> Iterator[list[str]]:
    """The statements the job's run makes on ``engine``: those of this thread, which runs
    it, and of the thread that writes its progress. Not the abort watcher's looks, which
    are the process's, taken whenever its thread wakes, nor those of any other thread
    that shares the engine in this process."""
    statements: list[str] = []
    runs_it = threading.current_thread()

    def count(conn, cursor, statement, parameters, context, executemany):
        thread = threading.current_thread()
        if thread is runs_it or thread.name == "nick-jobs-progress":
            statements.append(" ".join(statement.split()))

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)


def runner_for(engine: sa.Engine, *actions: JobAction, **handlers: Callable) -> JobRunner:
    registry = ActionRegistry()
    for action in actions:
        registry.add(action)
    for name, handler in handlers.items():
        registry.add(JobAction(name=name, handler=handler))
    return JobRunner(engine, registry, heartbeat_interval_s=0)


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


def stored_logs(engine: sa.Engine, uuid: str) -> list[tuple[int, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(job_logs.c.level, job_logs.c.message)
            .where(job_logs.c.job_uuid == uuid)
            .order_by(job_logs.c.id)
        ).all()
    return [tuple(r) for r in rows]


def poll(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"not true within {timeout} s: {check}")


def progress_writes(statements: list[str]) -> list[str]:
    return [s for s in statements if s.startswith("UPDATE jobs SET progress")]


def log_inserts(statements: list[str]) -> list[str]:
    return [s for s in statements if s.startswith("INSERT INTO job_logs")]


# --- batching ----------------------------------------------------------------------------


def test_a_hundred_thousand_reports_make_a_handful_of_writes(app_without_worker, engine):
    client = app_without_worker

    def handler(params, ctx):
        for i in range(1, 100_001):
            ctx.progress(i, 100_000, step="count")
            if i % 1000 == 0:
                ctx.info(f"{i} counted")
        ctx.message("counted")
        return {"counted": 100_000}

    uuid = make_job(engine, "count")
    with counted(engine) as statements:
        assert runner_for(engine, count=handler).run(uuid) == "completed"
    writes, inserts = progress_writes(statements), log_inserts(statements)
    # One write a second at most while it runs; the last one rides on the completion.
    # The abort checks are cached.
    assert len(writes) <= 10, writes
    assert len(inserts) <= len(writes) + 1
    finishing = [s for s in statements if "SET status=" in s and "progress=" in s]
    assert len(finishing) == 1, statements
    assert len(statements) < 100, len(statements)
    job = client.get(f"/@jobs/{uuid}", headers=client.auth()).json
    assert job["status"] == "completed"
    assert job["progress"] == {
        "percent": 100.0,
        "message": "counted",
        "steps": [{"name": "count", "done": 100_000, "total": 100_000, "status": "done"}],
    }
    assert len(stored_logs(engine, uuid)) == 100


def test_a_job_that_reports_nothing_writes_nothing_more(app_without_worker, engine):
    uuid = make_job(engine, "quiet")
    with counted(engine) as statements:
        assert runner_for(engine, quiet=lambda params, ctx: {"ok": True}).run(uuid) == "completed"
    assert len(statements) == 2, statements  # start and complete
    assert not progress_writes(statements)
    assert not log_inserts(statements)
    job = app_without_worker.get(f"/@jobs/{uuid}", headers=app_without_worker.auth()).json
    assert job["progress"] is None
    assert job["parent"] is None
    assert job["next_run"] is None


# A deadline on a real worker process's writes: alone, after the others (make test), where
# a second means what it says. Under the parallel run a starved worker took 1.9 s once.
@pytest.mark.exclusive
def test_stored_progress_is_at_most_a_second_behind(app):
    job = app.submit({"action": "report", "seconds": 4, "every": 0.005})
    uuid = job["uuid"]
    lags = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        # From when the request was sent: what the row held then was at most this old,
        # however long a loaded machine takes to answer.
        asked = time.time()
        job = app.get(f"/@jobs/{uuid}", headers=app.auth()).json
        if job["status"] != "running" and job["status"] != "created":
            break
        if job["status"] == "running" and job["progress"] is not None:
            lags.append(asked - float(job["progress"]["message"]))
        time.sleep(0.05)
    assert job["status"] == "completed", job
    assert len(lags) >= 20, lags
    assert max(lags) < 1.6, lags
    # Written continuously, not once at the end.
    assert len({round(lag, 3) for lag in lags}) > 1


@pytest.mark.exclusive  # a deadline on a real worker process's write, as above
def test_a_quiet_handler_s_last_report_is_written_within_a_second(app):
    # One report, then nothing for three seconds: the worker writes it on its own.
    job = app.submit({"action": "report", "seconds": 3, "every": 5})
    uuid = job["uuid"]
    sent = None  # when the last request that found no progress was sent

    def reported():
        nonlocal sent
        asked = time.time()
        job = app.get(f"/@jobs/{uuid}", headers=app.auth()).json
        if job["progress"] is None:
            sent = asked
            return None
        return job

    job = poll(reported, timeout=20)
    # Seen while the handler is still quiet: written by the worker on its own, not by the
    # job's end three seconds after the report; and not yet written when a request sent
    # a second and a half after the report asked (the write interval is a second).
    assert job["status"] == "running"
    report = float(job["progress"]["message"])
    assert sent is None or sent - report < 1.6, sent - report
    app.wait_for(uuid, "completed")


# --- steps and percent ---------------------------------------------------------------------


def test_percent_is_derived_from_the_steps(app_without_worker, engine):
    def handler(params, ctx):
        ctx.steps(["fetch", "parse", "store", "index"])
        ctx.step("fetch")
        ctx.step("fetch", done=3, total=3)
        ctx.step("parse", total=4)
        ctx.progress(1, message="parsing")  # on the running step
        ctx.warning("row 7 is odd")

    uuid = make_job(engine, "steps")
    assert runner_for(engine, steps=handler).run(uuid) == "completed"
    client = app_without_worker
    progress = client.get(f"/@jobs/{uuid}", headers=client.auth()).json["progress"]
    assert progress == {
        "percent": 31.25,  # (1 + 1/4 + 0 + 0) / 4
        "message": "parsing",
        "steps": [
            {"name": "fetch", "done": 3, "total": 3, "status": "done"},
            {"name": "parse", "done": 1, "total": 4, "status": "running"},
            {"name": "store", "done": None, "total": None, "status": "pending"},
            {"name": "index", "done": None, "total": None, "status": "pending"},
        ],
    }


def test_starting_a_step_ends_the_running_one():
    report = reporting.Report(None, "a-uuid", 1, interval_s=60)
    report.registered = True  # nothing to write: keep it away from the writer thread
    steps = report.steps
    report.step("a", None, 10, None)
    report.step("a", 4, None, None)
    report.step("b", None, None, None)
    assert [(s["name"], s["done"], s["status"]) for s in steps.values()] == [
        ("a", 10, "done"),
        ("b", None, "running"),
    ]
    assert reporting.progress_json(list(steps.values()), "")["percent"] == 50.0


def test_dummy_reports_a_step_and_a_log_line_per_step(app_without_worker, engine):
    uuid = make_job(engine, "dummy", steps=3)
    assert runner_for(engine, dummy_action).run(uuid) == "completed"
    client = app_without_worker
    progress = client.get(f"/@jobs/{uuid}", headers=client.auth()).json["progress"]
    assert progress["percent"] == 100.0
    assert progress["message"] == "step 3 of 3"
    assert [(s["name"], s["status"]) for s in progress["steps"]] == [
        ("step 1", "done"),
        ("step 2", "done"),
        ("step 3", "done"),
    ]
    lines = client.get(f"/@jobs/{uuid}/log", headers=client.auth()).json
    assert [line["message"] for line in lines] == [f"step {i} of 3 done" for i in (1, 2, 3)]


def test_dummy_with_no_steps_reports_nothing(app_without_worker, engine):
    # The no-op job: it only completes, with its result, or fails as asked.
    done = make_job(engine, "dummy", steps=0, result={"answer": 42})
    failing = make_job(engine, "dummy", steps=0, fail="as asked")
    runner = runner_for(engine, dummy_action)
    assert runner.run(done) == "completed"
    assert runner.run(failing) == "failed"
    client = app_without_worker
    job = client.get(f"/@jobs/{done}", headers=client.auth()).json
    assert job["result"] == {"answer": 42}
    assert job["progress"] is None
    assert client.get(f"/@jobs/{failing}", headers=client.auth()).json["progress"] is None
    assert stored_logs(engine, done) == stored_logs(engine, failing) == []
    assert client.get(f"/@jobs/{failing}", headers=client.auth()).json["error"] == {
        "type": "JobFailed",
        "message": "as asked",
    }


# --- the last write, whatever the outcome ----------------------------------------------------


def test_a_failed_job_keeps_its_last_report(app_without_worker, engine):
    def handler(params, ctx):
        ctx.step("only", done=1, total=2)
        ctx.error("giving up")
        raise JobFailed("no")

    uuid = make_job(engine, "fails")
    assert runner_for(engine, fails=handler).run(uuid) == "failed"
    client = app_without_worker
    job = client.get(f"/@jobs/{uuid}", headers=client.auth()).json
    assert job["progress"]["percent"] == 50.0
    assert stored_logs(engine, uuid) == [(40, "giving up")]


def test_an_aborted_job_keeps_its_last_lines(app_without_worker, engine):
    client = app_without_worker

    def handler(params, ctx):
        ctx.info("working")
        client.post(f"/@jobs/{ctx.uuid}/abort", headers=client.auth(), status=204)
        try:
            while True:
                ctx.sleep(0.05)
        except JobAborted:
            with contextlib.suppress(JobAborted):
                ctx.warning("cleaning up")
            raise

    uuid = make_job(engine, "aborts")
    assert runner_for(engine, aborts=handler).run(uuid) == "aborted"
    assert stored_logs(engine, uuid) == [(20, "working"), (30, "cleaning up")]


def test_a_retried_attempt_s_late_lines_are_fenced_out(app_without_worker, engine):
    uuid = make_job(engine, "late")
    with transaction(engine) as conn:
        lifecycle.start(conn, uuid)
    report = reporting.Report(engine, uuid, attempt=1, interval_s=60)
    report.add_line(20, "attempt 1")
    with transaction(engine) as conn:
        lifecycle.abort(conn, uuid, by="admin")
        lifecycle.retry(conn, uuid, by="admin")
    report.close()
    assert stored_logs(engine, uuid) == []


# --- GET /@jobs/{uuid}/log -------------------------------------------------------------------


def _logging_job(engine: sa.Engine, lines: int, actor: str = "admin") -> str:
    levels = ["debug", "info", "warning", "error"]

    def handler(params, ctx):
        for i in range(lines):
            ctx.log(f"line {i}", level=levels[i % 4])

    uuid = make_job(engine, "logs", actor=actor)
    assert runner_for(engine, logs=handler).run(uuid) == "completed"
    return uuid


def test_log_lines_oldest_first_paged_by_cursor(app_without_worker, engine):
    client = app_without_worker
    uuid = _logging_job(engine, 25)
    url, seen, pages = f"/@jobs/{uuid}/log?b_size=10", [], 0
    while url:
        response = client.get(url, headers=client.auth())
        pages += 1
        seen += response.json
        link = response.headers.get("Link")
        url = link[1 : link.index(">")].removeprefix("http://localhost:8080") if link else None
    assert pages == 3
    assert [line["message"] for line in seen] == [f"line {i}" for i in range(25)]
    first = seen[0]
    assert set(first) == {"time", "level", "message", "attempt"}
    assert (first["level"], first["attempt"]) == ("debug", 1)
    assert first["time"].endswith("Z")


def test_log_filtered_by_minimum_level(app_without_worker, engine):
    client = app_without_worker
    uuid = _logging_job(engine, 8)
    lines = client.get(f"/@jobs/{uuid}/log?level=warning", headers=client.auth()).json
    assert [(line["level"], line["message"]) for line in lines] == [
        ("warning", "line 2"),
        ("error", "line 3"),
        ("warning", "line 6"),
        ("error", "line 7"),
    ]
    response = client.get(f"/@jobs/{uuid}/log?level=loud", headers=client.auth(), status=400)
    assert response.json["error"]["type"] == "Validation error"
    response = client.get(f"/@jobs/{uuid}/log?cursor=nonsense", headers=client.auth(), status=400)
    assert response.json["error"]["type"] == "Invalid cursor"


def test_deleting_or_pruning_a_job_deletes_its_log(app_without_worker, engine):
    client = app_without_worker
    deleted, pruned = _logging_job(engine, 3), _logging_job(engine, 3)
    client.delete(f"/@jobs/{deleted}", headers=client.auth(), status=204)
    assert stored_logs(engine, deleted) == []
    # Make the other one old enough to prune.
    with transaction(engine) as conn:
        conn.execute(
            lifecycle.jobs.update()
            .where(lifecycle.jobs.c.uuid == pruned)
            .values(finished=utcnow().replace(year=2000))
        )
    prune = make_job(engine, "prune", days=1)
    assert runner_for(engine, prune_action).run(prune) == "completed"
    assert stored_logs(engine, pruned) == []


# --- GET /@jobs/{uuid}/history -----------------------------------------------------------------


def test_history_says_what_happened_and_who_did_it(app_without_worker, engine):
    client = app_without_worker
    alice = client.auth("alice")
    started = threading.Event()

    def handler(params, ctx):
        if ctx.attempt == 1:
            started.set()
            while True:
                ctx.sleep(0.05)
        return {"attempt": ctx.attempt}

    runner = runner_for(engine, wait=handler)
    uuid = make_job(engine, "wait", actor="alice")
    outcome: list[str | None] = []
    thread = threading.Thread(target=lambda: outcome.append(runner.run(uuid)))
    thread.start()
    assert started.wait(10)
    client.post(f"/@jobs/{uuid}/abort", headers=alice, status=204)
    thread.join(10)
    assert outcome == ["aborted"]
    client.post(f"/@jobs/{uuid}/retry", headers=alice, status=204)
    assert runner.run(uuid) == "completed"

    history = client.get(f"/@jobs/{uuid}/history", headers=alice).json
    assert [(e["event"], e["by"], e["attempt"]) for e in history] == [
        ("created", "alice", 1),
        ("started", "worker", 1),
        ("aborted", "alice", 1),
        ("retried", "alice", 2),
        ("started", "worker", 2),
        ("completed", "worker", 2),
    ]
    times = [e["time"] for e in history]
    assert times == sorted(times)
    retried = history[3]
    assert retried["previous_attempt"]["status"] == "aborted"
    assert retried["previous_attempt"]["finished"].endswith("Z")
    assert history[-1]["result"] == {"attempt": 2}


def test_history_of_a_failed_job_names_its_error(app_without_worker, engine):
    client = app_without_worker

    def handler(params, ctx):
        raise JobFailed("disk full")

    uuid = make_job(engine, "fails")
    runner_for(engine, fails=handler).run(uuid)
    history = client.get(f"/@jobs/{uuid}/history", headers=client.auth()).json
    assert [e["event"] for e in history] == ["created", "started", "failed"]
    assert history[-1]["error"] == {"type": "JobFailed", "message": "disk full"}


# --- authorization ----------------------------------------------------------------------------


@pytest.mark.parametrize("view", ["log", "history"])
def test_same_authorization_as_the_job(app_without_worker, engine, view):
    client = app_without_worker
    uuid = _logging_job(engine, 2, actor="alice")
    assert len(client.get(f"/@jobs/{uuid}/{view}", headers=client.auth("alice")).json) >= 2
    assert len(client.get(f"/@jobs/{uuid}/{view}", headers=client.auth("admin")).json) >= 2
    response = client.get(f"/@jobs/{uuid}/{view}", headers=client.auth("bob"), status=404)
    assert response.json["error"]["type"] == "Not found"
    response = client.get(f"/@jobs/{uuid}/{view}", status=401)
    assert response.json["error"]["type"] == "Unauthorized"
    client.post_json(f"/@jobs/{uuid}/{view}", {}, headers=client.auth("alice"), status=405)
