"""``GET /@jobs/@stats`` on every backend, and the figures of ``nick_jobs.jobs.stats``.

Where a test needs jobs that finished in given past minutes, the jobs really run through
the state machine (``lifecycle.start`` then ``complete``, ``fail`` or ``abort``, as a
worker and the API do) and only then is their ``finished`` time moved back with an
``UPDATE``: the state machine stamps the present, and waiting real minutes is not an
option. Waiting jobs are aged the same way, through ``created`` or ``enqueued``.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest
import sqlalchemy as sa

from nick_jobs.db.after_commit import transaction
from nick_jobs.db.meta import utcnow
from nick_jobs.jobs import lifecycle, stats
from nick_jobs.jobs.model import JobStatus

jobs = lifecycle.jobs
STATUSES = [status.value for status in JobStatus]
VALIDATION = "Validation error"
MINUTE = dt.timedelta(minutes=1)


def parse(value: str) -> dt.datetime:
    assert value.endswith("Z"), value
    return dt.datetime.fromisoformat(value[:-1] + "+00:00")


def get_stats(app, login: str = "admin", status: int = 200, **query: Any) -> dict:
    return app.get("/@jobs/@stats", query, headers=app.auth(login), status=status).json


def submit(app, login: str = "admin", action: str = "echo", **params: Any) -> str:
    """A job of ``login``'s; ``echo`` (which any user may submit) unless told."""
    if action == "echo":
        params.setdefault("message", "hi")
    return app.submit({"action": action, **params}, login=login)["uuid"]


def set_times(engine, uuid: str, **values: dt.datetime | None) -> None:
    with engine.begin() as conn:
        assert conn.execute(jobs.update().where(jobs.c.uuid == uuid).values(**values)).rowcount


def run(engine, uuid: str, outcome: str) -> None:
    """Start the job as a worker would, then end it with ``outcome``."""
    with transaction(engine) as conn:
        started = lifecycle.start(conn, uuid)
        assert started is not None
    with transaction(engine) as conn:
        if outcome == "completed":
            assert lifecycle.complete(conn, started, {})
        elif outcome == "failed":
            assert lifecycle.fail(conn, started, "JobFailed", "on purpose")
        elif outcome == "aborted":
            lifecycle.abort(conn, uuid, by="admin")
        else:
            assert outcome == "stopped"
            assert lifecycle.stopped(conn, started, {"at": 1})


def finished_in(engine, uuid: str, outcome: str, when: dt.datetime) -> None:
    run(engine, uuid, outcome)
    set_times(engine, uuid, finished=when)


def bucket(body: dict, when: dt.datetime) -> dict:
    """The entry of ``finished_per_minute`` for the minute ``when`` is in."""
    minute = stats.minute_start(when)
    entries = [e for e in body["finished_per_minute"] if parse(e["minute"]) == minute]
    assert len(entries) == 1, (minute, body["finished_per_minute"])
    return entries[0]


def totals(body: dict) -> dict[str, int]:
    return {
        outcome: sum(entry[outcome] for entry in body["finished_per_minute"])
        for outcome in ("completed", "failed", "aborted")
    }


# --- who sees what ---------------------------------------------------------------------


def test_an_administrator_counts_every_job_and_a_user_only_their_own(app_without_worker):
    app = app_without_worker
    engine = app.backend.engine
    for login in ("alice", "alice", "bob"):
        submit(app, login)
    done = submit(app, "admin")
    run(engine, done, "completed")

    body = get_stats(app)
    assert body["@id"] == "http://localhost:8080/@jobs/@stats"
    assert body["total"] == 4
    assert body["counts"] == {**dict.fromkeys(STATUSES, 0), "created": 3, "completed": 1}
    assert body["by_action"] == {
        "echo": {"total": 4, **dict.fromkeys(STATUSES, 0), "created": 3, "completed": 1}
    }
    assert totals(body)["completed"] == 1

    alice = get_stats(app, "alice")
    assert alice["total"] == 2
    assert alice["counts"] == {**dict.fromkeys(STATUSES, 0), "created": 2}
    assert alice["by_action"]["echo"]["total"] == 2
    assert totals(alice) == {"completed": 0, "failed": 0, "aborted": 0}
    assert get_stats(app, "bob")["total"] == 1


