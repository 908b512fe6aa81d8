"""A PostgreSQL restart while jobs run and clients submit: no job fails, no request 500s.

The cluster is restarted for real (``pg_ctlcluster ... restart -m fast``, about 2 s): every
connection of the worker and of the API is cut, and new ones are refused until it is back.
Other tests sharing the cluster see the blip too, so there is one restart here.
"""

from __future__ import annotations

import collections
import datetime as dt
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa
from dramatiq.middleware import raise_thread_exception
from dramatiq.middleware.time_limit import TimeLimitExceeded

from nick_jobs import main
from nick_jobs.db import get_engine
from nick_jobs.db.after_commit import transaction
from nick_jobs.db.meta import utcnow
from nick_jobs.jobs import lifecycle
from nick_jobs.jobs.actions import ActionRegistry, JobAction
from nick_jobs.worker.runner import JobContext, JobRunner
from nick_jobs.worker.sweeper import Sweeper
from tests.conftest import (
    REDIS_URL,
    Client,
    base_settings,
    need,
    reset_database,
    start_worker,
    stop_process,
    write_ini,
)
from tests.netutil import Proxy
from tests.outages import need_pg_ctl, postgres_restarted

jobs, history, job_logs = lifecycle.jobs, lifecycle.history, lifecycle.job_logs

# What a client may wait for an answer while the database is away.
ANSWER_WITHIN_S = 5.0


@dataclass
class Answers:
    """What the API answered to the clients: status → count, and what went wrong."""

    statuses: collections.Counter = field(default_factory=collections.Counter)
    slowest_s: float = 0.0
    bad: list[str] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    restarting: threading.Event = field(default_factory=threading.Event)

    def record(self, response, took: float) -> None:
        with self.lock:
            self.statuses[response.status_int] += 1
            self.slowest_s = max(self.slowest_s, took)
            if response.status_int == 201:
                self.accepted.append(response.json["@id"].rsplit("/", 1)[1])
                return
            if response.status_int == 200:
                return
            body = response.json if response.content_type == "application/json" else None
            error = (body or {}).get("error", {})
            if response.status_int != 503 or not {"type", "message"} <= set(error):
                self.bad.append(f"{response.status_int} {response.body[:300]!r}")
            if took > ANSWER_WITHIN_S:
                self.bad.append(f"a {response.status_int} after {took:.1f} s")


def submit_until(
    app: Client, headers: dict, params: dict, answers: Answers, stop: threading.Event
) -> None:
    """One client: submit, and read back what it submitted, until told to stop; about
    ten jobs a second, which one worker keeps up with, but without pause while the
    database restarts, so that many requests meet it."""
    while not stop.wait(0.0 if answers.restarting.is_set() else 0.1):
        began = time.monotonic()
        response = app.post_json("/@jobs", {"params": params}, headers=headers, status="*")
        answers.record(response, time.monotonic() - began)
        if response.status_int == 201:
            began = time.monotonic()
            read = app.get(response.json["@id"], headers=headers, status="*")
            answers.record(read, time.monotonic() - began)


@pytest.fixture
def outage_deployment(pg_url, tmp_path):
    need("Redis", "127.0.0.1", 6379)
    need_pg_ctl()
    tag = secrets.token_hex(4)
    settings = base_settings(
        **{
            "sqlalchemy.url": pg_url,
            "nick_jobs.broker_url": REDIS_URL,
            "nick_jobs.broker_namespace": f"nick-jobs-outage-{tag}",
            "nick_jobs.queue": f"nick_jobs_outage_{tag}",
            # The test suite's recovery settings: a lease shorter than the outage, so a
            # sweeper that took stale heartbeats for dead workers would fail jobs.
            "nick_jobs.heartbeat_interval": "0.25",
            "nick_jobs.lease": "1.5",
            "nick_jobs.sweep_interval": "0.25",
            "nick_jobs.resend_grace": "3",
        }
    )
    engine = get_engine(pg_url)
    reset_database(engine)
    yield {"settings": settings, "engine": engine, "tmp": tmp_path}
    engine.dispose()
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for name in client.scan_iter(f"nick-jobs-outage-{tag}*"):
        client.delete(name)
    client.close()


def count_finished(engine: sa.Engine, uuids: list[str]) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count())
            .select_from(jobs)
            .where(jobs.c.uuid.in_(uuids), jobs.c.status.in_(("completed", "failed", "aborted")))
        ).scalar_one()


