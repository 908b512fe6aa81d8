"""Pooled PostgreSQL connections are pinged only after they sat idle (nick_jobs.models)."""

from __future__ import annotations

import sqlalchemy as sa

from nick_jobs.models import get_engine, ping_when_idle

from .conftest import PG_ADMIN_URL


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