def test_counts_by_status_and_action_name_every_status_zeros_included(app_without_worker):
    app = app_without_worker
    engine = app.backend.engine
    for outcome in ("completed", "failed", "failed", "aborted", "stopped"):
        run(engine, submit(app), outcome)
    submit(app)
    submit(app, action="dummy")

    body = get_stats(app)
    assert list(body["counts"]) == STATUSES
    assert body["counts"] == {
        "created": 2,
        "running": 0,
        "completed": 1,
        "failed": 2,
        "aborted": 1,
        "stopped": 1,
    }
    assert body["total"] == 7 == sum(body["counts"].values())
    assert list(body["by_action"]) == ["dummy", "echo"]
    assert body["by_action"]["dummy"] == {"total": 1, **dict.fromkeys(STATUSES, 0), "created": 1}
    assert body["by_action"]["echo"]["total"] == 6
    assert body["by_action"]["echo"]["failed"] == 2


def test_with_no_jobs_every_figure_is_zero(app_without_worker):
    body = get_stats(app_without_worker, "alice")
    assert body["total"] == 0
    assert body["counts"] == dict.fromkeys(STATUSES, 0)
    assert body["by_action"] == {}
    assert body["oldest_waiting"] is None
    assert len(body["finished_per_minute"]) == 60
    assert totals(body) == {"completed": 0, "failed": 0, "aborted": 0}


def test_anonymous_and_invalid_tokens_get_401(app_without_worker):
    app = app_without_worker
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        res = app.get("/@jobs/@stats", headers=headers, status=401)
        assert res.json["error"] == {
            "type": "Unauthorized",
            "message": "You are not authorized to access this resource.",
        }


# --- finished per minute ---------------------------------------------------------------


def test_jobs_a_worker_finishes_are_counted_in_the_window(app):
    ok = submit(app, "alice")
    bad = submit(app, "alice", action="explode")
    assert app.wait_for(ok, "completed", login="alice")["status"] == "completed"
    finished = app.wait_for(bad, "failed", login="alice")["finished"]

    body = get_stats(app, "alice")
    assert totals(body) == {"completed": 1, "failed": 1, "aborted": 0}
    assert bucket(body, parse(finished))["failed"] == 1
    assert (body["counts"]["completed"], body["counts"]["failed"]) == (1, 1)


def test_each_job_is_counted_in_the_minute_it_finished(app_without_worker):
    app = app_without_worker
    engine = app.backend.engine
    now = utcnow()
    # Minutes well inside the hour, so that the clock moving on to the next minute
    # before the request changes nothing.
    five, twelve = now - 5 * MINUTE, now - 12 * MINUTE
    five_start = stats.minute_start(five)
    finished_in(engine, submit(app), "completed", five_start)  # its first instant
    finished_in(engine, submit(app), "completed", five_start + dt.timedelta(seconds=59.999))
    finished_in(engine, submit(app), "failed", five)
    finished_in(engine, submit(app), "aborted", twelve)
    finished_in(engine, submit(app, "bob"), "failed", twelve)
    # A stopped job has a finished time, but it has not finished: it can be resumed.
    finished_in(engine, submit(app), "stopped", five)
    finished_in(engine, submit(app), "completed", now - 90 * MINUTE)  # before the window

    body = get_stats(app)
    assert bucket(body, five) == {
        "minute": five_start.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "completed": 2,
        "failed": 1,
        "aborted": 0,
    }
    twelfth = bucket(body, twelve)
    assert (twelfth["completed"], twelfth["failed"], twelfth["aborted"]) == (0, 1, 1)
    assert totals(body) == {"completed": 2, "failed": 2, "aborted": 1}
    assert body["counts"]["completed"] == 3  # the one before the window counts here

    bob = get_stats(app, "bob")
    assert totals(bob) == {"completed": 0, "failed": 1, "aborted": 0}
    assert bucket(bob, twelve)["failed"] == 1


