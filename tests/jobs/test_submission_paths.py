"""Where a submit stores its job: on its own, in one autocommitted statement, when the
request runs in no transaction (on PostgreSQL, without an Idempotency-Key, under
nick-jobs' own activation hook); in the request's transaction otherwise, so what else
the request writes (a host application's code, under its own hook) still commits, or
rolls back, with it."""

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


def every_request(request) -> bool:
    """A host application's activation hook: every request runs in a transaction."""
    return True


@contextlib.contextmanager
def statements_on(engine: sa.Engine, containing: str = "") -> Iterator[list[str]]:
    seen: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany) -> None:
        if containing in statement:
            seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", before)


def inserts_on(engine: sa.Engine):
    return statements_on(engine, "INSERT INTO jobs")


@pytest.fixture
def host_app(backend, make_app):
    """nick-jobs in a host application whose code joins the request's transaction, and
    which says so with its own activation hook."""
    from tests.conftest import reset_database

    reset_database(backend.engine)
    return make_app(
        **{"pyramid.includes": __name__, "tm.activate_hook": f"{__name__}.every_request"}
    )


def _stored(backend) -> list[str]:
    with backend.engine.connect() as conn:
        return conn.execute(sa.text("SELECT uuid FROM jobs")).scalars().all()


def test_a_submit_is_stored_on_its_own_on_postgresql(app_without_worker, backend) -> None:
    app = app_without_worker
    registry = app.app.registry
    read, write = registry["nick_jobs.read_engine"], registry["nick_jobs.engine"]
    headers = app.auth()
    app.get("/@jobs?b_size=1", headers=headers)  # the token's identity is known from here
    with (
        inserts_on(read) as on_read,
        inserts_on(write) as on_write,
        statements_on(read) as read_statements,
        statements_on(write) as write_statements,
    ):
        job = app.post_json("/@jobs", {"params": {"action": "dummy"}}, headers=headers).json
    if backend.name == "sqlite":
        # SQLite has one writer: its jobs stay in the request's session.
        assert (len(on_read), len(on_write)) == (0, 1)
    else:
        assert (len(on_read), len(on_write)) == (1, 0)
        # The identity is checked in the insert itself: one statement for the submit,
        # and no BEGIN or COMMIT of a session on the other engine.
        assert len(read_statements) == 1, read_statements
        assert write_statements == []
    assert _stored(backend) == [job["uuid"]]
    history = app.get(f"/@jobs/{job['uuid']}/history", headers=app.auth()).json
    assert [event["event"] for event in history][:1] == ["created"]


def test_under_a_hosts_own_hook_a_submit_joins_its_transaction(host_app, backend) -> None:
    # Even with nothing else in it: the host said its requests run in one.
    registry = host_app.app.registry
    read, write = registry["nick_jobs.read_engine"], registry["nick_jobs.engine"]
    with inserts_on(read) as on_read, inserts_on(write) as on_write:
        job = host_app.submit({"action": "dummy"})
    assert (len(on_read), len(on_write)) == (0, 1)
    assert _stored(backend) == [job["uuid"]]


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


@pytest.mark.parametrize("hook", ["nick-jobs'", "the host's"])
def test_a_submit_with_an_idempotency_key_stays_in_the_transaction(
    app_without_worker, host_app, backend, hook
) -> None:
    app = app_without_worker if hook == "nick-jobs'" else host_app
    registry = app.app.registry
    read, write = registry["nick_jobs.read_engine"], registry["nick_jobs.engine"]
    headers = {**app.auth(), "Idempotency-Key": "once"}
    with inserts_on(read) as on_read, inserts_on(write) as on_write:
        first = app.post_json("/@jobs", {"params": {"action": "dummy"}}, headers=headers)
        again = app.post_json("/@jobs", {"params": {"action": "dummy"}}, headers=headers)
    assert (first.status_int, again.status_int) == (201, 200)
    assert (len(on_read), len(on_write)) == (0, 1)
    assert first.json["uuid"] == again.json["uuid"]
    assert _stored(backend) == [first.json["uuid"]]


def test_a_keyed_submit_beside_a_failing_host_resource_leaves_no_job(host_app, backend) -> None:
    # The key's savepoint is released inside the request's transaction; the job must
    # still go only if that transaction commits (on SQLite too).
    headers = {**host_app.auth(), HOST_HEADER: "fail", "Idempotency-Key": "once"}
    host_app.post_json("/@jobs", {"params": {"action": "dummy"}}, headers=headers, status=500)
    assert _stored(backend) == []
