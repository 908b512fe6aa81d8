"""``/healthz`` and ``/healthz/ready``: no authentication, bounded checks, 200 or 503."""

from __future__ import annotations

import time

import pytest
import webtest

from nick_jobs import main
from nick_jobs.views.health import CHECKS

from .conftest import base_settings, reset_database
from .netutil import Proxy, black_hole, free_port


def test_healthz_answers_ok_without_authentication(app):
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        res = app.get("/healthz", headers=headers)
        assert (res.status_int, res.content_type, res.text) == (200, "text/plain", "ok")
        assert res.headers["Cache-Control"] == "no-store"


def test_healthz_other_paths_and_methods_get_the_error_body(app):
    res = app.get("/healthz/nothing", status=404)
    assert res.json["error"]["type"] == "Not found"
    res = app.post("/healthz", status=405)
    assert set(res.json["error"]) == {"type", "message"}


def test_ready_checks_the_database_and_the_broker(app):
    res = app.get("/healthz/ready")
    assert res.status_int == 200
    assert res.json["status"] == "ok"
    assert set(res.json["checks"]) == {"database", "broker"}
    assert all(check["status"] == "ok" for check in res.json["checks"].values())
    assert "error" not in res.json


def test_broker_down_ready_is_503_and_jobs_are_still_accepted(backend, make_app):
    reset_database(backend.engine)
    app = make_app(**{"nick_jobs.broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    res = app.get("/healthz/ready", status=503)
    assert res.json["status"] == "unavailable"
    assert res.json["checks"]["database"]["status"] == "ok"
    assert res.json["checks"]["broker"]["status"] == "unavailable"
    assert res.json["error"] == {
        "type": "Service unavailable",
        "message": "Not ready: broker unavailable.",
    }
    # The row is committed before the message is sent: the job waits, it is not refused.
    job = app.submit({"action": "dummy"})
    assert job["status"] == "created"
    assert (
        app.get(job["@id"].replace("http://localhost:8080", ""), headers=app.auth()).json["status"]
        == "created"
    )


def test_checks_are_bounded_by_the_health_timeout(backend, make_app):
    reset_database(backend.engine)
    with black_hole() as port:
        app = make_app(
            **{
                "nick_jobs.broker_url": f"redis://127.0.0.1:{port}/0",
                "nick_jobs.health_timeout": "0.3",
            }
        )
        # A check that hangs outright is cut off too, and reported.
        app.app.registry[CHECKS]["stuck"] = lambda registry, timeout: time.sleep(30)
        started = time.monotonic()
        res = app.get("/healthz/ready", status=503)
        took = time.monotonic() - started
    assert took < 1.5, took
    checks = res.json["checks"]
    assert checks["database"]["status"] == "ok"
    assert checks["broker"]["status"] == "unavailable"
    assert checks["stuck"] == {"status": "unavailable", "message": "No answer within 0.3 s."}


@pytest.fixture
def proxied_pg_app(pg_url):
    """An app on PostgreSQL through a proxy the test can switch off."""
    host_port, _, database = pg_url.rpartition("@")[2].partition("/")
    proxy = Proxy(int(host_port.rsplit(":", 1)[1])).up()
    url = f"{pg_url.rpartition('@')[0]}@{proxy.address}/{database}"
    settings = base_settings(**{"sqlalchemy.url": url, "nick_jobs.broker_url": "stub://"})
    settings["nick_jobs.embedded_worker_threads"] = "0"
    wsgi = main({}, **settings)
    client = webtest.TestApp(wsgi, extra_environ={"HTTP_HOST": "localhost:8080"})
    yield client, proxy
    proxy.down()
    for key in ("nick_jobs.engine", "nick_jobs.read_engine"):
        wsgi.registry[key].dispose()


def test_database_down_ready_is_503_and_requests_get_the_error_body(proxied_pg_app):
    app, proxy = proxied_pg_app
    assert app.get("/healthz/ready").json["checks"]["database"]["status"] == "ok"
    proxy.down()
    started = time.monotonic()
    res = app.get("/healthz/ready", status=503)
    assert res.json["checks"]["database"]["status"] == "unavailable"
    assert res.json["checks"]["broker"]["status"] == "ok"
    assert res.json["error"]["message"] == "Not ready: database unavailable."
    res = app.post_json("/@login", {"login": "admin", "password": "x"}, status=503)
    assert res.json["error"]["type"] == "Service unavailable"
    assert time.monotonic() - started < 10
    # Liveness does not depend on the database.
    assert app.get("/healthz").text == "ok"
    proxy.up()
    deadline = time.monotonic() + 10
    while app.get("/healthz/ready", status="*").status_int != 200:
        assert time.monotonic() < deadline, "readiness did not come back with the database"
        time.sleep(0.05)
