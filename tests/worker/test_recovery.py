"""Recovery: lost workers, lost messages, two sweepers, graceful worker shutdown."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import signal
import threading
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import sqlalchemy as sa

from nick_jobs.db import get_engine
from nick_jobs.db.after_commit import transaction
from nick_jobs.db.meta import utcnow
from nick_jobs.jobs import lifecycle
from nick_jobs.jobs.actions import JobAction, get_registry
from nick_jobs.settings import ConfigurationError, parse
from nick_jobs.worker.sweeper import ADVISORY_LOCK_KEY, Sweeper
from tests.cli.test_cli import clean_env, nick_jobs, run_worker, wait_until
from tests.conftest import REDIS_URL, attempt_of, base_settings, need, reset_database, write_ini
from tests.netutil import Proxy, free_port
from tests.recovery_actions import patient

jobs, history = lifecycle.jobs, lifecycle.history
LEASE = 60.0


def max_retries(action: str) -> int:
    return {"patient": 1}.get(action, 0)


INCLUDES = "tests.actions_for_tests tests.recovery_actions"


def create(engine: sa.Engine, action: str = "dummy", **params: Any) -> str:
    with transaction(engine) as conn:
        return lifecycle.create(
            conn,
            action=action,
            params={"action": action, **params},
            actor="admin",
            title="",
            description="",
        )["uuid"]


def started(engine: sa.Engine, action: str = "dummy") -> lifecycle.StartedJob:
    uuid = create(engine, action)
    with transaction(engine) as conn:
        return lifecycle.start(conn, uuid)


def row(engine: sa.Engine, uuid: str):
    with engine.connect() as conn:
        return conn.execute(sa.select(jobs).where(jobs.c.uuid == uuid)).one()


def events(engine: sa.Engine, uuid: str) -> list[tuple[str, int, dict]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(history.c.event, history.c.attempt, history.c.data)
            .where(history.c.job_uuid == uuid)
            .order_by(history.c.id)
        )
        return [tuple(r) for r in rows]


def later(seconds: float) -> dt.datetime:
    return utcnow() + dt.timedelta(seconds=seconds)


def with_patient(app) -> Any:
    """The app's registry, with the ``patient`` action (one retry) registered."""
    registry = app.app.registry
    get_registry(registry).add(JobAction(name="patient", handler=patient, max_retries=1))
    return registry


class Sent(list):
    """Stands in for the queue: records what would be sent."""

    def send(self, uuid: str, action: str, delay_s: float = 0.0) -> None:
        self.append(uuid)

    def waiting(self) -> int:
        return 0  # nothing it records is queued anywhere


# --- the transitions, with an explicit clock ----------------------------------------------


def test_rescue_retries_when_attempts_are_left_else_fails_worker_lost(backend):
    reset_database(backend.engine)
    lost = started(backend.engine, "dummy")  # max_retries 0
    retried = started(backend.engine, "patient")  # max_retries 1
    alive = started(backend.engine, "dummy")
    with transaction(backend.engine) as conn:
        lifecycle.heartbeat(conn, {alive.uuid: alive.attempt}, later(LEASE))
    with transaction(backend.engine) as conn:
        # Not yet: the lease has not run out.
        early = lifecycle.rescue_lost(conn, LEASE, later(LEASE - 1), max_retries)
        assert (early.retried, early.failed) == ([], [])
        out = lifecycle.rescue_lost(conn, LEASE, later(LEASE + 1), max_retries)
    assert out.failed == [lost.uuid]
    assert out.retried == [(retried.uuid, "patient")]

    failed = row(backend.engine, lost.uuid)
    assert (failed.status, failed.attempt, failed.error["type"]) == ("failed", 1, "WorkerLost")
    assert "no heartbeat for 60 s" in failed.error["message"]
    again = row(backend.engine, retried.uuid)
    assert (again.status, again.attempt, again.started, again.heartbeat) == (
        "created",
        2,
        None,
        None,
    )
    event, attempt, data = events(backend.engine, retried.uuid)[-1]
    assert (event, attempt) == ("rescued", 2)
    assert data["previous_attempt"]["attempt"] == 1
    assert data["previous_attempt"]["status"] == "failed"
    assert data["previous_attempt"]["error"]["type"] == "WorkerLost"
    assert row(backend.engine, alive.uuid).status == "running"

    # The second attempt is lost too: no attempt is left, so it fails.
    with transaction(backend.engine) as conn:
        assert lifecycle.start(conn, retried.uuid).attempt == 2
    with transaction(backend.engine) as conn:
        out = lifecycle.rescue_lost(conn, LEASE, later(LEASE + 1), max_retries)
    assert out.failed == [retried.uuid]
    assert row(backend.engine, retried.uuid).error["type"] == "WorkerLost"