def test_the_window_ends_with_the_current_minute_oldest_first(app_without_worker):
    app = app_without_worker
    before = utcnow()
    body = get_stats(app)
    after = utcnow()
    generated = parse(body["generated"])
    assert before <= generated <= after
    assert body["window"] == 60
    minutes = [parse(entry["minute"]) for entry in body["finished_per_minute"]]
    assert len(minutes) == 60
    assert minutes[-1] == stats.minute_start(generated)
    assert all(b - a == MINUTE for a, b in itertools.pairwise(minutes))
    assert all(
        set(e) == {"minute", "completed", "failed", "aborted"} for e in body["finished_per_minute"]
    )


def test_minutes_sets_the_window(app_without_worker):
    app = app_without_worker
    engine = app.backend.engine
    old = utcnow() - 90 * MINUTE
    finished_in(engine, submit(app), "completed", old)

    assert totals(get_stats(app))["completed"] == 0
    wide = get_stats(app, minutes="120")
    assert wide["window"] == 120
    assert len(wide["finished_per_minute"]) == 120
    assert bucket(wide, old)["completed"] == 1
    for minutes in ("1", "1440"):
        body = get_stats(app, minutes=minutes)
        assert len(body["finished_per_minute"]) == body["window"] == int(minutes)


@pytest.mark.parametrize("minutes", ["0", "1441", "-5", "sixty", "1.5", "", "99999999999999999999"])
def test_a_window_out_of_range_or_not_a_number_is_a_400(app_without_worker, minutes):
    res = app_without_worker.get(
        "/@jobs/@stats",
        {"minutes": minutes},
        headers=app_without_worker.auth(),
        status=400,
    )
    error = res.json["error"]
    assert error["type"] == VALIDATION
    assert list(error["fields"]) == ["minutes"]


def test_other_query_parameters_and_repeats_are_400s(app_without_worker):
    app = app_without_worker
    res = app.get("/@jobs/@stats?status=failed", headers=app.auth(), status=400)
    assert res.json["error"]["type"] == VALIDATION
    assert res.json["error"]["fields"] == {"status": ["Unknown field."]}
    res = app.get("/@jobs/@stats?minutes=5&minutes=6", headers=app.auth(), status=400)
    assert res.json["error"]["type"] == VALIDATION
    assert list(res.json["error"]["fields"]) == ["minutes"]


# --- the oldest waiting job ------------------------------------------------------------


def test_the_oldest_waiting_job_is_the_one_waiting_longest(app_without_worker):
    app = app_without_worker
    engine = app.backend.engine
    now = utcnow()
    alices = submit(app, "alice")
    set_times(engine, alices, created=now - dt.timedelta(minutes=20))
    bobs = submit(app, "bob")
    set_times(engine, bobs, created=now - dt.timedelta(minutes=30))
    # Created three hours ago, failed, and retried just now: it waits since the retry.
    retried = submit(app, "bob")
    set_times(engine, retried, created=now - dt.timedelta(hours=3))
    run(engine, retried, "failed")
    app.post(f"/@jobs/{retried}/retry", headers=app.auth(), status=204)
    # An automatic retry waiting out its backoff is not waiting for a worker yet.
    backing_off = submit(app, "alice")
    set_times(
        engine,
        backing_off,
        created=now - dt.timedelta(hours=5),
        next_run=now + dt.timedelta(minutes=10),
    )
    # Nor is a running job.
    running = submit(app)
    set_times(engine, running, created=now - dt.timedelta(hours=6))
    with transaction(engine) as conn:
        assert lifecycle.start(conn, running) is not None

    body = get_stats(app)
    oldest = body["oldest_waiting"]
    assert oldest["uuid"] == bobs
    assert oldest["@id"] == f"http://localhost:8080/@jobs/{bobs}"
    assert (oldest["action"], oldest["actor"], oldest["attempt"]) == ("echo", "bob", 1)
    assert oldest["created"] == oldest["waiting_since"]
    assert parse(oldest["created"]) == now - dt.timedelta(minutes=30)
    assert oldest["age"] == pytest.approx(
        (parse(body["generated"]) - parse(oldest["created"])).total_seconds(), abs=0.001
    )
    assert 1800 <= oldest["age"] < 1800 + 60

    assert get_stats(app, "alice")["oldest_waiting"]["uuid"] == alices

    # Bob's first job starts: his retried job is his oldest waiting, since its retry.
    with transaction(engine) as conn:
        assert lifecycle.start(conn, bobs) is not None
    oldest = get_stats(app, "bob")["oldest_waiting"]
    assert (oldest["uuid"], oldest["attempt"]) == (retried, 2)
    assert parse(oldest["created"]) == now - dt.timedelta(hours=3)
    assert parse(oldest["waiting_since"]) >= now
    assert oldest["age"] < 60

    # Once its backoff is over, the automatic retry waits since then.
    an_hour_ago = now - dt.timedelta(hours=1)
    set_times(engine, backing_off, attempt=2, next_run=an_hour_ago, enqueued=an_hour_ago)
    oldest = get_stats(app)["oldest_waiting"]
    assert oldest["uuid"] == backing_off
    assert parse(oldest["waiting_since"]) == now - dt.timedelta(hours=1)


