"""Retention: the built-in ``prune``.

* On a table large enough to need many batches: on PostgreSQL, with tens of thousands of
  finished jobs, their history and their logs bulk-loaded with ``generate_series``.
* Per-status retention (``completed_days``, ``failed_days``, ``aborted_days``) at its
  boundaries, ``days`` alone as it always was, and bad values refused: on PostgreSQL
  and on SQLite.

The prune runs in this process through the worker's runner, so the tests watch its
statements and transactions as they happen.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa

from nick_jobs import main
from nick_jobs.db import get_engine, migrations
from nick_jobs.db.after_commit import transaction
from nick_jobs.db.meta import utcnow
from nick_jobs.jobs import lifecycle
from nick_jobs.jobs.actions import ActionRegistry
from nick_jobs.jobs.builtin_actions import prune_action
from nick_jobs.jobs.model import JobHistory, JobLog
from nick_jobs.settings import ConfigurationError
from nick_jobs.worker.runner import JobRunner
from tests.conftest import (
    PG_ADMIN_URL,
    PG_HOST,
    PG_TEST_DB,
    Client,
    attempt_of,
    base_settings,
    need,
    reset_database,
)

jobs = lifecycle.jobs

PER_OLD_STATUS = 10_000  # completed, failed and aborted each: 30 batches of 1,000
RECENT = 3_000
UNFINISHED = 300  # of each: created, running, stopped
BATCH = 1_000

# Titles say what each job is, so counts per title say what prune kept.
LOAD = """
INSERT INTO jobs (uuid, title, description, action, params, actor, status, created,
                  started, finished, result, error, attempt)
SELECT gen_random_uuid()::text, kind, '', 'dummy', '{}'::jsonb, 'admin', status,
       at - interval '1 minute', CASE WHEN status <> 'created' THEN at END, finished,
       '{}'::jsonb, NULL, 1