@pytest.mark.exclusive
def test_a_postgres_restart_fails_no_job_and_no_request(outage_deployment):
    """Jobs running, finishing and reporting across the restart all complete on their
    first attempt; the API answers 503 with the error body meanwhile, within 5 s."""
    engine, settings = outage_deployment["engine"], outage_deployment["settings"]
    ini = write_ini(outage_deployment["tmp"] / "outage.ini", settings)
    app = Client(main({}, **settings), extra_environ={"HTTP_HOST": "localhost:8080"})
    headers = app.auth()
    # A step reported, a short sleep: each job writes a start, a report and a finish.
    params = {"action": "dummy", "sleep": 0.02}
    worker = start_worker(ini, threads=4)
    answers = Answers()
    stop = threading.Event()
    clients = [
        threading.Thread(target=submit_until, args=(app, headers, params, answers, stop))
        for _ in range(4)
    ]
    try:
        for client in clients:
            client.start()
        # Restart once jobs are running and finishing: a few dozen are done.
        deadline = time.monotonic() + 30
        while count_finished(engine, list(answers.accepted)) < 40:
            assert time.monotonic() < deadline, (
                f"no jobs finished: {answers.statuses} {answers.bad[:3]}"
            )
            time.sleep(0.05)
        answers.restarting.set()
        with postgres_restarted():
            answers.restarting.clear()
            # Keep submitting through the restart and a little after it.
            time.sleep(2.0)
        stop.set()
        for client in clients:
            client.join(timeout=30)
        accepted = list(answers.accepted)
        deadline = time.monotonic() + 30
        while (done := count_finished(engine, accepted)) < len(accepted):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        stop.set()
        stop_process(worker)
        app.app.registry["nick_jobs.queue"].broker.close()
        app.app.registry["nick_jobs.engine"].dispose()
        app.app.registry["nick_jobs.read_engine"].dispose()

    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(jobs.c.uuid, jobs.c.status, jobs.c.attempt, jobs.c.error).where(
                jobs.c.uuid.in_(accepted)
            )
        ).all()
        rescued = conn.execute(
            sa.select(sa.func.count())
            .select_from(history)
            .where(history.c.job_uuid.in_(accepted), history.c.event == "rescued")
        ).scalar_one()
    statuses = collections.Counter(r.status for r in rows)
    failed = [(r.uuid, r.error) for r in rows if r.status != "completed"][:5]
    print(
        f"\nPostgreSQL restart: {dict(answers.statuses)} answers, slowest "
        f"{answers.slowest_s:.2f} s; {len(accepted)} accepted jobs: {dict(statuses)}"
    )
    assert answers.bad == [], answers.bad
    assert answers.statuses[503] > 0, "the restart was not seen by the API"
    assert answers.slowest_s < ANSWER_WITHIN_S
    assert len(rows) == len(accepted) == done
    assert statuses == {"completed": len(accepted)}, failed
    # Nothing was taken for lost: each job ran once, on its first attempt.
    assert rescued == 0
    assert {r.attempt for r in rows} == {1}


# --- one worker's runner and one sweeper, the database cut by a proxy ---------------------


@pytest.fixture
def cut_db(pg_url):
    """The test database reached through a proxy the test cuts: (engine, proxy, direct)."""
    direct = get_engine(pg_url)
    reset_database(direct)
    proxy = Proxy(5432).up()
    url = sa.engine.make_url(pg_url).set(port=proxy.port)
    engine = get_engine(url.render_as_string(hide_password=False))
    yield engine, proxy, direct
    proxy.down()
    engine.dispose()
    direct.dispose()


def back_after(proxy: Proxy, seconds: float, seen: Callable[[], None] | None = None):
    """Bring the proxy up in ``seconds``, calling ``seen`` just before."""

    def up() -> None:
        if seen is not None:
            seen()
        proxy.up()

    timer = threading.Timer(seconds, up)
    timer.start()
    return timer


def make_job(engine: sa.Engine, action: str = "cut") -> str:
    with transaction(engine) as conn:
        return lifecycle.create(
            conn,
            action=action,
            params={"action": action},
            actor="admin",
            title=action,
            description="",
        )["uuid"]


