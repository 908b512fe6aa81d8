"""A job's ``GET`` goes straight to its view, past the router's traversal and inner tweens,
and answers exactly as the router would; where a host application changes what the router
does, the router answers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from pyramid.config import Configurator
from pyramid.events import ApplicationCreated, ContextFound, NewRequest
from pyramid.traversal import ResourceTreeTraverser
from webtest import TestApp

from nick_jobs import fast_path, includeme
from nick_jobs.resources import Root

from .conftest import Client
from .test_job_lookup import HeaderPolicy, alices_job


@contextlib.contextmanager
def host_app(app: Client, *changes) -> Iterator[TestApp]:
    """nick-jobs in a host application on the same database, with ``changes`` made to
    its configuration."""
    with Configurator(settings=app.app.registry.settings) as config:
        config.include(includeme)
        for change in changes:
            change(config)
        host = config.make_wsgi_app()
    try:
        yield TestApp(host, extra_environ={"HTTP_HOST": "localhost:8080"})
    finally:
        host.registry["nick_jobs.queue"].stop_embedded_worker()
        host.registry["nick_jobs.engine"].dispose()
        host.registry["nick_jobs.read_engine"].dispose()


def on_context_found(config) -> None:
    config.add_subscriber(lambda event: None, ContextFound)


@pytest.fixture
def traversals(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the router's traverser walked."""
    walked: list[str] = []
    traverse = ResourceTreeTraverser.__call__

    def counting(self, request):
        walked.append(request.path_info)
        return traverse(self, request)

    monkeypatch.setattr(ResourceTreeTraverser, "__call__", counting)
    return walked


def alices_job_url(app: Client, traversals: list[str]) -> str:
    """A job of alice's, made before the traversals the test counts."""
    url = f"/@jobs/{alices_job(app)['uuid']}"
    traversals.clear()
    return url


def test_a_jobs_get_is_not_traversed_by_the_router(
    app_without_worker: Client, traversals: list[str]
) -> None:
    app = app_without_worker
    url = alices_job_url(app, traversals)
    for login in ("alice", "admin"):
        assert app.get(url, headers=app.auth(login)).json["uuid"] == url.rsplit("/", 1)[1]
    head = app.head(url, headers=app.auth("alice"))
    assert head.body == b""
    assert int(head.headers["Content-Length"]) > 0
    assert traversals == []
    # Anything else is the router's, as before.
    app.get("/@jobs", headers=app.auth("alice"))
    app.delete(url, headers=app.auth("alice"), status=204)
    assert traversals == ["/@jobs", url]


def test_what_it_cannot_answer_goes_to_the_router(
    app_without_worker: Client, traversals: list[str]
) -> None:
    app = app_without_worker
    url = alices_job_url(app, traversals)
    app.get(url, headers=app.auth("bob"), status=404)  # another user's
    app.get("/@jobs/00000000-0000-4000-8000-000000000000", headers=app.auth("alice"), status=404)
    app.get(url, status=401)  # no token
    assert len(traversals) == 3


def answers(client: TestApp, auth, job_uuid: str) -> list[tuple]:
    """What ``client`` answers to the ways of asking for one job."""
    token = auth("alice")
    requests = [
        ("GET", f"/@jobs/{job_uuid}", token),
        ("HEAD", f"/@jobs/{job_uuid}", token),
        ("GET", f"/@jobs/{job_uuid}", auth("admin")),
        ("GET", f"/@jobs/{job_uuid}", auth("bob")),
        ("GET", f"/@jobs/{job_uuid.upper()}", token),
        ("GET", "/@jobs/00000000-0000-4000-8000-000000000000", token),
        ("GET", f"/@jobs/{job_uuid}", {}),
        ("GET", f"/@jobs/{job_uuid}", {"Authorization": "Bearer not.a.token"}),
        ("GET", f"/@jobs/{job_uuid}?follow=true", token),
    ]
    got = []
    for method, path, headers in requests:
        response = client.request(path, method=method, headers=headers, expect_errors=True)
        got.append((method, path, response.status, sorted(response.headerlist), response.body))
    return got


