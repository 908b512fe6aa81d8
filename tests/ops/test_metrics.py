"""GET /metrics, the worker's counters, the state-change log lines and JSON lines."""

from __future__ import annotations

import json
import logging
import secrets
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nick_jobs import main
from nick_jobs.db import get_engine
from nick_jobs.jobs.lifecycle import Change
from nick_jobs.ops import metrics
from nick_jobs.ops.logging import STATE_LOGGER, JSONFormatter, use_json
from nick_jobs.ops.metrics import parse_settings
from nick_jobs.settings import ConfigurationError
from tests.cli.test_cli import run_worker, wait_until
from tests.conftest import REDIS_URL, Client, base_settings, need, reset_database, write_ini
from tests.netutil import free_port

on_sqlite = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(app, login: str | None = "admin") -> str:
    headers = app.auth(login) if login else {}
    response = app.get("/metrics", headers=headers)
    assert response.content_type == "text/plain"
    assert response.headers["Cache-Control"] == "no-store"
    return response.text


def submit(app, **params) -> str:
    return app.submit({"action": "dummy", **params})["@id"].rsplit("/", 1)[1]


@on_sqlite
def test_metrics_need_manage_site_by_default(app):
    anonymous = app.get("/metrics", status=401).json
    assert anonymous["error"]["type"] == "Unauthorized"
    denied = app.get("/metrics", headers=app.auth("alice"), status=403).json
    assert denied["error"] == {
        "type": "Forbidden",
        "message": "You are not authorized to access this resource.",
    }
    assert "nick_jobs_database_up 1.0" in scrape(app)


@on_sqlite
def test_metrics_can_be_open(backend, make_app):
    reset_database(backend.engine)
    app = make_app(**{"nick_jobs.metrics_access": "open"})
    assert value(scrape(app, login=None), "nick_jobs_database_up") == 1


@on_sqlite
@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("nick_jobs.metrics_access", "public", "open or manage"),
        ("nick_jobs.worker_metrics_port", "http", "port number"),
        ("nick_jobs.log_format", "xml", "text or json"),
    ],
)
def test_bad_settings_refuse_to_start(backend, key, value, words):
    settings = {**backend.settings, key: value}
    with pytest.raises(ConfigurationError, match=words):
        main({}, **settings)
    assert parse_settings({}).access == "manage"


@on_sqlite
def test_counts_of_created_finished_and_aborted_jobs(app):
    before = scrape(app)
    done = submit(app)
    app.wait_for(done, "completed")
    failed = submit(app, fail="on purpose")
    app.wait_for(failed, "failed")
    after = scrape(app)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("nick_jobs_jobs_created_total", action="dummy") == 2
    assert delta("nick_jobs_jobs_finished_total", action="dummy", status="completed") == 1
    assert delta("nick_jobs_jobs_finished_total", action="dummy", status="failed") == 1
    assert delta("nick_jobs_job_duration_seconds_count", action="dummy") == 2
    assert delta("nick_jobs_job_queue_lag_seconds_count", action="dummy") == 2
    assert value(after, "nick_jobs_running_jobs") == 0


@on_sqlite
def test_waiting_jobs_and_aborts_from_the_database(app_without_worker):
    app = app_without_worker
    first, _second = submit(app), submit(app)
    text = scrape(app)
    assert value(text, "nick_jobs_jobs", action="dummy", status="created") == 2
    assert value(text, "nick_jobs_oldest_waiting_job_age_seconds") > 0
    app.post(f"/@jobs/{first}/abort", headers=app.auth())
    after = scrape(app)
    assert value(after, "nick_jobs_jobs", action="dummy", status="created") == 1
    aborted = ("nick_jobs_jobs_finished_total", {"action": "dummy", "status": "aborted"})
    assert value(after, aborted[0], **aborted[1]) - value(text, aborted[0], **aborted[1]) == 1


def test_each_committed_change_counts_where_it_belongs():
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    names = [
        ("nick_jobs_jobs_created_total", {"action": "counted"}),
        ("nick_jobs_jobs_finished_total", {"action": "counted", "status": "completed"}),
        ("nick_jobs_jobs_finished_total", {"action": "counted", "status": "failed"}),
        ("nick_jobs_jobs_finished_total", {"action": "counted", "status": "aborted"}),
        ("nick_jobs_jobs_finished_total", {"action": "counted", "status": "stopped"}),
        ("nick_jobs_job_duration_seconds_count", {"action": "counted"}),
        ("nick_jobs_job_queue_lag_seconds_count", {"action": "counted"}),
        ("nick_jobs_rescues_total", {"outcome": "retried"}),
        ("nick_jobs_rescues_total", {"outcome": "failed"}),
    ]
    before = [sample(name, **labels) for name, labels in names]

    def change(event: str, status: str, **more) -> Change:
        return Change(event, "u1", "counted", "alice", status, **more)

    for one in (
        change("created", "created"),
        change("started", "running", lag=0.1),
        change("completed", "completed", took=0.5),
        change("failed", "failed", took=0.5),
        change("aborted", "aborted", by="admin", took=0.2),
        # Not finished: a retry waits again, a stopped job can resume.
        change("retry scheduled", "created", took=0.5, delay=1.0),
        change("stopped", "stopped", took=0.5),
        change("retried", "created", by="admin"),
        change("rescued", "created"),
        change("lost", "failed"),
    ):
        metrics.observe(one)
    after = [sample(name, **labels) for name, labels in names]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 1, 0, 2, 1, 1, 1]