def job_row(engine: sa.Engine, uuid: str):
    with engine.connect() as conn:
        return conn.execute(sa.select(jobs).where(jobs.c.uuid == uuid)).one()


def runner_with(engine: sa.Engine, handler: Callable) -> JobRunner:
    registry = ActionRegistry()
    registry.add(JobAction(name="cut", handler=handler))
    return JobRunner(engine, registry, heartbeat_interval_s=0.1)


def test_a_finished_handler_keeps_its_outcome_until_the_database_is_back(cut_db):
    """The finishing UPDATE meets a cut connection: it is written once the database
    answers again, and the job's heartbeat is kept meanwhile."""
    engine, proxy, direct = cut_db
    held = []

    def handler(params, ctx):
        proxy.down()  # the worker's connection is cut after the handler's work
        back_after(proxy, 1.0, lambda: held.append(ctx.uuid in runner.running()))
        return {"done": True}

    runner = runner_with(engine, handler)
    uuid = make_job(direct)
    assert runner.run(uuid) == "completed"
    job = job_row(direct, uuid)
    assert (job.status, job.attempt, job.result) == ("completed", 1, {"done": True})
    assert held == [True]  # still heartbeating while its outcome waited


def test_a_time_limit_that_passes_while_the_outcome_waits_does_not_lose_it(cut_db):
    """Dramatiq's time limit interrupts the thread, wherever it is, once the action's
    time is up: after the handler returned, it must not cost the waiting outcome."""
    engine, proxy, direct = cut_db
    thread_id = []

    def handler(params, ctx):
        thread_id.append(threading.get_ident())
        proxy.down()
        timer = threading.Timer(0.3, raise_thread_exception, (thread_id[0], TimeLimitExceeded))
        timer.start()
        back_after(proxy, 1.0)
        return {"done": True}

    runner = runner_with(engine, handler)
    uuid = make_job(direct)
    assert runner.run(uuid) == "completed"
    assert job_row(direct, uuid).result == {"done": True}


def test_a_start_without_the_database_waits_for_it(cut_db):
    engine, proxy, direct = cut_db
    runner = runner_with(engine, lambda params, ctx: {"ran": True})
    uuid = make_job(direct)
    runner.engine.dispose()
    proxy.down()
    back_after(proxy, 0.5)
    assert runner.run(uuid) == "completed"
    assert job_row(direct, uuid).attempt == 1


def test_abort_checks_and_reports_without_the_database_do_not_fail_the_job(cut_db, monkeypatch):
    engine, proxy, direct = cut_db
    monkeypatch.setattr(JobContext, "CHECK_INTERVAL_S", 0.0)
    monkeypatch.setattr(JobContext, "REPORT_INTERVAL_S", 0.05)

    def handler(params, ctx):
        ctx.check()  # opens a pooled connection, which the cut then breaks
        proxy.down()
        timer = back_after(proxy, 0.5)
        while timer.is_alive():
            ctx.progress(1, 2, "waiting for the database")  # each checks for an abort
            ctx.log("still here")
        ctx.progress(2, 2)
        return {}

    runner = runner_with(engine, handler)
    uuid = make_job(direct)
    assert runner.run(uuid) == "completed"
    job = job_row(direct, uuid)
    assert (job.status, job.attempt, job.progress["percent"]) == ("completed", 1, 100.0)
    with direct.connect() as conn:
        lines = conn.execute(
            sa.select(sa.func.count()).select_from(job_logs).where(job_logs.c.job_uuid == uuid)
        ).scalar_one()
    assert lines > 0  # the lines logged while the database was away were kept


def test_handler_writes_lost_with_the_connection_hand_the_job_back(cut_db):
    """The handler's own transaction can't commit on a cut connection, and can't be
    written again by the runner: the job runs again as a new attempt, not failed."""
    engine, proxy, direct = cut_db

    def handler(params, ctx):
        ctx.dbsession.execute(sa.text("SELECT 1"))  # the handler's transaction begins
        proxy.down()
        back_after(proxy, 0.5)
        return {}

    runner = runner_with(engine, handler)
    sent = []
    runner.send = lambda uuid, action, delay: sent.append((uuid, action, delay))
    uuid = make_job(direct)
    assert runner.run(uuid) == "created"
    job = job_row(direct, uuid)
    assert (job.status, job.attempt) == ("created", 2)
    with direct.connect() as conn:
        handed = conn.execute(
            sa.select(history.c.data).where(
                history.c.job_uuid == uuid, history.c.event == "handed back"
            )
        ).scalar_one()
    assert handed["previous_attempt"]["error"]["type"] == "DatabaseUnavailable"
    assert sent == [(uuid, "cut", 0.0)]