def test_lost_jobs_come_longest_silent_first_and_ties_in_creation_order(backend):
    """The order a sweep takes lost jobs in when there are more than its batch: the same
    on every database, a job that never beat by its start, jobs that beat together by id."""
    reset_database(backend.engine)
    together = [started(backend.engine) for _ in range(3)]
    never_beat = started(backend.engine)
    with transaction(backend.engine) as conn:
        # One heartbeat for a process's jobs: one time for all of them. The other job
        # started before it and has no heartbeat (as a row from before heartbeats).
        lifecycle.heartbeat(conn, {job.uuid: job.attempt for job in reversed(together)}, later(1))
        conn.execute(jobs.update().where(jobs.c.uuid == never_beat.uuid).values(heartbeat=None))
    with backend.engine.connect() as conn:
        lost = lifecycle.lost_jobs(conn, LEASE, later(LEASE + 2))
        first_two = lifecycle.lost_jobs(conn, LEASE, later(LEASE + 2), limit=2)
    order = [never_beat.uuid, *(job.uuid for job in together)]
    assert [job.uuid for job in lost] == order
    assert [job.uuid for job in first_two] == order[:2]


def test_a_heartbeat_that_lands_first_wins_over_the_rescue(backend):
    reset_database(backend.engine)
    job = started(backend.engine)
    now = later(LEASE + 1)
    with backend.engine.connect() as conn:
        (found,) = lifecycle.lost_jobs(conn, LEASE, now)
    assert found.uuid == job.uuid
    # The worker was only slow: its heartbeat commits between the sweeper's read and write.
    with transaction(backend.engine) as conn:
        assert lifecycle.heartbeat(conn, {job.uuid: job.attempt}, later(0.5)) == 1
    with transaction(backend.engine) as conn:
        assert not lifecycle.rescue(conn, found, retry=False, lease_s=LEASE, now=now)
        assert not lifecycle.rescue(conn, found, retry=True, lease_s=LEASE, now=now)
    assert (row(backend.engine, job.uuid).status, events(backend.engine, job.uuid)) == (
        "running",
        [("created", 1, {})],
    )
    # And a finished job is never rescued, whatever its heartbeat.
    with transaction(backend.engine) as conn:
        assert lifecycle.complete(conn, attempt_of(job.uuid, 1), {})
        assert lifecycle.lost_jobs(conn, LEASE, later(10 * LEASE)) == []


def test_hand_back_is_fenced_on_the_attempt(backend):
    reset_database(backend.engine)
    job = started(backend.engine, "patient")
    with transaction(backend.engine) as conn:
        assert not lifecycle.hand_back(conn, job.uuid, attempt=2)
        assert lifecycle.hand_back(conn, job.uuid, attempt=1)
        assert not lifecycle.hand_back(conn, job.uuid, attempt=1)
    handed = row(backend.engine, job.uuid)
    assert (handed.status, handed.attempt) == ("created", 2)
    event, attempt, data = events(backend.engine, job.uuid)[-1]
    assert (event, attempt, data["previous_attempt"]["error"]["type"]) == (
        "handed back",
        2,
        "WorkerStopped",
    )


# --- the sweeper ----------------------------------------------------------------------------


