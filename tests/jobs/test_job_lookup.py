"""Reading one job: the caller's identity and the job come from one query, and who may
see which job is as before (their own, or any for an administrator; others' are 404)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from pyramid.authorization import ACLHelper, Authenticated, Everyone
from pyramid.config import Configurator
from pyramid.exceptions import PredicateMismatch
from webtest import TestApp

from nick_jobs import includeme
from tests.conftest import Client


@contextlib.contextmanager
def statements(client: Client) -> Iterator[list[str]]:
    """The SQL statements the app runs, on both of its engines."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append(statement)

    registry = client.app.registry
    engines = {registry["nick_jobs.engine"], registry["nick_jobs.read_engine"]}
    for engine in engines:
        sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        for engine in engines:
            sa.event.remove(engine, "before_cursor_execute", record)


def alices_job(app: Client) -> dict:
    """A job of alice's (the dummy action is the administrator's to submit)."""
    job = app.submit({"action": "dummy"})
    with app.backend.engine.begin() as conn:
        conn.execute(sa.text("UPDATE jobs SET actor = 'alice' WHERE uuid = :u"), {"u": job["uuid"]})
    return job


def test_reading_a_job_is_one_query(app_without_worker: Client) -> None:
    app = app_without_worker
    job = alices_job(app)
    for login in ("alice", "admin"):
        with statements(app) as seen:
            body = app.get(f"/@jobs/{job['uuid']}", headers=app.auth(login)).json
        assert body["uuid"] == job["uuid"]
        assert body["actor"] == "alice"
        assert len(seen) == 1, seen


def test_another_users_job_is_absent_and_an_unknown_one_too(app_without_worker: Client) -> None:
    app = app_without_worker
    job = alices_job(app)
    missing = "00000000-0000-4000-8000-000000000000"
    for path in (f"/@jobs/{job['uuid']}", f"/@jobs/{missing}", "/@jobs/not-a-uuid"):
        response = app.get(path, headers=app.auth("bob"), status=404)
        assert response.json["error"]["type"] == "Not found", path
    assert app.get(f"/@jobs/{missing}", headers=app.auth("admin"), status=404)


def test_without_a_valid_token_no_job_is_looked_up(app_without_worker: Client) -> None:
    app = app_without_worker
    job = alices_job(app)
    for path in (f"/@jobs/{job['uuid']}", "/@jobs/not-a-uuid"):
        app.get(path, status=401)
        app.get(path, headers={"Authorization": "Bearer not.a.token"}, status=401)
    token = app.token("alice")
    app.post("/@logout", headers={"Authorization": f"Bearer {token}"}, status=204)
    with statements(app) as seen:
        app.get(f"/@jobs/{job['uuid']}", headers={"Authorization": f"Bearer {token}"}, status=401)
    # The identity query ran (and found the token revoked); no job was read for it.
    assert len(seen) == 1


class HeaderPolicy:
    """A host application's own policy: the user is whatever ``X-User`` says."""

    def identity(self, request):
        return request.headers.get("X-User")

    def authenticated_userid(self, request):
        return self.identity(request)

    def permits(self, request, context, permission):
        user = self.identity(request)
        principals = [Everyone] + ([Authenticated, f"user:{user}"] if user else [])
        return ACLHelper().permits(context, principals, permission)

    def remember(self, request, userid, **kw):
        return []

    def forget(self, request, **kw):
        return []


def test_under_a_host_applications_policy_the_job_is_read_on_its_own(
    app_without_worker: Client,
) -> None:
    app = app_without_worker
    job = alices_job(app)
    with Configurator(settings=app.app.registry.settings) as config:
        config.include(includeme)
        config.set_security_policy(HeaderPolicy())
        host = config.make_wsgi_app()
    try:
        client = TestApp(host, extra_environ={"HTTP_HOST": "localhost:8080"})
        body = client.get(f"/@jobs/{job['uuid']}", headers={"X-User": "alice"}).json
        assert body["uuid"] == job["uuid"]
        client.get(f"/@jobs/{job['uuid']}", headers={"X-User": "bob"}, status=404)
        client.get(f"/@jobs/{job['uuid']}", status=401)
    finally:
        host.registry["nick_jobs.queue"].stop_embedded_worker()
        host.registry["nick_jobs.engine"].dispose()
        host.registry["nick_jobs.read_engine"].dispose()


def test_reading_a_job_tries_no_other_view_first(
    app_without_worker: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pyramid tries a resource's views in the order they were added; each one whose
    # request method does not match raises a PredicateMismatch (a response object).
    app = app_without_worker
    job = app.submit({"action": "dummy"})
    mismatches: list[str] = []
    init = PredicateMismatch.__init__

    def counting(self, *args, **kwargs) -> None:
        mismatches.append(str(args))
        init(self, *args, **kwargs)

    monkeypatch.setattr(PredicateMismatch, "__init__", counting)
    assert app.get(f"/@jobs/{job['uuid']}", headers=app.auth()).json["uuid"] == job["uuid"]
    assert mismatches == []
    # The job's other views are still there, tried after it.
    app.delete(f"/@jobs/{job['uuid']}", headers=app.auth(), status=204)
    assert len(mismatches) == 1


def test_a_jobs_url_follows_the_host_it_is_asked_by(app_without_worker: Client) -> None:
    # The JSON PostgreSQL writes carries the URL of the container the job is read under.
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
