"""The worker's statements run on psycopg directly (nick_jobs.models.driver): the same
results, conversions, events and errors as through SQLAlchemy."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from nick_jobs import transitions
from nick_jobs.models import driver, get_engine

from .conftest import reset_database

CREATE = """
INSERT INTO jobs (uuid, title, description, action, params, actor, status, created,
                  result, attempt)
VALUES (:uuid, 'Job', '', 'dummy', '{"action": "dummy", "n": [1, 2]}', 'admin', 'created',
        '2026-01-02 03:04:05.678+00', '{}', 1)
"""


@pytest.fixture
def engine(pg_url) -> Iterator[sa.Engine]:
    engine = get_engine(pg_url)
    reset_database(engine)
    yield engine
    engine.dispose()


def new_job(engine: sa.Engine, uuid: str) -> str:
    with engine.begin() as conn:
        conn.execute(sa.text(CREATE), {"uuid": uuid})
    return uuid


@contextlib.contextmanager
def cursor_events(engine: sa.Engine) -> Iterator[list[tuple[str, str, bool]]]:
    """(event, statement, whether SQLAlchemy's execution context was there) per event."""
    seen: list[tuple[str, str, bool]] = []

    def before(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append(("before", statement, context is not None))

    def after(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append(("after", statement, context is not None))

    sa.event.listen(engine, "before_cursor_execute", before)
    sa.event.listen(engine, "after_cursor_execute", after)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", before)
        sa.event.remove(engine, "after_cursor_execute", after)


def test_a_started_job_reads_the_same_on_both_paths(engine) -> None:
    now = dt.datetime(2026, 1, 2, 3, 5, tzinfo=dt.UTC)
    fast_uuid = new_job(engine, "00000000-0000-4000-8000-000000000001")
    slow_uuid = new_job(engine, "00000000-0000-4000-8000-000000000002")
    with engine.connect() as plain, engine.connect() as conn:
        autocommit = plain.execution_options(isolation_level="AUTOCOMMIT")
        for each in (autocommit, conn):
            each.exec_driver_sql("SET TIME ZONE 'America/New_York'")  # rows come back in UTC
        fast = driver.run(autocommit, transitions._START, {"b_uuid": fast_uuid, "b_now": now})
        slow = driver.run(conn, transitions._START, {"b_uuid": slow_uuid, "b_now": now})
        conn.commit()
    (fast_row,), (slow_row,) = fast.rows, slow.rows
    assert fast.rowcount == slow.rowcount == 1
    assert tuple(fast_row) == tuple(slow_row)
    assert fast_row.params == {"action": "dummy", "n": [1, 2]}
    assert fast_row.created == dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
    assert fast_row.created.utcoffset() == dt.timedelta(0)
    assert fast_row.enqueued is None
    with engine.connect() as conn:
        started = conn.execute(
            sa.text("SELECT started, status FROM jobs WHERE uuid = :u"), {"u": fast_uuid}
        ).one()
    assert started == (now, "running")


def test_autocommit_runs_on_the_driver_and_listeners_still_see_each_statement(engine) -> None:
    uuid = new_job(engine, "00000000-0000-4000-8000-000000000003")
    with engine.connect() as plain, engine.connect() as other, cursor_events(engine) as seen:
        conn = plain.execution_options(isolation_level="AUTOCOMMIT")
        assert transitions.start(conn, uuid) is not None
        assert transitions.complete(conn, uuid, 1, {"ok": True})
        # In a transaction SQLAlchemy began: the driver runs it, in that transaction.
        with other.begin():
            assert transitions.start(other, uuid) is None
        # A connection that has begun nothing: SQLAlchemy runs it (and autobegins).
        assert transitions.start(other, uuid) is None
        other.rollback()
    events = [(event, statement.split()[0], context) for event, statement, context in seen]
    assert events == [
        ("before", "UPDATE", False),
        ("after", "UPDATE", False),
        ("before", "UPDATE", False),
        ("after", "UPDATE", False),
        ("before", "UPDATE", False),
        ("after", "UPDATE", False),
        ("before", "UPDATE", True),
        ("after", "UPDATE", True),
    ]
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT status, result FROM jobs WHERE uuid = :u"), {"u": uuid})
        assert row.one() == ("completed", {"ok": True})


def test_listeners_of_one_connection_see_its_statements_on_the_driver(engine) -> None:
    uuid = new_job(engine, "00000000-0000-4000-8000-000000000009")
    seen: list[str] = []
    with engine.connect() as plain, engine.connect() as other_plain:
        conn = plain.execution_options(isolation_level="AUTOCOMMIT")
        other = other_plain.execution_options(isolation_level="AUTOCOMMIT")
        sa.event.listen(conn, "before_cursor_execute", lambda *args: seen.append("before"))
        sa.event.listen(conn, "after_cursor_execute", lambda *args: seen.append("after"))
        assert transitions.start(conn, uuid) is not None
        assert transitions.start(other, uuid) is None  # not that connection's
    assert seen == ["before", "after"]


def test_lines_go_with_the_outcome_on_the_driver(engine) -> None:
    uuid = new_job(engine, "00000000-0000-4000-8000-000000000004")
    at = dt.datetime(2026, 1, 2, 3, 6, tzinfo=dt.UTC)
    lines = [
        {"job_uuid": uuid, "attempt": 1, "time": at, "level": 20, "message": f"line {i}"}
        for i in range(3)
    ]
    with engine.connect() as plain:
        conn = plain.execution_options(isolation_level="AUTOCOMMIT")
        transitions.start(conn, uuid)
        assert transitions.complete(conn, uuid, 1, {}, {"done": 3}, lines)
        # The attempt is over: a second outcome matches nothing and adds no line.
        assert not transitions.fail(conn, uuid, 1, "X", "late", lines=lines)
    with engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT time, level, message FROM job_logs WHERE job_uuid = :u ORDER BY id"),
            {"u": uuid},
        ).all()
        progress = conn.execute(
            sa.text("SELECT progress FROM jobs WHERE uuid = :u"), {"u": uuid}
        ).scalar_one()
    assert [tuple(r) for r in stored] == [(at, 20, f"line {i}") for i in range(3)]
    assert progress == {"done": 3}


def test_errors_are_sqlalchemys_and_the_connection_goes_on(engine) -> None:
    uuid = new_job(engine, "00000000-0000-4000-8000-000000000005")
    with engine.connect() as plain:
        conn = plain.execution_options(isolation_level="AUTOCOMMIT")
        transitions.start(conn, uuid)
        with pytest.raises(sa.exc.DataError):
            transitions.complete(conn, uuid, 1, {"text": "nul \x00 inside"})
        assert transitions.complete(conn, uuid, 1, {"text": "fine"})


def test_a_statement_run_on_the_driver_can_still_be_extended(engine) -> None:
    # SQLAlchemy memoizes a statement's returned columns when asked for them; asked on
    # the statement itself, a RETURNING added later (as the finishing statements get
    # when lines go with them) would return nothing.
    statement = transitions.jobs.update().where(transitions.jobs.c.uuid == sa.bindparam("u"))
    statement = statement.values(title="renamed")
    uuid = new_job(engine, "00000000-0000-4000-8000-000000000006")
    with engine.connect() as plain:
        conn = plain.execution_options(isolation_level="AUTOCOMMIT")
        assert driver.run(conn, statement, {"u": uuid}).rowcount == 1
        extended = statement.returning(transitions.jobs.c.uuid, transitions.jobs.c.title)
        assert [c.key for c in extended.exported_columns] == ["uuid", "title"]
        assert driver.run(conn, extended, {"u": uuid}).one_or_none() == (uuid, "renamed")


@pytest.fixture
def autocommit_engine(pg_url) -> Iterator[sa.Engine]:
    """An engine made autocommit, as the requests' (request.dbconn): no connection is
    given the option, so the driver's own flag must decide."""
    engine = get_engine(pg_url, isolation_level="AUTOCOMMIT")
    reset_database(engine)
    yield engine
    engine.dispose()


def test_selects_on_an_autocommit_engine_run_on_the_driver_with_the_same_rows(
    autocommit_engine,
) -> None:
    engine = autocommit_engine
    uuid = new_job(engine, "00000000-0000-4000-8000-000000000007")
    jobs = transitions.jobs
    statement = sa.select(jobs, (jobs.c.attempt + sa.bindparam("b_add")).label("later")).where(
        jobs.c.uuid == sa.bindparam("b_uuid")
    )
    params = {"b_uuid": uuid, "b_add": 2}
    with engine.connect() as conn, cursor_events(engine) as seen:
        conn.exec_driver_sql("SET TIME ZONE 'America/New_York'")
        seen.clear()
        fast = driver.run(conn, statement, params).one_or_none()
        slow = conn.execute(statement, params).one()
        missing = driver.run(conn, statement, {**params, "b_uuid": "none"})
    assert [context for event, _, context in seen] == [False, False, True, True, False, False]
    assert tuple(fast) == tuple(slow)
    assert fast._fields == tuple(slow._fields)
    assert fast.later == 3
    assert fast.params == {"action": "dummy", "n": [1, 2]}
    assert fast.created.utcoffset() == dt.timedelta(0)
    assert missing.rows == []
    assert missing.one_or_none() is None


def test_a_select_whose_names_cant_be_fields_goes_through_sqlalchemy(autocommit_engine) -> None:
    engine = autocommit_engine
    uuid = new_job(engine, "00000000-0000-4000-8000-000000000008")
    jobs = transitions.jobs
    twice = sa.select(jobs.c.uuid, jobs.c.attempt.label("uuid")).where(
        jobs.c.uuid == sa.bindparam("b_uuid")
    )
    with engine.connect() as conn, cursor_events(engine) as seen:
        row = driver.run(conn, twice, {"b_uuid": uuid}).one_or_none()
    assert tuple(row) == (uuid, 1)
    assert [context for _, _, context in seen] == [True, True]


def test_a_statement_on_the_driver_inside_a_transaction_goes_with_it(engine) -> None:
    values = {
        "action": "dummy",
        "params": {"action": "dummy"},
        "actor": "admin",
        "title": "Job",
        "description": "",
    }
    with engine.connect() as conn, cursor_events(engine) as seen:
        with conn.begin() as tx:
            dropped = transitions.create(conn, **values)
            tx.rollback()
        with conn.begin():
            kept = transitions.create(conn, **values)
    assert [context for _, _, context in seen] == [False] * 4
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT uuid FROM jobs")).scalars().all()
        events = conn.execute(sa.text("SELECT job_uuid, event FROM job_history")).all()
    assert stored == [kept["uuid"]] != [dropped["uuid"]]
    assert events == [(kept["uuid"], "created")]