def test_stale_created_jobs_are_sent_again_once_per_grace_period(backend, app_without_worker):
    engine = backend.engine
    sweeper = Sweeper(app_without_worker.app.registry)
    sweeper.queue = sent = Sent()
    grace = sweeper.settings.resend_grace_s
    uuid = create(engine)
    t0 = row(engine, uuid).enqueued
    at = lambda seconds: t0 + dt.timedelta(seconds=seconds)  # noqa: E731

    assert sweeper.run_once(now=at(grace - 1)).resent == 0
    assert sweeper.run_once(now=at(grace + 1)).resent == 1
    # The same moment again, and any moment within the next grace period: nothing.
    assert sweeper.run_once(now=at(grace + 1)).resent == 0
    assert sweeper.run_once(now=at(2 * grace)).resent == 0
    assert sweeper.run_once(now=at(2 * grace + 2)).resent == 1
    assert sent == [uuid, uuid]
    assert row(engine, uuid).status == "created"


def _waiting_becomes(queue, count: int) -> None:
    """On RabbitMQ a message is sent without a confirm: the queue counts it a moment after
    the send returns."""
    wait_until(lambda: queue.waiting() == count, 10, f"{count} messages waiting")


def test_jobs_queued_behind_a_backlog_are_not_sent_again_lost_ones_are(backend, app_without_worker):
    """The queue delivers in the order messages were sent: while it holds N undelivered
    messages, the N jobs sent last are taken as queued, however long ago they went out."""
    engine = backend.engine
    registry = app_without_worker.app.registry
    queue = registry["nick_jobs.queue"]
    sweeper = Sweeper(registry)
    grace = sweeper.settings.resend_grace_s
    uuids = [app_without_worker.submit({"action": "dummy"})["@id"][-36:] for _ in range(3)]
    # Sent one second apart, oldest first.
    t0 = utcnow()
    with transaction(engine) as conn:
        for age, uuid in zip((3, 2, 1), uuids, strict=True):
            conn.execute(
                jobs.update()
                .where(jobs.c.uuid == uuid)
                .values(enqueued=t0 - dt.timedelta(seconds=age))
            )

    def enqueued() -> list[dt.datetime]:
        return [row(engine, uuid).enqueued for uuid in uuids]

    before = enqueued()
    _waiting_becomes(queue, 3)
    # A backlog older than the grace: every message is still in the queue.
    assert sweeper.run_once(now=t0 + dt.timedelta(seconds=grace + 1)).resent == 0
    assert (queue.waiting(), enqueued()) == (3, before)

    # The two oldest messages are lost; the newest is still queued.
    queue.broker.flush(sweeper.settings.queue_name)
    queue.send(uuids[2], "dummy")
    _waiting_becomes(queue, 1)
    now = t0 + dt.timedelta(seconds=grace + 2)
    assert sweeper.run_once(now=now).resent == 2
    assert enqueued() == [now, now, before[2]]
    _waiting_becomes(queue, 3)

    # Nothing queued at all: every job past the grace is sent again.
    queue.broker.flush(sweeper.settings.queue_name)
    assert queue.waiting() == 0
    later_still = now + dt.timedelta(seconds=grace + 1)
    assert sweeper.run_once(now=later_still).resent == 3
    assert enqueued() == [later_still] * 3
    _waiting_becomes(queue, 3)
    assert {row(engine, uuid).status for uuid in uuids} == {"created"}


@pytest.mark.parametrize("backend", ["postgres-redis"], indirect=True)
@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_a_broker_that_cannot_be_asked_leaves_the_grace_alone_to_decide(scheme, backend, make_app):
    reset_database(backend.engine)
    url = f"{scheme}://127.0.0.1:{free_port()}"  # nothing listens there
    registry = make_app(**{"nick_jobs.broker_url": url}).app.registry
    sweeper = Sweeper(registry)
    sweeper.queue = sent = Sent()
    # Counted on the app's own queue, recorded instead of sent (the broker is down).
    sent.waiting = registry["nick_jobs.queue"].waiting
    assert sent.waiting() is None
    uuid = create(backend.engine)
    assert sweeper.run_once(now=later(sweeper.settings.resend_grace_s + 1)).resent == 1
    assert sent == [uuid]