def test_a_redelivery_of_a_job_this_process_holds_waits_for_its_outcome(cut_db):
    """A second message for a job this process runs (the broker lost the connection the
    first came on) is not dropped at once: it is done once the job's outcome is written."""
    _engine, _proxy, direct = cut_db
    release = threading.Event()
    runner = runner_with(direct, lambda params, ctx: release.wait(10) and {})
    uuid = make_job(direct)
    first = threading.Thread(target=runner.run, args=(uuid,))
    first.start()
    deadline = time.monotonic() + 10
    while uuid not in runner.running():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    seen_at_return = []

    def redelivered() -> None:
        assert runner.run(uuid) is None
        seen_at_return.append(job_row(direct, uuid).status)

    second = threading.Thread(target=redelivered)
    second.start()
    second.join(timeout=0.5)
    assert second.is_alive(), "the redelivery was dropped while the job ran"
    release.set()
    first.join(timeout=10)
    second.join(timeout=10)
    assert seen_at_return == ["completed"]


def sweeper_for(engine: sa.Engine, pg_url: str, direct: sa.Engine) -> Sweeper:
    settings = base_settings(
        **{
            "sqlalchemy.url": pg_url,
            "nick_jobs.broker_url": REDIS_URL,
            "nick_jobs.broker_namespace": f"nick-jobs-outage-{secrets.token_hex(4)}",
            "nick_jobs.heartbeat_interval": "0.25",
            "nick_jobs.lease": "1.5",
        }
    )
    registry = main({}, **settings).registry
    registry["nick_jobs.engine"].dispose()
    registry["nick_jobs.engine"] = engine
    sweeper = Sweeper(registry)
    sweeper.queue = Sent()
    return sweeper


class Sent(list):
    """Stands in for the queue: records what would be sent."""

    def send(self, uuid: str, action: str) -> None:
        self.append(uuid)

    def waiting(self) -> int:
        return 0


def running_job(direct: sa.Engine, heartbeat: dt.datetime) -> str:
    uuid = make_job(direct, "dummy")
    with transaction(direct) as conn:
        job = lifecycle.start(conn, uuid)
        lifecycle.heartbeat(conn, {uuid: job.attempt}, heartbeat)
    return uuid


def test_after_losing_the_database_the_sweeper_waits_a_lease_before_rescuing(cut_db, pg_url):
    """Heartbeats the database could not take say nothing of their workers: the first
    rounds after an outage rescue nothing, until a lease has passed."""
    need("Redis", "127.0.0.1", 6379)
    engine, proxy, direct = cut_db
    sweeper = sweeper_for(engine, pg_url, direct)
    uuid = running_job(direct, utcnow() - dt.timedelta(seconds=10))
    engine.dispose()
    proxy.down()
    with pytest.raises(sa.exc.OperationalError):
        sweeper.run_once()
    proxy.up()
    back = time.monotonic()
    assert sweeper.run_once().rescued == 0
    assert job_row(direct, uuid).status == "running"
    while not sweeper.run_once().rescued:
        assert time.monotonic() - back < 10, "never rescued"
        time.sleep(0.05)
    assert time.monotonic() - back >= 1.5
    assert job_row(direct, uuid).status == "failed"


def test_a_sweeper_rescues_nothing_within_a_lease_of_the_server_start(cut_db, pg_url):
    """A PostgreSQL server that (re)started less than a lease ago has heartbeats that
    could not be written while it was down, whether or not the sweeper saw it."""
    need("Redis", "127.0.0.1", 6379)
    _engine, _proxy, direct = cut_db
    sweeper = sweeper_for(direct, pg_url, direct)
    with direct.connect() as conn:
        up_since = conn.execute(sa.select(sa.func.pg_postmaster_start_time())).scalar_one()
    uuid = running_job(direct, up_since - dt.timedelta(seconds=10))
    assert sweeper.run_once(now=up_since + dt.timedelta(seconds=1)).rescued == 0
    assert sweeper.run_once(now=up_since + dt.timedelta(seconds=2)).failed == 1
    assert job_row(direct, uuid).status == "failed"


