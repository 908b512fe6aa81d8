"""Where a submit stores its job: on its own when nothing else is in the request's
transaction (PostgreSQL), in that transaction otherwise, so what else the request
writes still commits, or rolls back, with it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from pyramid.events import ContextFound

HOST_HEADER = "X-Host-Resource"


class HostResource:
    """A host application's resource in the request's transaction, as a second
    database's session would be; it fails its vote when asked to."""

    def __init__(self, manager, fail: bool) -> None:
        self.transaction_manager = manager
        self.fail = fail

    def abort(self, transaction) -> None:
        pass

    def tpc_begin(self, transaction) -> None:
        pass

    def commit(self, transaction) -> None:
        pass

    def tpc_vote(self, transaction) -> None:
        if self.fail:
            raise RuntimeError("the host's own write failed")

    def tpc_finish(self, transaction) -> None:
        pass

    def tpc_abort(self, transaction) -> None:
        pass

    def sortKey(self) -> str:
        return "~host"


def _join_host_resource(event) -> None:
    request = event.request
    wanted = request.headers.get(HOST_HEADER)
    if wanted == "session":
        # A host's code that used the request's session: it joined the transaction.
        request.dbsession.execute(sa.text("SELECT 1"))
    elif wanted:
        request.tm.get().join(HostResource(request.tm, fail=wanted == "fail"))


def includeme(config) -> None:
    """Included through ``pyramid.includes``, as a host's own code would be."""
    config.add_subscriber(_join_host_resource, ContextFound)


@contextlib.contextmanager
def inserts_on(engine: sa.Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany) -> None:
        if "INSERT INTO jobs" in statement:
            seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", before)


@pytest.fixture
def host_app(backend, make_app):
    from .conftest import reset_database

    reset_database(backend.engine)
    return make_app(**{"pyramid.includes": __name__})


def _stored(backend) -> list[str]:
    with backend.engine.connect() as conn:
        return conn.execute(sa.text("SELECT uuid FROM jobs")).scalars().all()


def test_a_submit_alone_is_stored_on_its_own_on_postgresql(host_app, backend) -> None:
    registry = host_app.app.registry
    read, write = registry["nick_jobs.read_engine"], registry["nick_jobs.engine"]
    with inserts_on(read) as on_read, inserts_on(write) as on_write:
        job = host_app.submit({"action": "dummy"})
    if backend.name == "sqlite":
        # SQLite has one writer: its jobs stay in the request's session.
        assert (len(on_read), len(on_write)) == (0, 1)
    else:
        assert (len(on_read), len(on_write)) == (1, 0)
    assert _stored(backend) == [job["uuid"]]
    history = host_app.get(f"/@jobs/{job['uuid']}/history", headers=host_app.auth()).json
    assert [event["event"] for event in history][:1] == ["created"]


@pytest.mark.parametrize("resource", ["ok", "session"])
def test_a_submit_beside_a_host_resource_commits_with_it(host_app, backend, resource) -> None:
    registry = host_app.app.registry
    read, write = registry["nick_jobs.read_engine"], registry["nick_jobs.engine"]
    headers = {**host_app.auth(), HOST_HEADER: resource}
    with inserts_on(read) as on_read, inserts_on(write) as on_write:
        job = host_app.post_json(
            "/@jobs", {"params": {"action": "dummy"}}, headers=headers, status=201
        ).json
    assert (len(on_read), len(on_write)) == (0, 1)
    assert _stored(backend) == [job["uuid"]]


def test_a_host_resource_that_fails_its_commit_takes_the_job_with_it(host_app, backend) -> None:
    headers = {**host_app.auth(), HOST_HEADER: "fail"}
    res = host_app.post_json("/@jobs", {"params": {"action": "dummy"}}, headers=headers, status=500)
    assert res.json["error"]["type"] == "Internal server error"
    assert _stored(backend) == []


def test_a_submit_with_an_idempotency_key_stays_in_the_transaction(host_app, backend) -> None:
    registry = host_app.app.registry
    read, write = registry["nick_jobs.read_engine"], registry["nick_jobs.engine"]
    headers = {**host_app.auth(), "Idempotency-Key": "once"}
    with inserts_on(read) as on_read, inserts_on(write) as on_write:
        first = host_app.post_json("/@jobs", {"params": {"action": "dummy"}}, headers=headers)
        again = host_app.post_json("/@jobs", {"params": {"action": "dummy"}}, headers=headers)
    assert (len(on_read), len(on_write)) == (0, 1)
    assert first.json["uuid"] == again.json["uuid"]
    assert _stored(backend) == [first.json["uuid"]]


def test_a_keyed_submit_beside_a_failing_host_resource_leaves_no_job(host_app, backend) -> None:
    # The key's savepoint is released inside the request's transaction; the job must
    # still go only if that transaction commits (on SQLite too).
    headers = {**host_app.auth(), HOST_HEADER: "fail", "Idempotency-Key": "once"}
    host_app.post_json("/@jobs", {"params": {"action": "dummy"}}, headers=headers, status=500)
    assert _stored(backend) == []