def test_a_sweep_rescues_then_sends_the_retried_jobs(backend, app_without_worker):
    engine = backend.engine
    sweeper = Sweeper(with_patient(app_without_worker))
    sweeper.queue = sent = Sent()
    lost, retried = started(engine, "dummy"), started(engine, "patient")
    result = sweeper.run_once(now=later(sweeper.settings.lease_s + 1))
    assert (result.ran, result.retried, result.failed) == (True, 1, 1)
    assert sent == [retried.uuid]
    assert str(result) == "rescued 2 (retried 1, failed 1), re-sent 1"
    assert row(engine, lost.uuid).status == "failed"


@pytest.mark.parametrize("backend", ["postgres-redis"], indirect=True)
@pytest.mark.parametrize("new_series", ["retried", "resumed"])
def test_a_rescue_counts_the_attempts_of_the_current_series(
    backend, app_without_worker, new_series
):
    """``patient`` allows one retry. A manual retry (or a resume) starts a new series, so
    its first attempt, lost, is retried too; only the second lost one fails."""
    engine = backend.engine
    sweeper = Sweeper(with_patient(app_without_worker))
    sweeper.queue = sent = Sent()
    uuid = started(engine, "patient").uuid

    def lose(attempt: int) -> str:
        """Start ``attempt`` and lose its worker; return what the sweep made of the job."""
        with transaction(engine) as conn:
            if row(engine, uuid).status == "created":
                assert lifecycle.start(conn, uuid).attempt == attempt
        assert row(engine, uuid).attempt == attempt
        result = sweeper.run_once(now=later(sweeper.settings.lease_s + 1))
        assert result.rescued == 1
        return row(engine, uuid).status

    assert lose(1) == "created"
    assert lose(2) == "failed"
    with transaction(engine) as conn:
        if new_series == "retried":
            assert lifecycle.retry(conn, uuid, "admin") == 3
        else:
            # A stopped job (as the worker stops it) resumed by its actor.
            conn.execute(
                jobs.update().where(jobs.c.uuid == uuid).values(status="stopped", error=None)
            )
            assert lifecycle.resume(conn, uuid, "admin") == (3, "patient")
    assert lose(3) == "created"
    assert lose(4) == "failed"
    assert row(engine, uuid).error["type"] == "WorkerLost"
    assert sent == [uuid, uuid]
    assert [(e[0], e[1]) for e in events(engine, uuid)] == [
        ("created", 1),
        ("rescued", 2),
        (new_series, 3),
        ("rescued", 4),
    ]


@pytest.mark.parametrize("backend", ["postgres-redis"], indirect=True)
def test_two_sweepers_racing_on_postgresql_rescue_each_job_once(backend, app_without_worker):
    engine = backend.engine
    registry = with_patient(app_without_worker)
    lost = [started(engine, "patient").uuid for _ in range(20)]
    now = later(LEASE + 1)

    # While another process holds the lock, a round does nothing.
    with transaction(engine) as conn:
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(ADVISORY_LOCK_KEY)))
        held = Sweeper(registry)
        held.queue = Sent()
        assert not held.run_once(now=now).ran
    assert {row(engine, uuid).status for uuid in lost} == {"running"}

    barrier = threading.Barrier(2)
    results, sent = [], Sent()

    def sweep() -> None:
        sweeper = Sweeper(registry)
        sweeper.queue = sent
        barrier.wait()
        results.append(sweeper.run_once(now=now))

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert sum(r.retried for r in results) == 20
    assert sorted(sent) == sorted(lost)
    for uuid in lost:
        assert [e[0] for e in events(engine, uuid)] == ["created", "rescued"]
        assert row(engine, uuid).attempt == 2


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_embedded_sweeper_runs_with_the_embedded_worker(backend, make_app):
    reset_database(backend.engine)
    app = make_app(
        **{
            "nick_jobs.lease": "1",
            "nick_jobs.heartbeat_interval": "0.2",
            "nick_jobs.sweep_interval": "0.1",
        }
    )
    job = started(backend.engine)  # as if its process had died: nothing refreshes it
    wait_until(lambda: row(backend.engine, job.uuid).status == "failed", 10, "the rescue")
    assert row(backend.engine, job.uuid).error["type"] == "WorkerLost"
    sweeper = app.app.registry["nick_jobs.worker.sweeper"]
    app.app.registry["nick_jobs.queue"].stop_embedded_worker()
    assert sweeper._thread is None