def test_it_answers_as_the_router_does(app_without_worker: Client, traversals) -> None:
    app = app_without_worker
    job = alices_job(app)
    traversals.clear()
    direct = answers(app, app.auth, job["uuid"])
    # bob's, the absent job's, and the two without an identity.
    assert len(traversals) == 4
    traversals.clear()
    with host_app(app, on_context_found) as routed:
        assert direct == answers(routed, app.auth, job["uuid"])
    # The host's subscriber made its app take every one of them through the router.
    assert len(traversals) == 9
    # A revoked token, whichever path reads it.
    token = app.token("alice")
    app.post("/@logout", headers={"Authorization": f"Bearer {token}"}, status=204)
    revoked = {"Authorization": f"Bearer {token}"}
    with host_app(app, on_context_found) as routed:
        expected = routed.get(f"/@jobs/{job['uuid']}", headers=revoked, status=401)
    got = app.get(f"/@jobs/{job['uuid']}", headers=revoked, status=401)
    assert (got.headerlist, got.body) == (expected.headerlist, expected.body)


def test_a_jobs_url_follows_the_host_it_is_asked_by(app_without_worker: Client) -> None:
    app = app_without_worker
    job = app.submit({"action": "dummy"})
    path = f"/@jobs/{job['uuid']}"
    for host, scheme, script in (
        ("localhost:8080", "http", ""),
        ("jobs.example.org", "https", ""),
        ("localhost:8080", "http", "/api"),
    ):
        environ = {"HTTP_HOST": host, "wsgi.url_scheme": scheme, "SCRIPT_NAME": script}
        body = app.get(path, headers=app.auth(), extra_environ=environ).json
        assert body["@id"] == f"{scheme}://{host}{script}{path}"


def settings_of(app: Client) -> dict:
    return dict(app.app.registry.settings)


@pytest.mark.parametrize(
    ("change", "applies"),
    [
        (lambda config: None, True),
        # nick-jobs' own start-up subscriber is of this kind: not a request's event.
        (lambda config: config.add_subscriber(lambda event: None, ApplicationCreated), True),
        (lambda config: config.add_subscriber(lambda event: None, NewRequest), False),
        (on_context_found, False),
        (lambda config: config.set_security_policy(HeaderPolicy()), False),
        (lambda config: config.add_route("jobs", "/@jobs/{uuid}"), False),
        (lambda config: config.set_root_factory(lambda request: Root(request)), False),
        (lambda config: config.add_settings({"tm.activate_hook": lambda r: True}), False),
    ],
    ids=[
        "nick-jobs",
        "start-up",
        "new-request",
        "context-found",
        "policy",
        "route",
        "root",
        "activate-hook",
    ],
)
def test_it_is_used_only_where_the_router_would_do_the_same(
    app_without_worker: Client, change, applies: bool
) -> None:
    with host_app(app_without_worker, change) as host:
        assert fast_path.applies(host.app.registry) is applies


def test_a_job_read_under_a_host_root_is_the_routers(app_without_worker: Client) -> None:
    app = app_without_worker
    job = app.submit({"action": "dummy"})
    with host_app(app, lambda config: config.set_root_factory(Root)) as same:
        assert fast_path.applies(same.app.registry)
    with host_app(app, lambda config: config.set_root_factory(lambda r: Root(r))) as host:
        body = host.get(f"/@jobs/{job['uuid']}", headers=app.auth()).json
    assert body["uuid"] == job["uuid"]


def test_the_statement_listeners_of_a_connection_still_hear_it(app_without_worker: Client) -> None:
    # The statements skip SQLAlchemy's event dispatch only where nothing listens.
    app = app_without_worker
    job = app.submit({"action": "dummy"})
    seen: list[str] = []
    engine = app.app.registry["nick_jobs.read_engine"]

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append(statement)

    sa.event.listen(engine, "after_cursor_execute", record)
    try:
        app.get(f"/@jobs/{job['uuid']}", headers=app.auth())
    finally:
        sa.event.remove(engine, "after_cursor_execute", record)
    assert len(seen) == 1