def test_the_api_answers_503_while_the_database_is_cut_and_recovers_after(cut_db, pg_url):
    """Requests on kept read connections and on the pool's: a 503 with the error body
    while the database is away, and the broken connections are not handed out after."""
    need("Redis", "127.0.0.1", 6379)
    engine, proxy, _direct = cut_db
    settings = base_settings(
        **{
            "sqlalchemy.url": engine.url.render_as_string(hide_password=False),
            "nick_jobs.broker_url": REDIS_URL,
            "nick_jobs.broker_namespace": f"nick-jobs-outage-{secrets.token_hex(4)}",
        }
    )
    app = Client(main({}, **settings), extra_environ={"HTTP_HOST": "localhost:8080"})
    headers = app.auth()
    body = {"params": {"action": "dummy"}}
    try:
        uuid = app.post_json("/@jobs", body, headers=headers, status=201).json["@id"]
        app.get(uuid, headers=headers, status=200)
        app.get("/@jobs", headers=headers, status=200)
        proxy.down()
        for _ in range(3):
            for method, path in (("get", uuid), ("get", "/@jobs"), ("post", "/@jobs")):
                began = time.monotonic()
                if method == "get":
                    response = app.get(path, headers=headers, status="*")
                else:
                    response = app.post_json(path, body, headers=headers, status="*")
                assert time.monotonic() - began < ANSWER_WITHIN_S
                assert response.status_int == 503, (method, path, response.body[:300])
                assert response.json["error"]["type"] == "Service unavailable"
        proxy.up()
        app.get(uuid, headers=headers, status=200)
        app.get("/@jobs", headers=headers, status=200)
        app.post_json("/@jobs", body, headers=headers, status=201)
    finally:
        app.app.registry["nick_jobs.queue"].broker.close()
        app.app.registry["nick_jobs.engine"].dispose()
        app.app.registry["nick_jobs.read_engine"].dispose()


def test_a_statement_that_loses_its_connection_invalidates_it(cut_db):
    """The lost connection is invalidated, so the pool never hands out a closed one,
    whose next use raised the driver's bare error (a 500) instead of a database error
    (a 503)."""
    engine, proxy, _direct = cut_db
    statement = sa.select(jobs.c.uuid).where(jobs.c.uuid == sa.bindparam("b_uuid"))
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        assert conn.execute(statement, {"b_uuid": "x"}).one_or_none() is None
        proxy.down()
        with pytest.raises(sa.exc.OperationalError) as lost:
            conn.execute(statement, {"b_uuid": "x"})
        assert lost.value.connection_invalidated
        assert conn.invalidated
        proxy.up()
        conn.rollback()  # the transaction SQLAlchemy began for the failed statement
        # The next use reconnects, as with any invalidated connection.
        assert conn.execute(statement, {"b_uuid": "x"}).one_or_none() is None


def test_a_database_that_never_answers_is_a_503_within_5_s(pg_url):
    """A server that takes the connection and says nothing (a host gone, a full backlog):
    connecting gives up after its timeout and the request is answered, not hung."""
    need("Redis", "127.0.0.1", 6379)
    silent = socket.create_server(("127.0.0.1", 0), backlog=16)  # never accepts
    try:
        url = sa.engine.make_url(pg_url).set(port=silent.getsockname()[1])
        settings = base_settings(
            **{
                "sqlalchemy.url": url.render_as_string(hide_password=False),
                "nick_jobs.broker_url": REDIS_URL,
                "nick_jobs.broker_namespace": f"nick-jobs-outage-{secrets.token_hex(4)}",
            }
        )
        app = Client(main({}, **settings), extra_environ={"HTTP_HOST": "localhost:8080"})
        try:
            began = time.monotonic()
            response = app.get("/@jobs", headers=app.auth(), status="*")
            took = time.monotonic() - began
        finally:
            app.app.registry["nick_jobs.queue"].broker.close()
            app.app.registry["nick_jobs.engine"].dispose()
            app.app.registry["nick_jobs.read_engine"].dispose()
    finally:
        silent.close()
    assert response.status_int == 503, response.body[:300]
    assert response.json["error"]["type"] == "Service unavailable"
    assert took < ANSWER_WITHIN_S