# --- real processes on PostgreSQL and Redis -------------------------------------------------


@pytest.fixture
def deployment(pg_url, tmp_path):
    """A PostgreSQL + Redis deployment with short recovery settings, on a queue of its own."""
    need("Redis", "127.0.0.1", 6379)
    tag = secrets.token_hex(4)
    settings = base_settings(
        **{
            "sqlalchemy.url": pg_url,
            "nick_jobs.broker_url": REDIS_URL,
            "nick_jobs.broker_namespace": f"nick-jobs-recovery-{tag}",
            "nick_jobs.queue": f"nick_jobs_recovery_{tag}",
            "nick_jobs.includes": INCLUDES,
            "nick_jobs.heartbeat_interval": "0.25",
            "nick_jobs.lease": "1.5",
            "nick_jobs.sweep_interval": "0.25",
            "nick_jobs.resend_grace": "1",
            "nick_jobs.worker_grace": "2.5",
        }
    )
    engine = get_engine(pg_url)
    reset_database(engine)
    yield {"settings": settings, "engine": engine, "tmp": tmp_path, "tag": tag}
    engine.dispose()
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"nick-jobs-recovery-{tag}*"):
        client.delete(key)
    client.close()


def submit(app, action: str, **params: Any) -> str:
    return (
        app.post_json(
            "/@jobs", {"params": {"action": action, **params}}, headers=app.auth(), status=201
        )
        .json["@id"]
        .rsplit("/", 1)[1]
    )


def api(settings: dict[str, str], **overrides: str):
    from nick_jobs import main
    from tests.conftest import Client

    wsgi = main({}, **{**settings, **overrides})
    return Client(wsgi, extra_environ={"HTTP_HOST": "localhost:8080"})


def status_is(engine: sa.Engine, uuid: str, status: str, attempt: int | None = None) -> bool:
    job = row(engine, uuid)
    return job.status == status and (attempt is None or job.attempt == attempt)


def test_broker_down_at_submit_the_job_runs_once_it_is_back(deployment):
    engine, settings = deployment["engine"], deployment["settings"]
    redis_url = urlsplit(REDIS_URL)
    proxy = Proxy(redis_url.port or 6379, redis_url.hostname or "127.0.0.1")
    proxied = urlunsplit(redis_url._replace(netloc=proxy.address))
    app = api(settings, **{"nick_jobs.broker_url": proxied})
    ini = write_ini(deployment["tmp"] / "worker.ini", settings)
    try:
        started_at = time.monotonic()
        uuid = submit(app, "echo", message="waited")
        assert time.monotonic() - started_at < 5
        assert app.get("/healthz/ready", status=503).json["checks"]["broker"]["status"] == (
            "unavailable"
        )
        proxy.up()
        assert app.get("/healthz/ready").json["status"] == "ok"
        with run_worker(ini, "-t", "1"):
            # Nobody sent it, nothing consumed it: the sweeper sends it after the grace.
            wait_until(lambda: status_is(engine, uuid, "completed"), 15, "the job to run")
        assert row(engine, uuid).result == {"message": "waited", "actor": "admin"}
    finally:
        proxy.down()
        app.app.registry["nick_jobs.queue"].broker.close()
        app.app.registry["nick_jobs.engine"].dispose()


