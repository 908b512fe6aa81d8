"""``/healthz`` and ``/healthz/ready``: no authentication, bounded checks, 200 or 503."""

from __future__ import annotations

import datetime as dt
import time

import pytest
import sqlalchemy as sa
import webtest

from nick_jobs import main
from nick_jobs.db.meta import utcnow
from nick_jobs.scheduling.model import ScheduledFiring
from nick_jobs.scheduling.scheduler import LIVENESS_ID, Scheduler, record_tick
from nick_jobs.web.views.health import CHECKS, REQUIRED
from tests.conftest import base_settings, reset_database
from tests.netutil import Proxy, black_hole, free_port

firings = ScheduledFiring.__table__


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


def test_ready_checks_the_database_the_broker_and_the_scheduler(app):
    res = app.get("/healthz/ready")
    assert res.status_int == 200
    assert res.json["status"] == "ok"
    checks = res.json["checks"]
    assert set(checks) == {"database", "broker", "scheduler"}
    assert (checks["database"]["status"], checks["broker"]["status"]) == ("ok", "ok")
    # No scheduler runs in the testing environment: reported, not required by default.
    assert {k: v for k, v in checks["scheduler"].items() if k != "duration_ms"} == {
        "status": "down",
        "message": "No scheduler has ticked yet.",
        "last_tick": None,
        "required": False,
    }
    assert "error" not in res.json


def _tick_at(engine: sa.Engine, seconds_ago: float) -> None:
    """A scheduler that last ticked ``seconds_ago`` (a scheduler writes only the time now)."""
    with engine.begin() as conn:
        conn.execute(sa.delete(firings).where(firings.c.scheduled_job_id == LIVENESS_ID))
    record_tick(engine, utcnow() - dt.timedelta(seconds=seconds_ago), "elsewhere:1")


@pytest.mark.parametrize("backend", ["sqlite", "postgres-redis"], indirect=True)
def test_ready_reports_the_scheduler_ok_within_the_bound_and_down_past_it(backend, make_app):
    reset_database(backend.engine)
    app = make_app(**{"nick_jobs.scheduler.stale_after": "20"})
    strict = make_app(
        **{"nick_jobs.scheduler.stale_after": "20", "nick_jobs.ready_requires_scheduler": "true"}
    )
    Scheduler(app.app.registry).tick()
    for client in (app, strict):
        res = client.get("/healthz/ready")
        check = res.json["checks"]["scheduler"]
        assert (res.status_int, check["status"]) == (200, "ok")
        assert check["age_s"] < 20
        assert check["last_tick"].endswith("Z")
    assert "required" not in strict.get("/healthz/ready").json["checks"]["scheduler"]

    _tick_at(backend.engine, 15)  # well within: a slow request still reads it in time
    assert strict.get("/healthz/ready").json["checks"]["scheduler"]["status"] == "ok"

    _tick_at(backend.engine, 21)
    res = app.get("/healthz/ready")
    check = res.json["checks"]["scheduler"]
    assert (res.status_int, res.json["status"], check["status"]) == (200, "ok", "down")
    assert check["message"] == "No scheduler ticked in the last 20 s."
    assert check["age_s"] >= 21
    assert check["required"] is False
    assert "error" not in res.json

    # A deployment that counts on its scheduler says so, and is not ready without it.
    res = strict.get("/healthz/ready", status=503)
    assert res.json["status"] == "unavailable"
    assert res.json["checks"]["scheduler"]["status"] == "down"
    assert res.json["checks"]["database"]["status"] == "ok"
    assert res.json["error"] == {
        "type": "Service unavailable",
        "message": "Not ready: scheduler down.",
    }
    # Back as soon as a scheduler ticks again.
    Scheduler(strict.app.registry).tick()
    assert strict.get("/healthz/ready").json["checks"]["scheduler"]["status"] == "ok"


@pytest.mark.parametrize("backend", ["sqlite", "postgres-redis"], indirect=True)
def test_ready_follows_a_running_scheduler_and_notices_when_it_stops(backend, make_app):
    reset_database(backend.engine)
    settings = {
        "nick_jobs.scheduler.interval": "0.1",
        "nick_jobs.scheduler.stale_after": "1",
        "nick_jobs.ready_requires_scheduler": "true",
    }
    # An API node without a scheduler, and one that runs the embedded scheduler thread.
    api = make_app(**settings)
    other = make_app(**settings, **{"nick_jobs.scheduler.embedded": "true"})
    scheduler = other.app.registry["nick_jobs.scheduling.scheduler"]
    try:
        res = wait_status(api, 200, "the scheduler's first tick")
        assert res.json["checks"]["scheduler"]["status"] == "ok"
    finally:
        scheduler.stop()
    res = wait_status(api, 503, "the stopped scheduler to be noticed")
    assert res.json["checks"]["scheduler"]["status"] == "down"
    assert res.json["error"]["message"] == "Not ready: scheduler down."


def wait_status(app, status: int, what: str, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while True:
        res = app.get("/healthz/ready", status="*")
        if res.status_int == status:
            return res
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)


def test_a_failing_check_that_is_not_required_is_reported_and_never_makes_ready_503(app):
    registry = app.app.registry

    def search(registry, timeout: float) -> None:
        raise ConnectionRefusedError("search.internal:9200")

    registry[CHECKS]["search"] = search
    registry[REQUIRED]["search"] = False
    res = app.get("/healthz/ready")
    assert res.json["checks"]["search"] == {
        "status": "unavailable",
        "message": "ConnectionRefusedError: the search is not reachable.",
        "duration_ms": res.json["checks"]["search"]["duration_ms"],
        "required": False,
    }
    registry[REQUIRED]["search"] = True
    res = app.get("/healthz/ready", status=503)
    assert res.json["error"]["message"] == "Not ready: search unavailable."


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
                # Long enough that a loaded host answers the database check within it,
                # far below the stuck check's 30 s and the broker's black hole.
                "nick_jobs.health_timeout": "1.5",
            }
        )
        # A check that hangs outright is cut off too, and reported.
        app.app.registry[CHECKS]["stuck"] = lambda registry, timeout: time.sleep(30)
        # The read engine's first connection (and SQLAlchemy's first-connect queries) made
        # beforehand: on a loaded host they alone took most of a short timeout once.
        with app.app.registry["nick_jobs.read_engine"].connect():
            pass
        started = time.monotonic()
        res = app.get("/healthz/ready", status=503)
        took = time.monotonic() - started
    assert took < 6, took  # the checks run at once, each cut at 1.5 s: not 30 s
    checks = res.json["checks"]
    assert checks["database"]["status"] == "ok"
    assert checks["broker"]["status"] == "unavailable"
    assert checks["stuck"] == {"status": "unavailable", "message": "No answer within 1.5 s."}


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