# --- log lines ------------------------------------------------------------------------------


@on_sqlite
def test_one_log_line_per_state_change_made_by_the_api(app_without_worker, caplog):
    app = app_without_worker
    caplog.set_level(logging.INFO, logger=STATE_LOGGER)
    uuid = submit(app)
    app.post(f"/@jobs/{uuid}/abort", headers=app.auth("admin"))
    app.post(f"/@jobs/{uuid}/retry", headers=app.auth("admin"))
    app.post(f"/@jobs/{uuid}/abort", headers=app.auth("admin"))
    app.delete(f"/@jobs/{uuid}", headers=app.auth("admin"))
    lines = [r.getMessage() for r in caplog.records if r.name == STATE_LOGGER]
    assert lines == [
        f"job {uuid} action=dummy actor=admin status=created",
        f"job {uuid} action=dummy actor=admin status=aborted",
        f"job {uuid} action=dummy actor=admin status=created",
        f"job {uuid} action=dummy actor=admin status=aborted",
        f"job {uuid} action=dummy actor=admin status=deleted",
    ]


def test_json_lines_carry_the_job_fields():
    record = logging.LogRecord(
        STATE_LOGGER,
        logging.INFO,
        __file__,
        1,
        "job %s action=%s actor=%s status=%s duration=%.3fs",
        ("u-1", "dummy", "admin", "completed", 0.25),
        None,
    )
    line = json.loads(JSONFormatter().format(record))
    assert line["level"] == "INFO"
    assert line["logger"] == STATE_LOGGER
    assert line["message"] == "job u-1 action=dummy actor=admin status=completed duration=0.250s"
    assert line["job"] == {
        "uuid": "u-1",
        "action": "dummy",
        "actor": "admin",
        "status": "completed",
        "duration": 0.25,
    }
    assert line["time"].endswith("+00:00")
    plain = logging.LogRecord("x", logging.WARNING, __file__, 1, "no job %d here", (3,), None)
    assert "job" not in json.loads(JSONFormatter().format(plain))


@on_sqlite
def test_log_format_json_sets_the_root_handlers_formatter(backend):
    root = logging.getLogger()
    handler = logging.StreamHandler()
    root.addHandler(handler)
    try:
        wsgi = main({}, **{**backend.settings, "nick_jobs.log_format": "json"})
        assert isinstance(handler.formatter, JSONFormatter)
        wsgi.registry["nick_jobs.queue"].stop_embedded_worker()
        use_json(logging.getLogger("nobody"))  # a logger without handlers: nothing to do
    finally:
        root.removeHandler(handler)


# --- a worker process's metrics port ----------------------------------------------------------


@pytest.mark.parametrize("backend", ["postgres-redis"], indirect=True)
def test_worker_processes_serve_their_counters(backend, pg_url, tmp_path):
    """Each ``nick-jobs worker`` process serves its own metrics, its jobs and its
    sweeper's rescues: on ``nick_jobs.worker_metrics_port``, and a second process on the
    same host on the port its ``--metrics-port`` gives."""
    need("Redis", "127.0.0.1", 6379)
    port = other = free_port()
    while other == port:
        other = free_port()
    tag = secrets.token_hex(4)
    settings = base_settings(
        **{
            "sqlalchemy.url": pg_url,
            "nick_jobs.broker_url": REDIS_URL,
            "nick_jobs.broker_namespace": f"nick-jobs-metrics-{tag}",
            "nick_jobs.queue": f"nick_jobs_metrics_{tag}",
            "nick_jobs.worker_metrics_port": str(port),
        }
    )
    engine = get_engine(pg_url)
    reset_database(engine)
    app = Client(main({}, **settings), extra_environ={"HTTP_HOST": "localhost:8080"})
    ini = write_ini(tmp_path / "worker.ini", settings)

    def fetch(at: int) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{at}/metrics", timeout=2) as r:
                return r.read().decode()
        except OSError:
            return None

    def finished(texts: list[str]) -> float:
        return sum(
            value(text, "nick_jobs_jobs_finished_total", action="dummy", status="completed")
            for text in texts
        )

    try:
        with (
            run_worker(ini, "-t", "1"),
            run_worker(ini, "-t", "1", "--metrics-port", str(other), log_name="worker-2.log"),
        ):
            uuids = [submit(app) for _ in range(4)]
            for uuid in uuids:
                app.wait_for(uuid, "completed")
            texts: list[str] = []

            def scraped() -> bool:
                texts[:] = [fetch(port) or "", fetch(other) or ""]
                return all(texts) and finished(texts) == len(uuids)

            # Each job counted once, by the process that ran it, whichever that was.
            wait_until(scraped, 15, f"the workers' metrics on ports {port} and {other}")
            for text in texts:
                assert "nick_jobs_rescues_total" in text  # its own sweeper's
    finally:
        app.app.registry["nick_jobs.queue"].broker.close()
        app.app.registry["nick_jobs.engine"].dispose()
        engine.dispose()
