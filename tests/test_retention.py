"""Retention: the built-in ``prune`` on a table large enough to need many batches.

On PostgreSQL, with tens of thousands of finished jobs, their history and their logs
bulk-loaded with ``generate_series``. The prune runs in this process through the
worker's runner, so the test watches its statements and transactions as they happen.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa

from nick_jobs import transitions
from nick_jobs.actions import ActionRegistry
from nick_jobs.builtin_actions import prune_action
from nick_jobs.models import get_engine
from nick_jobs.runner import JobRunner

from .conftest import reset_database

jobs = transitions.jobs

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


@pytest.fixture
def engine(pg_url):
    engine = get_engine(pg_url)
    reset_database(engine)
    yield engine
    reset_database(engine)  # leave the shared test database small for the tests after
    engine.dispose()


def load(engine: sa.Engine) -> None:
    with engine.begin() as conn:
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

    with engine.begin() as conn:
        prune_uuid = transitions.create(
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
            with other.begin() as side:
                retried_during.append(transitions.retry(side, retried_uuid, "admin"))
        if kind == "DELETE FROM jobs":
            # Mid-way through a batch, its rows deleted and locked and not yet committed:
            # a submit and a worker's heartbeat go through, without waiting for it (a lock
            # wait would fail after the lock_timeout instead of hanging the test).
            with other.begin() as side:
                side.execute(sa.text("SET LOCAL lock_timeout = '10s'"))
                submitted = transitions.create(
                    side,
                    action="dummy",
                    params={"action": "dummy"},
                    actor="admin",
                    title="submitted during prune",
                    description="",
                )["uuid"]
                beat = transitions.heartbeat(
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
