"""Pooled PostgreSQL connections are pinged only after they sat idle, and a request's
read connection that was lost is not used again (nick_jobs.db)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from pyramid import testing

from nick_jobs import main
from nick_jobs.db import get_engine, ping_when_idle, read_connection, release_read_connection
from tests.conftest import PG_ADMIN_URL, base_settings


def _counting_pings(engine: sa.Engine) -> list[int]:
    pings: list[int] = []
    real = engine.dialect.do_ping

    def do_ping(dbapi_connection):
        pings.append(1)
        return real(dbapi_connection)

    engine.dialect.do_ping = do_ping
    return pings


def _backend_pid(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()


def test_a_connection_used_a_moment_ago_is_handed_out_without_a_ping(pg_url):
    engine = get_engine(pg_url, pool_size=1, max_overflow=0)
    pings = _counting_pings(engine)
    try:
        first = _backend_pid(engine)
        assert _backend_pid(engine) == first
        assert _backend_pid(engine) == first
        assert pings == []
    finally:
        engine.dispose()


def test_an_idle_connection_that_died_is_replaced_before_it_is_used(pg_url):
    engine = sa.create_engine(pg_url, pool_size=1, max_overflow=0)
    # Idle for "0 s" is idle enough: every checkout of a pooled connection pings.
    ping_when_idle(engine, idle_s=0.0)
    pings = _counting_pings(engine)
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        dead = _backend_pid(engine)
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": dead})
        # The query runs on a fresh connection: no error reaches the caller.
        assert _backend_pid(engine) != dead
        assert len(pings) == 1
    finally:
        engine.dispose()
        admin.dispose()


def _terminate(pid: int) -> None:
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
    finally:
        admin.dispose()


def test_a_requests_read_connection_that_was_lost_is_replaced(pg_url):
    engine = get_engine(pg_url, isolation_level="AUTOCOMMIT", pool_reset_on_return=None)
    request = testing.DummyRequest(path="/@jobs")
    request.registry = {"nick_jobs.read_engine": engine}
    try:
        lost = read_connection(request)
        pid = lost.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        assert read_connection(request) is lost  # one for the request
        _terminate(pid)
        with pytest.raises(sa.exc.OperationalError) as error:
            lost.execute(sa.text("SELECT 1"))
        assert error.value.connection_invalidated
        # What the request reads next (an error's identity check) goes on another one.
        fresh = read_connection(request)
        assert fresh is not lost
        assert lost.closed
        assert fresh.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() != pid
        release_read_connection(request)
        assert fresh.closed
        assert engine.pool.checkedout() == 0
    finally:
        engine.dispose()


def test_the_read_connection_given_back_last_is_the_next_one_taken(pg_url) -> None:
    """Last in, first out: a request reads on the connection a request gave back a moment
    ago (prepared statements, no idle ping), while connections beyond the load stay idle."""
    settings = base_settings(
        **{
            "sqlalchemy.url": pg_url,
            "nick_jobs.broker_url": "stub://",
            "nick_jobs.embedded_worker_threads": "0",
        }
    )
    registry = main({}, **settings).registry
    engine = registry["nick_jobs.read_engine"]
    try:
        first, second = engine.connect(), engine.connect()
        pids = [_pid(conn) for conn in (first, second)]
        pings = _counting_pings(engine)
        second.close()
        first.close()  # given back last
        for _ in range(2):
            with engine.connect() as conn:
                assert _pid(conn) == pids[0]
        assert pings == []
    finally:
        registry["nick_jobs.engine"].dispose()
        engine.dispose()


def _pid(conn: sa.Connection) -> int:
    return conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
