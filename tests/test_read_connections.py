"""The read connections a request gives back wait for the next request, checked out of
the pool (nick_jobs.models.read_connections)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from nick_jobs.models import get_engine
from nick_jobs.models.read_connections import ReadConnections

from .conftest import PG_ADMIN_URL, Client
from .test_pool_ping import _counting_pings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def engine(pg_url: str) -> Iterator[sa.Engine]:
    engine = get_engine(pg_url, isolation_level="AUTOCOMMIT", pool_reset_on_return=None)
    yield engine
    engine.dispose()


def checkouts(engine: sa.Engine) -> list[int]:
    seen: list[int] = []
    sa.event.listen(engine, "checkout", lambda *args: seen.append(1))
    return seen


def backend_pid(conn: sa.Connection) -> int:
    return conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()


def test_a_connection_given_back_is_the_next_one_taken(engine: sa.Engine) -> None:
    reads = ReadConnections(engine, keep=2, idle_s=1.0, clock=Clock())
    taken = checkouts(engine)
    first = reads.take()
    pid = backend_pid(first)
    reads.give_back(first)
    assert len(reads) == 1
    second = reads.take()
    assert second is first
    assert backend_pid(second) == pid
    assert len(taken) == 1  # one check-out of the pool for both
    reads.give_back(second)


def test_one_that_sat_idle_is_pinged_first(engine: sa.Engine) -> None:
    clock = Clock()
    reads = ReadConnections(engine, keep=2, idle_s=1.0, clock=clock)
    pinged = _counting_pings(engine)
    first = reads.take()
    pid = backend_pid(first)
    reads.give_back(first)
    clock.now += 0.9
    assert reads.take() is first
    assert pinged == []
    reads.give_back(first)
    clock.now += 1.0
    assert reads.take() is first
    assert pinged == [1]
    assert backend_pid(first) == pid
    reads.give_back(first)


def test_one_that_sat_idle_and_died_is_replaced(engine: sa.Engine) -> None:
    clock = Clock()
    reads = ReadConnections(engine, keep=2, idle_s=1.0, clock=clock)
    first = reads.take()
    pid = backend_pid(first)
    reads.give_back(first)
    terminate(pid)
    clock.now += 1.0
    second = reads.take()
    assert second is not first
    assert first.closed
    assert backend_pid(second) != pid
    reads.give_back(second)


def terminate(pid: int) -> None:
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as other:
        other.execute(sa.text("SELECT pg_terminate_backend(:p, 5000)"), {"p": pid})
    admin.dispose()


def test_no_more_than_keep_wait(engine: sa.Engine) -> None:
    reads = ReadConnections(engine, keep=1, idle_s=1.0, clock=Clock())
    one, two = reads.take(), reads.take()
    reads.give_back(one)
    reads.give_back(two)
    assert len(reads) == 1
    assert two.closed
    assert engine.pool.checkedout() == 1


def test_a_broken_connection_is_not_kept(engine: sa.Engine) -> None:
    reads = ReadConnections(engine, keep=4, idle_s=1.0, clock=Clock())
    conn = reads.take()
    pid = backend_pid(conn)
    terminate(pid)
    with pytest.raises(sa.exc.DBAPIError):
        conn.execute(sa.text("SELECT 1"))
    reads.give_back(conn)
    assert len(reads) == 0
    fresh = reads.take()
    assert backend_pid(fresh) != pid
    reads.give_back(fresh)
    assert len(reads) == 1


def test_one_left_in_a_transaction_is_kept_once_rolled_back(engine: sa.Engine) -> None:
    reads = ReadConnections(engine, keep=4, idle_s=1.0, clock=Clock())
    conn = reads.take()
    backend_pid(conn)  # SQLAlchemy's execute begins one
    assert conn.in_transaction()
    reads.give_back(conn)
    assert len(reads) == 1
    assert not conn.in_transaction()
    assert reads.take() is conn


def test_disposing_the_engine_gives_every_waiting_one_back(engine: sa.Engine) -> None:
    reads = ReadConnections(engine, keep=4, idle_s=1.0, clock=Clock())
    conns = [reads.take() for _ in range(3)]
    for conn in conns:
        reads.give_back(conn)
    engine.dispose()
    assert len(reads) == 0
    assert all(conn.closed for conn in conns)


def test_requests_in_a_row_check_out_nothing(app_without_worker: Client) -> None:
    app = app_without_worker
    job = app.submit({"action": "dummy"})
    engine = app.app.registry["nick_jobs.read_engine"]
    app.get(f"/@jobs/{job['uuid']}", headers=app.auth())
    taken = checkouts(engine)
    for _ in range(3):
        app.get(f"/@jobs/{job['uuid']}", headers=app.auth())
        app.get("/@jobs", headers=app.auth())
    reads = app.app.registry["nick_jobs.read_connections"]
    if engine.dialect.name == "postgresql":
        assert taken == []
        assert len(reads) == 1
    else:
        # SQLite keeps none: each request checks one out of the pool.
        assert len(taken) == 6
        assert len(reads) == 0