FROM (
    -- The oldest first, as on a real table: 40 days ago, past a 30-day retention.
    SELECT 'old' AS kind, (ARRAY['completed', 'failed', 'aborted'])[g % 3 + 1] AS status,
           now() - interval '40 days' + g * interval '1 ms' AS at,
           now() - interval '40 days' + g * interval '1 ms' AS finished, g
    FROM generate_series(1, :old) AS g
    UNION ALL
    -- Old but not finished: never pruned, whatever their age. A stopped job has a
    -- finished time (when it stopped), and still waits to be resumed.
    SELECT 'unfinished', (ARRAY['created', 'running', 'stopped'])[g % 3 + 1],
           now() - interval '400 days', NULL, :old + g
    FROM generate_series(1, :unfinished) AS g
    UNION ALL
    -- Finished within the retention, one of them a minute short of it.
    SELECT 'recent', (ARRAY['completed', 'failed', 'aborted'])[g % 3 + 1],
           now() - interval '29 days 23 hours 59 minutes' + g * interval '1 second',
           now() - interval '29 days 23 hours 59 minutes' + g * interval '1 second',
           :old + :unfinished + g
    FROM generate_series(1, :recent) AS g
) AS rows
ORDER BY g
"""
STOPPED_FINISHED = "UPDATE jobs SET finished = now() - interval '400 days' WHERE status = 'stopped'"
# What the API and a handler leave: a 'created' history entry and two log lines per job.
HISTORY = """
INSERT INTO job_history (job_uuid, time, event, by, attempt, data)
SELECT uuid, created, 'created', actor, 1, '{}'::jsonb FROM jobs
"""
LOGS = """
INSERT INTO job_logs (job_uuid, attempt, time, level, message)
SELECT uuid, 1, created, 20, 'line ' || n FROM jobs, generate_series(1, 2) AS n
"""


@pytest.fixture(scope="module")
def own_pg_url():
    """A database of this module's own: the shared test database may have a real worker
    process of another test's backend on it, whose sweeper would rescue and re-send the
    old unfinished jobs these tests must see untouched."""
    need("PostgreSQL", PG_HOST, 5432)
    name = f"{PG_TEST_DB}_retention"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    url = f"postgresql+psycopg://postgres@{PG_HOST}:5432/{name}"
    engine = get_engine(url)
    migrations.upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture
def engine(own_pg_url):
    engine = get_engine(own_pg_url)
    reset_database(engine)
    yield engine
    reset_database(engine)  # leave the shared test database small for the tests after
    engine.dispose()


def load(engine: sa.Engine) -> None:
    with transaction(engine) as conn:
        params = {"old": 3 * PER_OLD_STATUS, "unfinished": 3 * UNFINISHED, "recent": RECENT}
        conn.execute(sa.text(LOAD), params)
        conn.execute(sa.text(STOPPED_FINISHED))
        conn.execute(sa.text(HISTORY))
        conn.execute(sa.text(LOGS))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("jobs", "job_history", "job_logs"):
            conn.execute(sa.text(f"ANALYZE {table}"))


def counts(conn: sa.Connection) -> dict[str, Any]:
    """Jobs per (title, status); history entries and log lines per title, and orphans."""
    out: dict[str, Any] = {
        "jobs": Counter(
            {
                (title, status): n
                for title, status, n in conn.execute(
                    sa.text("SELECT title, status, count(*) FROM jobs GROUP BY title, status")
                )
            }
        )
    }
    for table in ("job_history", "job_logs"):
        out[table] = dict(
            conn.execute(
                sa.text(
                    f"SELECT coalesce(j.title, 'orphan'), count(*) FROM {table} t "  # noqa: S608
                    "LEFT JOIN jobs j ON j.uuid = t.job_uuid GROUP BY 1"
                )
            ).all()
        )
    return out


def old_left(conn: sa.Connection) -> int:
    return conn.execute(
        sa.text("SELECT count(*) FROM jobs WHERE title = 'old' AND status <> 'created'")
    ).scalar_one()


def test_prune_deletes_what_is_past_retention_batch_by_batch_and_keeps_the_rest(engine):
    load(engine)
    old = 3 * PER_OLD_STATUS
    batches = math.ceil(old / BATCH)
    with engine.connect() as conn:
        before = counts(conn)
        # A failed job the fifth batch will pick: retried (as POST .../retry does) between
        # that batch's SELECT and its DELETE, so it is unfinished when the DELETE runs.
        retried_uuid, retried_id = conn.execute(
            sa.select(jobs.c.uuid, jobs.c.id)
            .where(jobs.c.title == "old", jobs.c.status == "failed")
            .order_by(jobs.c.id)
            .offset(4 * BATCH // 3 + 1)
            .limit(1)
        ).one()
        running_uuid = conn.execute(
            sa.select(jobs.c.uuid).where(jobs.c.status == "running").limit(1)
        ).scalar_one()
    assert before["jobs"][("old", "completed")] == PER_OLD_STATUS

    with transaction(engine) as conn:
        prune_uuid = lifecycle.create(
            conn,
            action="prune",
            params={"action": "prune", "days": 30, "batch_size": BATCH},
            actor="admin",
            title="prune",
            description="",
        )["uuid"]

    # Every transaction of every connection of the prune's engine, with its statements.
    open_tx: dict[int, list[tuple[str, int]]] = {}
    transactions: list[list[tuple[str, int]]] = []
    # What other sessions could do and see while a batch's transaction was open.
    seen: list[dict[str, Any]] = []
    retried_during: list[int] = []
    other = get_engine(engine.url.render_as_string(hide_password=False))

    def on_begin(conn) -> None:
        open_tx[id(conn)] = []

    def on_commit(conn) -> None:
        transactions.append(open_tx.pop(id(conn), []))

    def on_rollback(conn) -> None:
        open_tx.pop(id(conn), None)

    def after_execute(conn, cursor, statement, parameters, context, executemany) -> None:
        words = statement.split()
        kind = " ".join(words[:3]) if words[0] == "DELETE" else words[0]
        open_tx.setdefault(id(conn), []).append((kind, cursor.rowcount))
        done = sum(1 for t in transactions if any(k == "DELETE FROM jobs" for k, _ in t))
        is_batch = kind == "SELECT" and "FROM jobs" in statement and "LIMIT" in statement
        if is_batch and done == 4 and not retried_during:
            with transaction(other) as side:
                retried_during.append(lifecycle.retry(side, retried_uuid, "admin"))
        if kind == "DELETE FROM jobs":
            # Mid-way through a batch, its rows deleted and locked and not yet committed:
            # a submit and a worker's heartbeat go through, without waiting for it (a lock
            # wait would fail after the lock_timeout instead of hanging the test).
            with transaction(other) as side:
                side.execute(sa.text("SET LOCAL lock_timeout = '10s'"))
                submitted = lifecycle.create(
                    side,
                    action="dummy",
                    params={"action": "dummy"},
                    actor="admin",
                    title="submitted during prune",
                    description="",
                )["uuid"]
                beat = lifecycle.heartbeat(
                    side, {running_uuid: 1}, dt.datetime.now(dt.UTC).replace(microsecond=0)
                )
            # Recorded, and checked once the prune is over: an assertion failing in here
            # would only fail the prune job.
            with other.connect() as side:
                visible = side.execute(
                    sa.select(jobs.c.status).where(jobs.c.uuid == submitted)
                ).scalar_one_or_none()
                seen.append(
                    {"batch": done + 1, "old_left": old_left(side), "beat": beat, "new": visible}
                )

    listeners = [
        ("begin", on_begin),
        ("commit", on_commit),
        ("rollback", on_rollback),
        ("after_cursor_execute", after_execute),
    ]
    for name, fn in listeners:
        sa.event.listen(engine, name, fn)
    try:
        registry = ActionRegistry()
        registry.add(prune_action)
        assert JobRunner(engine, registry).run(prune_uuid) == "completed"
    finally:
        for name, fn in listeners:
            sa.event.remove(engine, name, fn)
        other.dispose()

    with engine.connect() as conn:
        result = conn.execute(sa.select(jobs.c.result).where(jobs.c.uuid == prune_uuid)).scalar()
        after = counts(conn)
        retried = conn.execute(sa.select(jobs).where(jobs.c.uuid == retried_uuid)).one()

    # Everything past retention is gone, with its history and logs ...
    assert result["deleted"] == old - 1
    assert result["batches"] == batches
    for status in ("completed", "failed", "aborted"):
        assert after["jobs"][("old", status)] == 0
    assert "orphan" not in after["job_history"]
    assert "orphan" not in after["job_logs"]
    # ... except the job retried under the prune's feet, which is unfinished now.
    assert retried_during == [2]
    assert (retried.id, retried.status, retried.attempt) == (retried_id, "created", 2)
    assert after["jobs"][("old", "created")] == 1
    assert after["job_history"]["old"] == 2  # created, retried
    assert after["job_logs"]["old"] == 2
    # Everything else is kept, whatever its age: unfinished jobs are never touched.
    for key in ("recent", "unfinished"):
        assert {k: n for k, n in after["jobs"].items() if k[0] == key} == {
            k: n for k, n in before["jobs"].items() if k[0] == key
        }
        assert after["job_history"][key] == before["job_history"][key]
        assert after["job_logs"][key] == before["job_logs"][key]
    assert after["jobs"][("unfinished", "stopped")] == UNFINISHED
    assert after["jobs"][("submitted during prune", "created")] == batches

    # Each batch was a transaction of its own: one SELECT of BATCH ids, then
    # one DELETE of those jobs, of their history and of their logs, then a commit ...
    pruning = [t for t in transactions if any(k == "DELETE FROM jobs" for k, _ in t)]
    assert len(pruning) == batches
    for number, statements in enumerate(pruning, start=1):
        kinds = [k for k, _ in statements]
        assert kinds == [
            "SELECT",
            "DELETE FROM jobs",
            "DELETE FROM job_history",
            "DELETE FROM job_logs",
        ], (number, statements)
        assert statements[0][1] == BATCH
        deleted = statements[1][1]
        assert deleted == (BATCH - 1 if number == 5 else BATCH)
        assert statements[2][1] == deleted  # one 'created' entry per job
        assert statements[3][1] == 2 * deleted
    # ... committed before the next began: another session saw the jobs of every batch
    # before it gone, and none of the batch still open.
    assert [s["batch"] for s in seen] == list(range(1, batches + 1))
    # (During the fifth batch the retried job no longer counts, and that batch deletes one
    # job fewer.)
    expected_left = [old - BATCH * (n - 1) - (1 if n == 5 else 0) for n in range(1, batches + 1)]
    assert [s["old_left"] for s in seen] == expected_left
    # And the submit and the heartbeat made in the middle of each batch were committed.
    assert all(s["beat"] == 1 and s["new"] == "created" for s in seen)


# --- per-status retention, on both databases --------------------------------------------

history, job_logs = JobHistory.__table__, JobLog.__table__
FINISHED = ("completed", "failed", "aborted")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'retention.sqlite'}"
        engine = get_engine(url)
        migrations.upgrade(engine)
        engine.dispose()
        return url
    return request.getfixturevalue("own_pg_url")


@pytest.fixture
def db(db_url):
    engine = get_engine(db_url)
    reset_database(engine)
    yield engine
    reset_database(engine)
    engine.dispose()


def add_job(conn: sa.Connection, title: str, status: str, finished: dt.datetime | None) -> str:
    """A job as the API and a worker leave it in ``status``, finished at ``finished``.

    Made through the state machine, then dated back; each has its 'created' history
    entry and one log line, so that what prune keeps can be told from what it deletes.
    """
    uuid = lifecycle.create(
        conn,
        action="dummy",
        params={"action": "dummy"},
        actor="admin",
        title=title,
        description="",
    )["uuid"]
    if status == "aborted":
        lifecycle.abort(conn, uuid, "admin")
    elif status != "created":
        lifecycle.start(conn, uuid)
    if status == "completed":
        lifecycle.complete(conn, attempt_of(uuid, 1), {})
    elif status == "failed":
        lifecycle.fail(conn, attempt_of(uuid, 1), "JobFailed", "it failed")
    elif status == "stopped":
        # What a stop leaves: not finished, waiting for a resume, with the time it stopped.
        conn.execute(jobs.update().where(jobs.c.uuid == uuid).values(status="stopped"))
    if finished is not None:
        conn.execute(jobs.update().where(jobs.c.uuid == uuid).values(finished=finished))
    conn.execute(
        job_logs.insert(),
        [{"job_uuid": uuid, "attempt": 1, "time": utcnow(), "level": 20, "message": "x"}],
    )
    return uuid


def run_prune(engine: sa.Engine, **params: Any) -> dict[str, Any]:
    with transaction(engine) as conn:
        uuid = lifecycle.create(
            conn,
            action="prune",
            params={"action": "prune", **params},
            actor="admin",
            title="prune",
            description="",
        )["uuid"]
    registry = ActionRegistry()
    registry.add(prune_action)
    assert JobRunner(engine, registry).run(uuid) == "completed"
    with engine.connect() as conn:
        return conn.execute(sa.select(jobs.c.result).where(jobs.c.uuid == uuid)).scalar_one()


def titles_left(engine: sa.Engine) -> dict[str, set[str]]:
    """The titles of the jobs left, and of the jobs that still have history and log lines."""
    with engine.connect() as conn:
        return {
            "jobs": set(conn.execute(sa.select(jobs.c.title)).scalars()),
            "history": set(
                conn.execute(
                    sa.select(jobs.c.title).join(history, history.c.job_uuid == jobs.c.uuid)
                ).scalars()
            ),
            "logs": set(
                conn.execute(
                    sa.select(jobs.c.title).join(job_logs, job_logs.c.job_uuid == jobs.c.uuid)
                ).scalars()
            ),
            "orphans": set(
                conn.execute(
                    sa.select(history.c.job_uuid)
                    .where(~history.c.job_uuid.in_(sa.select(jobs.c.uuid)))
                    .union(
                        sa.select(job_logs.c.job_uuid).where(
                            ~job_logs.c.job_uuid.in_(sa.select(jobs.c.uuid))
                        )
                    )
                ).scalars()
            ),
        }


def test_each_finished_status_is_kept_for_its_own_retention(db):
    retention = {"completed": 1, "aborted": 5, "failed": 10}  # aborted: from days
    ages = (1, 5, 10, 20)
    # A minute either side of each age: far more than the test takes, so the cutoff the
    # prune computes a moment later still falls between the two.
    margin = dt.timedelta(minutes=1)
    t0 = utcnow()
    expected_gone: set[str] = set()
    with transaction(db) as conn:
        for status in FINISHED:
            for age in ages:
                for side, finished in (
                    ("older", t0 - dt.timedelta(days=age) - margin),
                    ("newer", t0 - dt.timedelta(days=age) + margin),
                ):
                    title = f"{status} {age}d {side}"
                    add_job(conn, title, status, finished)
                    if finished < t0 - dt.timedelta(days=retention[status]):
                        expected_gone.add(title)
        # Unfinished jobs are never pruned, however old.
        long_ago = t0 - dt.timedelta(days=400)
        for status in ("created", "running", "stopped"):
            uuid = add_job(
                conn, f"{status} 400d", status, long_ago if status == "stopped" else None
            )
            conn.execute(
                jobs.update()
                .where(jobs.c.uuid == uuid)
                .values(created=long_ago, started=None if status == "created" else long_ago)
            )
    assert len(expected_gone) == 7 + 5 + 3  # completed, aborted, failed

    # Retried by a user between the SELECT of its batch and the batch's DELETE: no longer
    # finished, so the DELETE's own check keeps it.
    retried = "failed 10d older"
    with db.connect() as conn:
        retried_uuid, retried_id = conn.execute(
            sa.select(jobs.c.uuid, jobs.c.id).where(jobs.c.title == retried)
        ).one()
    retried_during: list[int] = []

    def before_execute(conn, cursor, statement, parameters, context, executemany) -> None:
        values = list(parameters.values() if isinstance(parameters, dict) else parameters)
        # The ids are one parameter each, or one array (PostgreSQL).
        ids = [v for value in values for v in (value if isinstance(value, list) else [value])]
        if statement.startswith("DELETE FROM jobs") and retried_id in ids:
            # Checked once the prune is over: an assertion in here would only fail the prune.
            with transaction(other) as side:
                retried_during.append(lifecycle.retry(side, retried_uuid, "admin"))

    other = get_engine(db.url.render_as_string(hide_password=False))
    sa.event.listen(db, "before_cursor_execute", before_execute)
    try:
        result = run_prune(db, days=5, completed_days=1, failed_days=10, batch_size=2)
    finally:
        sa.event.remove(db, "before_cursor_execute", before_execute)
        other.dispose()
    t1 = utcnow()

    assert retried_during == [2]
    expected_gone.discard(retried)
    left = titles_left(db)
    all_titles = {f"{s} {a}d {side}" for s in FINISHED for a in ages for side in ("older", "newer")}
    unfinished = {"created 400d", "running 400d", "stopped 400d"}
    assert left["jobs"] == (all_titles - expected_gone) | unfinished | {"prune"}
    # Their history and logs went with the jobs deleted, and only with them.
    assert left["history"] == left["jobs"]
    assert left["logs"] == (left["jobs"] - {"prune"})
    assert left["orphans"] == set()

    # The result says, per status, its retention, its cutoff and how many went.
    assert result["deleted"] == len(expected_gone) == 14
    by_status = result["by_status"]
    assert {s: v["days"] for s, v in by_status.items()} == retention
    assert {s: v["deleted"] for s, v in by_status.items()} == {
        "completed": 7,
        "failed": 2,
        "aborted": 5,
    }
    # Every cutoff is the same moment, less that status's days; `cutoff` is that of `days`.
    now = dt.datetime.fromisoformat(result["cutoff"]) + dt.timedelta(days=5)
    assert t0 <= now <= t1
    for status, entry in by_status.items():
        cutoff = dt.datetime.fromisoformat(entry["cutoff"])
        assert cutoff == now - dt.timedelta(days=retention[status])
    # Batches of two, walked by id across all three statuses: 14 deleted plus the retried
    # one, which its batch selected and then left.
    assert result["batches"] == 8
    with db.connect() as conn:
        assert conn.execute(
            sa.select(jobs.c.status, jobs.c.attempt).where(jobs.c.uuid == retried_uuid)
        ).one() == ("created", 2)


def test_days_alone_prunes_every_finished_status_as_before(db):
    margin = dt.timedelta(minutes=1)
    t0 = utcnow()
    with transaction(db) as conn:
        for status in FINISHED:
            add_job(conn, f"{status} old", status, t0 - dt.timedelta(days=30) - margin)
            add_job(conn, f"{status} recent", status, t0 - dt.timedelta(days=30) + margin)
        add_job(conn, "stopped", "stopped", t0 - dt.timedelta(days=400))

    selects: list[str] = []

    def after_execute(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.startswith("SELECT jobs.id"):
            selects.append(statement)

    sa.event.listen(db, "after_cursor_execute", after_execute)
    try:
        # What existing scheduled jobs and clients send.
        result = run_prune(db, days=30)
    finally:
        sa.event.remove(db, "after_cursor_execute", after_execute)

    left = titles_left(db)
    assert left["jobs"] == {f"{s} recent" for s in FINISHED} | {"stopped", "prune"}
    assert left["orphans"] == set()
    assert result["deleted"] == 3
    assert result["batches"] == 1
    cutoff = dt.datetime.fromisoformat(result["cutoff"])
    assert t0 - dt.timedelta(days=30) <= cutoff < t0 - dt.timedelta(days=30) + margin
    assert result["by_status"] == {
        s: {"days": 30, "cutoff": result["cutoff"], "deleted": 1} for s in FINISHED
    }
    # One retention for all: each batch's SELECT has the one `status IN (...) AND
    # finished < cutoff` it always had, not one condition per status.
    assert selects
    assert all(s.count("jobs.finished <") == 1 for s in selects), selects


@pytest.fixture
def api(db_url, db):
    """The API on the same database, with no worker: a refused job would stay visible."""
    settings = base_settings(
        **{
            "sqlalchemy.url": db_url,
            "nick_jobs.broker_url": "stub://",
            "nick_jobs.embedded_worker_threads": "0",
        }
    )
    wsgi = main({}, **settings)
    yield Client(wsgi, extra_environ={"HTTP_HOST": "localhost:8080"})
    wsgi.registry["nick_jobs.queue"].stop_embedded_worker()
    wsgi.registry["nick_jobs.engine"].dispose()
    wsgi.registry["nick_jobs.read_engine"].dispose()


RANGE = "Must be greater than or equal to 0 and less than or equal to 36500."


@pytest.mark.parametrize(
    ("params", "messages"),
    [
        ({"failed_days": -1}, {"failed_days": [RANGE]}),
        ({"completed_days": 36_501}, {"completed_days": [RANGE]}),
        ({"aborted_days": "a week"}, {"aborted_days": ["Not a valid integer."]}),
        ({"completed_days": 1.5}, {"completed_days": ["Not a valid integer."]}),
        ({"completed_days": "7"}, {"completed_days": ["Not a valid integer."]}),
        ({"failed_days": None}, {"failed_days": ["Field may not be null."]}),
        ({"failed_days": True}, {"failed_days": ["Not a valid integer."]}),
        ({"days": -1, "aborted_days": 7}, {"days": [RANGE]}),
        ({"running_days": 7}, {"running_days": ["Unknown field."]}),
    ],
)
def test_a_bad_retention_is_a_400_and_no_job(api, params, messages):
    res = api.post_json(
        "/@jobs",
        {"params": {"action": "prune", **params}},
        headers=api.auth(),
        status=400,
    )
    assert res.json == {
        "error": {
            "type": "Validation error",
            "message": "The request has invalid fields.",
            "fields": {"params": messages},
        }
    }
    assert api.get("/@jobs", headers=api.auth()).json == []


def test_the_limits_themselves_are_accepted(api):
    params = {"action": "prune", "days": 36_500, "completed_days": 0, "failed_days": 36_500}
    job = api.post_json("/@jobs", {"params": params}, headers=api.auth(), status=201).json
    assert job["params"] == params


NIGHTLY = {
    "nick_jobs.prune_schedule": "0 3 * * *",
    "nick_jobs.schedules": "prune-nightly",
    "nick_jobs.schedule.prune-nightly.action": "prune",
    "nick_jobs.schedule.prune-nightly.schedule": "0 3 * * *",
    "nick_jobs.schedule.prune-nightly.title": "Prune finished jobs nightly",
}


def test_the_nightly_prune_takes_its_retention_from_the_ini_file(db_url, db):
    params = {"days": 30, "completed_days": 7, "failed_days": 90}
    settings = base_settings(
        **{
            "sqlalchemy.url": db_url,
            "nick_jobs.broker_url": "stub://",
            "nick_jobs.embedded_worker_threads": "0",
            **NIGHTLY,
            "nick_jobs.schedule.prune-nightly.params": json.dumps(params),
        }
    )
    wsgi = main({}, **settings)
    try:
        api = Client(wsgi, extra_environ={"HTTP_HOST": "localhost:8080"})
        nightly = api.get("/@scheduled-jobs/prune-nightly", headers=api.auth()).json
    finally:
        wsgi.registry["nick_jobs.queue"].stop_embedded_worker()
        wsgi.registry["nick_jobs.engine"].dispose()
        wsgi.registry["nick_jobs.read_engine"].dispose()
    assert (nightly["action"], nightly["schedule"], nightly["params"]) == (
        "prune",
        "0 3 * * *",
        params,
    )

    # A retention prune refuses stops the start, naming the declaration.
    settings["nick_jobs.schedule.prune-nightly.params"] = json.dumps({"failed_days": -1})
    with pytest.raises(ConfigurationError) as refused:
        main({}, **settings)
    assert str(refused.value) == (
        "scheduled job 'prune-nightly' (nick_jobs.schedule.prune-nightly.*): "
        '{"params": {"failed_days": ["' + RANGE + '"]}}'
    )