def test_sigterm_finishes_running_jobs_within_the_grace_and_hands_back_the_rest(deployment):
    engine = deployment["engine"]
    # A grace that the 1 s job fits in with room on a loaded machine, and a lease that
    # a starved worker's heartbeats don't miss.
    settings = {
        **deployment["settings"],
        "nick_jobs.worker_grace": "5",
        "nick_jobs.lease": "3",
    }
    app = api(settings)
    ini = write_ini(deployment["tmp"] / "worker.ini", settings)
    try:
        with run_worker(ini, "-t", "2") as (proc, _seen):
            quick = submit(app, "dummy", sleep=1)
            slow = submit(app, "patient")
            wait_until(
                lambda: all(status_is(engine, u, "running") for u in (quick, slow)),
                15,
                "both jobs to run",
            )
            stopped_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0
            took = time.monotonic() - stopped_at
        # The quick one finished within the grace; the slow one was handed back.
        assert status_is(engine, quick, "completed", 1)
        assert status_is(engine, slow, "created", 2)
        assert [e[0] for e in events(engine, slow)] == ["created", "handed back"]
        assert 5 <= took < 5 + 5
        # Another worker runs it again.
        restarted_at = time.monotonic()
        with run_worker(ini, "-t", "1"):
            wait_until(lambda: status_is(engine, slow, "completed", 2), 15, "the handed-back job")
        rerun = time.monotonic() - restarted_at
        print(f"SIGTERM: stopped after {took:.2f} s, handed-back job re-run in {rerun:.2f} s")
    finally:
        app.app.registry["nick_jobs.queue"].broker.close()
        app.app.registry["nick_jobs.engine"].dispose()


# --- nick-jobs sweep ------------------------------------------------------------------------


def test_sweep_once_command(tmp_path):
    need("Redis", "127.0.0.1", 6379)
    tag = secrets.token_hex(4)
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    from nick_jobs.db import migrations

    engine = get_engine(url)
    migrations.upgrade(engine)
    settings = base_settings(
        **{
            "sqlalchemy.url": url,
            "nick_jobs.broker_url": REDIS_URL,
            "nick_jobs.broker_namespace": f"nick-jobs-sweep-{tag}",
            "nick_jobs.queue": f"nick_jobs_sweep_{tag}",
        }
    )
    ini = write_ini(tmp_path / "sweep.ini", settings)
    lost, waiting = started(engine).uuid, create(engine)
    long_ago = utcnow() - dt.timedelta(minutes=5)
    with transaction(engine) as conn:
        conn.execute(jobs.update().values(heartbeat=long_ago, enqueued=long_ago))
    try:
        proc = nick_jobs("sweep", ini, "--once", env=clean_env())
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        assert proc.stdout.strip() == "rescued 1 (retried 0, failed 1), re-sent 1"
        assert row(engine, lost).error["type"] == "WorkerLost"
        assert row(engine, waiting).enqueued > long_ago
        again = nick_jobs("sweep", ini, "--once", env=clean_env())
        assert again.stdout.strip() == "rescued 0 (retried 0, failed 0), re-sent 0"
    finally:
        engine.dispose()
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"nick-jobs-sweep-{tag}*"):
            client.delete(key)
        client.close()


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"nick_jobs.lease": "15"}, "at least twice nick_jobs.heartbeat_interval"),
        ({"nick_jobs.resend_grace": "0"}, "must be > 0"),
        ({"nick_jobs.sweep_interval": "-1"}, "0 (off) or more"),
        ({"nick_jobs.lease": "soon"}, "must be a number"),
    ],
)
def test_recovery_settings_are_checked(overrides, words):
    settings = base_settings(**{"sqlalchemy.url": "sqlite://", **overrides})
    with pytest.raises(ConfigurationError, match=re.escape(words)):
        parse(settings)
    defaults = parse(base_settings(**{"sqlalchemy.url": "sqlite://"}))
    assert (defaults.lease_s, defaults.sweep_interval_s, defaults.resend_grace_s) == (60, 15, 30)
