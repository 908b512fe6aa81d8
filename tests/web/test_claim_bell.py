"""The claim bell: a waiting claim is woken by the request that makes a remote job
claimable, in its own process and, on PostgreSQL, in every other (``LISTEN``/``NOTIFY``),
as it is on PostgreSQL by a scheduler's firing or a sweeper's rescue.

Every app here looks for jobs no bell announced once a minute
(``nick_jobs.claim_poll_interval``), and its claims wait 30 s at most: a claim that
answers with the job within 10 s was woken by a bell.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from nick_jobs import main
from nick_jobs.db import get_engine
from nick_jobs.db.meta import utcnow
from nick_jobs.jobs.lifecycle import CLAIMS_CHANNEL
from nick_jobs.scheduling.scheduler import Scheduler
from nick_jobs.settings import parse
from nick_jobs.users import tokens
from nick_jobs.web.claim_bell import REGISTRY_KEY as CLAIM_BELL
from nick_jobs.web.claim_bell import ClaimBell
from nick_jobs.worker.sweeper import Sweeper
from tests.conftest import Backend, Client, api_only_settings, pserve, reset_database
from tests.jobs.test_consumers import (
    REINDEX,
    _claim,
    _post,
    _submit,
    claim_looks,
    with_remote_action,
)
from tests.waiting import until

QUIET = {"nick_jobs.claim_poll_interval": "60"}
LISTENING = sa.text(
    "SELECT pid FROM pg_stat_activity "
    "WHERE datname = current_database() AND query = :listen AND pid <> pg_backend_pid()"
).bindparams(listen=f"LISTEN {CLAIMS_CHANNEL}")


def bell_of(app: Client) -> ClaimBell:
    bell: ClaimBell = app.app.registry[CLAIM_BELL]
    return bell


def listening_pids(engine: sa.Engine) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(LISTENING).scalars())


def test_a_remote_job_made_claimable_through_any_process_wakes_a_waiting_claim(backend, make_app):
    """Submitted one by one or in bulk, handed back, retried, restarted or resumed: the
    claim waiting in one app is woken, by the same app on SQLite (one process), by
    another app on the same database on PostgreSQL."""
    reset_database(backend.engine)
    # Leases of an hour: on a loaded machine the test outlasts REINDEX's 30 s, and the
    # real worker's sweeper (PostgreSQL backends) would take back the jobs it holds.
    app = with_remote_action(make_app(**QUIET), {**REINDEX, "resumable": True, "lease": 3600})
    sqlite = backend.name == "sqlite"
    other = app if sqlite else make_app(**QUIET)
    assert (bell_of(app).listener is None) is sqlite

    def woken_by(make_jobs: Callable[[], list[str]]) -> dict[str, str]:
        """The jobs the woken claim took: uuid → lease."""
        listener = bell_of(app).listener
        started = listener is None or listener.listening.is_set()
        with claim_looks(app) as looked, ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(lambda: _claim(app, wait=30, limit=5).json)
            # Its first look, in the view, found nothing. On PostgreSQL the first claim
            # that waits has its process listen, and looks again once it listens.
            looked(1)
            if not started:
                assert listener.listening.wait(10)
                looked(2)
            made = make_jobs()
            got = waiting.result(timeout=10)
        assert got
        assert {job["uuid"] for job in got} <= set(made)
        _claim(app, limit=100)  # what the claim left: no job waits for the next
        return {job["uuid"]: job["lease"]["id"] for job in got}

    woken_by(lambda: [_submit(other)["uuid"]])
    bulk = [{"params": {"action": "reindex", "site": site}} for site in ("a", "b")]
    woken_by(
        lambda: [
            job["uuid"]
            for job in other.post_json("/@jobs", bulk, headers=other.auth(), status=201).json
        ]
    )
    job = _submit(other)["uuid"]
    lease = _claim(other).json[0]["lease"]["id"]

    def hand_back() -> list[str]:
        _post(other, job, "release", {"lease": lease})
        return [job]

    lease = woken_by(hand_back)[job]
    _post(other, job, "fail", {"lease": lease, "error": {"message": "disk"}})

    def retry() -> list[str]:
        other.post(f"/@jobs/{job}/retry", headers=other.auth(), status=204)
        return [job]

    lease = woken_by(retry)[job]
    _post(other, job, "fail", {"lease": lease, "error": {"message": "disk again"}})

    def restart() -> list[str]:
        restarted = other.post(f"/@jobs/{job}/restart", headers=other.auth(), status=201)
        return [restarted.json["uuid"]]

    ((job, lease),) = woken_by(restart).items()
    other.post(f"/@jobs/{job}/stop", headers=other.auth(), status=204)
    _post(other, job, "stopped", {"lease": lease, "checkpoint": {"batch": 3}})

    def resume() -> list[str]:
        other.post(f"/@jobs/{job}/resume", headers=other.auth(), status=204)
        return [job]

    lease = woken_by(resume)[job]
    if sqlite:
        return
    # Made by no request, on PostgreSQL the lifecycle announces them all the same: a
    # scheduler's firing (run by a worker process, not by the API), and the sweeper's
    # rescue of a job whose consumer let its lease run out.
    schedule = {
        "id": "nightly-reindex",
        "title": "Nightly reindex",
        "action": "reindex",
        "params": {"site": "a"},
        "schedule": "0 0 * * *",
    }
    other.post_json("/@scheduled-jobs", schedule, headers=other.auth(), status=201)

    def scheduled() -> list[str]:
        tomorrow = utcnow() + dt.timedelta(days=1)
        scheduler = Scheduler(other.app.registry, clock=lambda: tomorrow, missed="catchup")
        return [fired.job_uuid for fired in scheduler.tick()]

    ((job, _),) = woken_by(scheduled).items()
    retried_once = {**REINDEX, "resumable": True, "lease": 3600, "max_retries": 1}
    other.put_json("/@job-actions/reindex", retried_once, headers=other.auth(), status=200)

    def rescued() -> list[str]:
        # The scheduled job, and those the earlier claims took to leave none waiting.
        with other.backend.engine.connect() as conn:
            running = list(
                conn.execute(sa.text("SELECT uuid FROM jobs WHERE status = 'running'")).scalars()
            )
        assert job in running
        past_the_lease = utcnow() + dt.timedelta(seconds=3601)
        assert Sweeper(other.app.registry).run_once(now=past_the_lease).retried == len(running)
        return running

    woken_by(rescued)


# --- PostgreSQL: the listener ----------------------------------------------------------


@pytest.fixture
def pg_app(pg_url) -> Iterator[Callable[..., Client]]:
    """``pg_app(**settings)``: an app on PostgreSQL with the remote action ``reindex``
    and the consumer ``indexer``; its bell is closed at the end."""
    engine = get_engine(pg_url)
    reset_database(engine)
    apps: list[Client] = []

    def factory(**overrides: str) -> Client:
        settings = api_only_settings(pg_url, **QUIET, **overrides)
        client = Client(main({}, **settings), extra_environ={"HTTP_HOST": "localhost:8080"})
        client.backend = Backend("postgres", settings, engine)
        if not apps:
            with_remote_action(client, REINDEX)
        apps.append(client)
        return client

    yield factory
    for client in apps:
        bell_of(client).close()
        client.app.registry["nick_jobs.engine"].dispose()
        client.app.registry["nick_jobs.read_engine"].dispose()
    engine.dispose()


def test_the_listener_listens_again_after_losing_its_connection(pg_app, caplog):
    app, other = pg_app(), pg_app()
    listener = bell_of(app).listener
    listener.retry_first_s = 0.05
    engine = other.app.registry["nick_jobs.engine"]
    before = listening_pids(engine)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(lambda: _claim(app, wait=30).json)
        assert listener.listening.wait(10)
        (first,) = until(lambda: listening_pids(engine) - before, "the listener's LISTEN")
        with caplog.at_level(logging.WARNING, "nick_jobs.web.claim_bell"), engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
            conn.commit()
            again = until(
                lambda: listening_pids(engine) - before - {first}, "a LISTEN on a new connection"
            )
        assert len(again) == 1
        assert "could not listen for the claim bells of other processes" in caplog.text
        assert listener.listening.wait(10)
        job = _submit(other)
        got = waiting.result(timeout=10)
    assert [claimed["uuid"] for claimed in got] == [job["uuid"]]


def test_the_listener_lets_its_connection_go_once_no_claim_waits(pg_app):
    app = pg_app()
    listener = bell_of(app).listener
    listener.linger_s, listener.check_s = 3.0, 0.05
    engine = app.app.registry["nick_jobs.engine"]
    before = listening_pids(engine)
    assert _claim(app, wait=0.2).json == []
    until(lambda: listening_pids(engine) - before, "the listener's LISTEN")
    # Three seconds after its last waiting claim, its connection is closed.
    until(lambda: not listening_pids(engine) - before, "the LISTEN connection to close")
    assert not listener.listening.is_set()
    # The next claim that waits starts it again; closing the bell closes it at once.
    assert _claim(app, wait=0.2).json == []
    assert listener.listening.wait(10)
    bell_of(app).close()
    assert not listener.listening.is_set()
    # Closed by the time close() returns; PostgreSQL's server process for it may take a
    # moment more to leave pg_stat_activity.
    until(lambda: not listening_pids(engine) - before, "the LISTEN connection to close", 5)


def test_a_job_submitted_through_another_api_process_wakes_a_waiting_claim(pg_url, tmp_path):
    """Two ``pserve`` processes on one database: a claim waits in one, the job is
    submitted through the other."""
    engine = get_engine(pg_url)
    reset_database(engine)
    settings = api_only_settings(pg_url, **QUIET)
    token = tokens.issue(parse(settings), "admin", "Admin")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    before = listening_pids(engine)
    with pserve(settings, tmp_path / "a") as a, pserve(settings, tmp_path / "b") as b:

        def call(port: int, method: str, path: str, body: object) -> tuple[int, object]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                conn.request(method, path, json.dumps(body), headers)
                response = conn.getresponse()
                return response.status, json.loads(response.read() or b"null")
            finally:
                conn.close()

        definition = {"params": {"type": "object"}}
        assert call(a, "PUT", "/@job-actions/reindex", definition)[0] == 201
        with ThreadPoolExecutor(1) as pool:
            body = {"actions": ["reindex"], "wait": 30}
            waiting = pool.submit(call, a, "POST", "/@jobs/@claim", body)
            until(lambda: listening_pids(engine) - before, "process a to listen", timeout=10)
            status, job = call(b, "POST", "/@jobs", {"params": {"action": "reindex"}})
            assert status == 201
            status, claimed = waiting.result(timeout=10)
    engine.dispose()
    assert status == 200
    assert [each["uuid"] for each in claimed] == [job["uuid"]]