# --- the path --------------------------------------------------------------------------


def test_the_path_is_the_containers_view_not_a_job(app_without_worker):
    app = app_without_worker
    headers = app.auth()
    assert app.get("/@jobs/@stats/more", headers=headers, status=404).json["error"]["type"]
    res = app.post("/@jobs/@stats", headers=headers, status=405)
    assert res.headers["Allow"] == "GET, HEAD"
    assert app.head("/@jobs/@stats", headers=headers, status=200).body == b""
    # The list and a job are still themselves.
    uuid = submit(app)
    assert [job["uuid"] for job in app.get("/@jobs", headers=headers).json] == [uuid]
    assert app.get(f"/@jobs/{uuid}", headers=headers).json["uuid"] == uuid


# --- the figures, at a fixed time ------------------------------------------------------


@pytest.fixture
def engine(app_without_worker) -> sa.Engine:
    return app_without_worker.backend.engine


def test_job_stats_counts_the_first_minute_from_its_first_instant(app_without_worker, engine):
    app = app_without_worker
    now = dt.datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
    first = dt.datetime(2030, 1, 2, 3, 0, tzinfo=dt.UTC)  # 5 minutes: 03:00 to 03:04
    finished_in(engine, submit(app), "completed", first)
    finished_in(engine, submit(app), "completed", first - dt.timedelta(milliseconds=1))
    finished_in(engine, submit(app), "failed", now)
    finished_in(engine, submit(app), "failed", now.replace(second=59, microsecond=999000))
    finished_in(engine, submit(app), "aborted", now + MINUTE)  # a clock ahead: not counted

    with engine.connect() as conn:
        figures = stats.job_stats(conn, window=5, now=now)
    assert figures.generated == now
    assert [m.start for m in figures.per_minute] == [first + i * MINUTE for i in range(5)]
    assert [m.finished for m in figures.per_minute] == [
        {"completed": 1, "failed": 0, "aborted": 0},
        *[{"completed": 0, "failed": 0, "aborted": 0}] * 3,
        {"completed": 0, "failed": 2, "aborted": 0},
    ]
    body = stats.stats_json(figures, "http://example.org/@jobs")
    assert body["generated"] == "2030-01-02T03:04:05.678Z"
    assert body["finished_per_minute"][0]["minute"] == "2030-01-02T03:00:00.000Z"
    assert body["@id"] == "http://example.org/@jobs/@stats"


def test_job_stats_refuses_a_window_out_of_range(engine):
    with engine.connect() as conn:
        for window in (0, 1441):
            with pytest.raises(ValueError, match="window"):
                stats.job_stats(conn, window=window)
