"""The consumer API on every backend: remote actions' jobs claimed, checked in on and
finished over HTTP, with leases the sweeper enforces."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from nick_jobs.db.after_commit import transaction
from nick_jobs.db.meta import utcnow
from nick_jobs.jobs import lifecycle
from nick_jobs.users.passwords import hash_password
from nick_jobs.worker.sweeper import Sweeper
from tests.conftest import reset_database

REINDEX = {
    "title": "Reindex a site",
    "permission": "Add Jobs",
    "params": {
        "type": "object",
        "properties": {"site": {"type": "string"}},
        "required": ["site"],
        "additionalProperties": False,
    },
    "result": {
        "type": "object",
        "properties": {"indexed": {"type": "integer"}},
        "required": ["indexed"],
    },
    "labels": {"team": "search"},
    "lease": 30,
}


@pytest.fixture
def app(app_without_worker):
    """An app with the remote action ``reindex`` and a consumer's user, ``indexer``
    (role Worker). Its Dramatiq side runs nothing: remote jobs get no message anyway."""
    return with_remote_action(app_without_worker, REINDEX)


def with_remote_action(app, definition: dict):
    """``app`` with the remote action ``reindex`` declared as ``definition``, and the
    consumer ``indexer`` (role Worker, password ``x``)."""
    app.put_json("/@job-actions/reindex", definition, headers=app.auth(), status=201)
    with app.backend.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO users (login, fullname, password_hash, roles, created) "
                "VALUES ('indexer', 'Indexer', :hash, :roles, :created)"
            ).bindparams(sa.bindparam("roles", type_=sa.JSON())),
            {"hash": hash_password("x"), "roles": ["Worker"], "created": utcnow()},
        )
    return app


def _claim(app, login: str = "indexer", status: int = 200, **body):
    body.setdefault("actions", ["reindex"])
    return app.post_json("/@jobs/@claim", body, headers=app.auth(login), status=status)


def _submit(app, site: str = "news", **params):
    return app.submit({"action": "reindex", "site": site, **params}, login="alice")


def _post(app, uuid: str, what: str, body: dict, status: int = 204, login: str = "indexer"):
    return app.post_json(f"/@jobs/{uuid}/{what}", body, headers=app.auth(login), status=status)


def _job(app, uuid: str) -> dict:
    return app.get(f"/@jobs/{uuid}", headers=app.auth()).json


def test_a_claim_takes_the_oldest_jobs_with_a_lease(app):
    assert _claim(app).json == []
    first, second, third = (_submit(app, site) for site in ("a", "b", "c"))
    claimed = _claim(app, limit=2).json
    assert [job["uuid"] for job in claimed] == [first["uuid"], second["uuid"]]
    for job in claimed:
        assert job["status"] == "running"
        assert job["params"]["action"] == "reindex"
        assert len(job["lease"]["id"]) >= 20
        expires = dt.datetime.fromisoformat(job["lease"]["expires"].replace("Z", "+00:00"))
        assert 25 < (expires - utcnow()).total_seconds() <= 30
        assert "checkpoint" not in job
    assert [job["uuid"] for job in _claim(app, limit=5).json] == [third["uuid"]]
    assert _claim(app).json == []
    history = app.get(f"/@jobs/{first['uuid']}/history", headers=app.auth()).json
    assert [(event["event"], event["by"]) for event in history] == [
        ("created", "alice"),
        ("started", "indexer"),
    ]


def test_a_waiting_claim_answers_when_the_wait_is_over_or_a_job_comes(app):
    started = time.monotonic()
    assert _claim(app, wait=0.3).json == []
    assert 0.3 <= time.monotonic() - started < 5
    # A job submitted while the claim waits is its answer.
    with claim_looks(app) as looked, ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(lambda: _claim(app, wait=10).json)
        looked(2)
        job = _submit(app)
        got = waiting.result(timeout=10)
    assert [claimed["uuid"] for claimed in got] == [job["uuid"]]


@contextlib.contextmanager
def claim_looks(app) -> Iterator[Callable[[int], None]]:
    """``looked(n)`` returns once claims have looked for jobs ``n`` times: a claim that
    looked twice found nothing and waits."""
    engine = app.app.registry["nick_jobs.engine"]
    looks: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        # A look is one statement (on PostgreSQL "WITH candidates AS (SELECT …) UPDATE"),
        # or on SQLite the SELECT of the candidates before an UPDATE of each.
        if (
            statement.lstrip().startswith(("SELECT", "WITH"))
            and "jobs.action_version IS NOT NULL" in statement
        ):
            looks.append(statement)

    def looked(n: int) -> None:
        deadline = time.monotonic() + 10
        while len(looks) < n:
            assert time.monotonic() < deadline, f"claims looked {len(looks)} times, not {n}"
            time.sleep(0.01)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        yield looked
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)


def test_waiting_claims_are_capped_per_process(backend, make_app):
    reset_database(backend.engine)
    app = make_app(**{"nick_jobs.claim_max_waiting": "1"})
    app.put_json("/@job-actions/reindex", REINDEX, headers=app.auth(), status=201)
    with claim_looks(app) as looked, ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(lambda: _claim(app, login="admin", wait=20).json)
        looked(2)
        res = _claim(app, login="admin", wait=5, status=503)
        assert res.headers["Retry-After"] == "1"
        assert res.json["error"] == {
            "type": "Service unavailable",
            "message": "1 claims wait in this process already; claim again shortly, or "
            "without wait.",
        }
        # A claim that doesn't wait still goes through; the job it leaves ends the wait.
        assert _claim(app, login="admin").json == []
        job = _submit(app)
        assert [j["uuid"] for j in waiting.result(timeout=20)] == [job["uuid"]]
    # Its slot is free again.
    assert _claim(app, login="admin", wait=0.1).json == []


def test_a_job_submitted_through_the_same_process_wakes_a_waiting_claim(backend, make_app):
    """Its looks for other processes' jobs are a minute apart here: a claim that waits
    30 s and answers within 10 s of the submit was woken by it."""
    reset_database(backend.engine)
    app = make_app(**{"nick_jobs.claim_poll_interval": "60"})
    app.put_json("/@job-actions/reindex", REINDEX, headers=app.auth(), status=201)

    def woken_by(make_jobs: Callable[[], list[str]]) -> None:
        with claim_looks(app) as looked, ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(lambda: _claim(app, login="admin", wait=30, limit=5).json)
            # Its first look, in the view, found nothing; the next is a minute away, and
            # its last at the end of its wait.
            looked(1)
            made = make_jobs()
            got = waiting.result(timeout=10)
        assert got
        assert {job["uuid"] for job in got} <= set(made)

    woken_by(lambda: [_submit(app)["uuid"]])
    bulk = [{"params": {"action": "reindex", "site": site}} for site in ("a", "b")]
    woken_by(
        lambda: [
            job["uuid"]
            for job in app.post_json("/@jobs", bulk, headers=app.auth(), status=201).json
        ]
    )
    # A job another consumer hands back.
    job = _submit(app)
    lease = _claim(app, login="admin").json[0]["lease"]["id"]

    def hand_back() -> list[str]:
        _post(app, job["uuid"], "release", {"lease": lease}, login="admin")
        return [job["uuid"]]

    woken_by(hand_back)


def test_a_claim_waits_no_longer_than_the_server_allows(backend, make_app):
    reset_database(backend.engine)
    app = make_app(**{"nick_jobs.claim_max_wait": "0.2"})
    app.put_json("/@job-actions/reindex", REINDEX, headers=app.auth(), status=201)
    started = time.monotonic()
    assert _claim(app, login="admin", wait=30).json == []
    assert time.monotonic() - started < 10


def test_a_waiting_claim_holds_no_admission_slot(backend, make_app):
    """With one request admitted at a time, a claim waiting for a job leaves the
    process free for the submit that brings it."""
    reset_database(backend.engine)
    app = make_app(
        **{"nick_jobs.max_active_requests": "1", "nick_jobs.request_queue_timeout": "0.5"}
    )
    app.put_json("/@job-actions/reindex", REINDEX, headers=app.auth(), status=201)
    with claim_looks(app) as looked, ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(lambda: _claim(app, login="admin", wait=20).json)
        looked(2)
        # Each of these would wait for the one slot, and get a 503 after 0.5 s, if the
        # waiting claim held it.
        for _ in range(3):
            app.get("/@jobs", headers=app.auth(), status=200)
        job = _submit(app)
        got = waiting.result(timeout=20)
    assert [claimed["uuid"] for claimed in got] == [job["uuid"]]


def test_checkin_renews_the_lease_and_records_progress_log_and_data(app):
    job = _submit(app)
    lease = _claim(app).json[0]["lease"]
    time.sleep(0.01)
    res = _post(
        app,
        job["uuid"],
        "checkin",
        {
            "lease": lease["id"],
            "progress": {"percent": 40, "message": "batch 2 of 5"},
            "log": [{"level": "info", "message": "batch 2 indexed"}, {"message": "plain"}],
            "data": {"batch": 2},
        },
        status=200,
    ).json
    assert res["abort"] is False
    assert res["stop"] is False
    assert res["lease"]["id"] == lease["id"]
    assert res["lease"]["expires"] > lease["expires"]
    assert _job(app, job["uuid"])["progress"] == {"percent": 40, "message": "batch 2 of 5"}
    log = app.get(f"/@jobs/{job['uuid']}/log", headers=app.auth()).json
    assert [(line["level"], line["message"]) for line in log] == [
        ("info", "batch 2 indexed"),
        ("info", "plain"),
    ]
    # The job's JSON shows it, on its own and in a page of jobs.
    assert _job(app, job["uuid"])["checkin_data"] == {"batch": 2}
    page = app.get("/@jobs", headers=app.auth()).json
    assert [j.get("checkin_data") for j in page] == [{"batch": 2}]


def test_checkin_tells_the_consumer_of_a_stop_or_an_abort(app):
    job = _submit(app)
    lease = _claim(app).json[0]["lease"]["id"]
    app.post(f"/@jobs/{job['uuid']}/stop", headers=app.auth(), status=409)  # not resumable
    app.post(f"/@jobs/{job['uuid']}/abort", headers=app.auth(), status=204)
    res = _post(app, job["uuid"], "checkin", {"lease": lease}, status=200).json
    assert res == {"lease": None, "abort": True, "stop": False}
    res = _post(app, job["uuid"], "complete", {"lease": lease, "result": {"indexed": 1}}, 409)
    assert res.json["error"]["type"] == "Lease refused"
    assert res.json["error"]["status"] == "aborted"


def test_complete_checks_the_result_against_its_schema(app):
    job = _submit(app)
    lease = _claim(app).json[0]["lease"]["id"]
    res = _post(app, job["uuid"], "complete", {"lease": lease, "result": {"n": 1}}, 400).json
    assert res["error"]["fields"] == {"result": {"indexed": ["Missing data for required field."]}}
    assert _job(app, job["uuid"])["status"] == "running"
    _post(app, job["uuid"], "complete", {"lease": lease, "result": {"indexed": 1200}})
    done = _job(app, job["uuid"])
    assert (done["status"], done["result"]) == ("completed", {"indexed": 1200})
    history = app.get(f"/@jobs/{job['uuid']}/history", headers=app.auth()).json
    assert [(event["event"], event["by"]) for event in history][-1] == ("completed", "indexer")


def test_a_wrong_lease_is_refused_with_the_jobs_status(app):
    job = _submit(app)
    _claim(app)
    for what, body in (
        ("checkin", {}),
        ("complete", {"result": {"indexed": 1}}),
        ("fail", {"error": {"message": "no"}}),
        ("release", {}),
    ):
        res = _post(app, job["uuid"], what, {"lease": "not-the-lease", **body}, 409).json
        assert res["error"]["status"] == "running", what
    assert _job(app, job["uuid"])["status"] == "running"


def test_fail_retries_as_the_action_says_then_fails(app):
    app.put_json(
        "/@job-actions/reindex",
        {**REINDEX, "max_retries": 1, "min_backoff": 0, "max_backoff": 0},
        headers=app.auth(),
    )
    job = _submit(app)
    lease = _claim(app).json[0]["lease"]["id"]
    _post(app, job["uuid"], "fail", {"lease": lease, "error": {"type": "Io", "message": "disk"}})
    again = _job(app, job["uuid"])
    assert (again["status"], again["attempt"]) == ("created", 2)
    second = _claim(app).json
    assert [(j["uuid"], j["attempt"]) for j in second] == [(job["uuid"], 2)]
    lease = second[0]["lease"]["id"]
    _post(app, job["uuid"], "fail", {"lease": lease, "error": {"message": "disk again"}})
    failed = _job(app, job["uuid"])
    assert failed["status"] == "failed"
    assert failed["error"] == {"type": "Error", "message": "disk again"}


def test_release_hands_a_job_back_as_a_new_attempt(app):
    job = _submit(app)
    lease = _claim(app).json[0]["lease"]["id"]
    _post(app, job["uuid"], "release", {"lease": lease})
    back = _job(app, job["uuid"])
    assert (back["status"], back["attempt"]) == ("created", 2)
    assert [j["attempt"] for j in _claim(app).json] == [2]


def test_a_lease_that_runs_out_is_rescued_by_the_sweeper(app):
    job = _submit(app)
    claimed = _claim(app).json[0]
    sweeper = Sweeper(app.app.registry)
    # Within the lease (30 s), though past the worker's heartbeat lease: still running.
    assert sweeper.run_once(now=utcnow() + dt.timedelta(seconds=20)).rescued == 0
    assert sweeper.run_once(now=utcnow() + dt.timedelta(seconds=31)).failed == 1
    lost = _job(app, job["uuid"])
    assert lost["status"] == "failed"
    assert lost["error"] == {
        "type": "WorkerLost",
        "message": "The consumer holding this job did not check in before its lease ran out.",
    }
    body = {"lease": claimed["lease"]["id"], "result": {"indexed": 1}}
    _post(app, job["uuid"], "complete", body, 409)


def test_a_resumable_action_stops_with_a_checkpoint_and_resumes_from_it(app):
    app.put_json(
        "/@job-actions/reindex", {**REINDEX, "resumable": True}, headers=app.auth(), status=200
    )
    job = _submit(app)
    lease = _claim(app).json[0]["lease"]["id"]
    app.post(f"/@jobs/{job['uuid']}/stop", headers=app.auth(), status=204)
    assert _post(app, job["uuid"], "checkin", {"lease": lease}, status=200).json["stop"] is True
    _post(app, job["uuid"], "stopped", {"lease": lease, "checkpoint": {"batch": 3}})
    assert _job(app, job["uuid"])["status"] == "stopped"
    app.post(f"/@jobs/{job['uuid']}/resume", headers=app.auth(), status=204)
    resumed = _claim(app).json[0]
    assert (resumed["attempt"], resumed["checkpoint"]) == (2, {"batch": 3})


def test_stopped_is_refused_for_an_action_that_cant_resume(app):
    job = _submit(app)
    lease = _claim(app).json[0]["lease"]["id"]
    res = _post(app, job["uuid"], "stopped", {"lease": lease, "checkpoint": 1}, 409).json
    assert res["error"]["type"] == "Not resumable"


def test_claims_keep_a_job_for_matching_consumers_during_the_window(app):
    app.put_json("/@job-actions/reindex", {**REINDEX, "claim_window": 3600}, headers=app.auth())
    job = _submit(app, claims={"region": "eu"})
    assert job["params"]["claims"] == {"region": "eu"}
    assert _claim(app).json == []
    assert _claim(app, claims={"region": "us"}).json == []
    assert [j["uuid"] for j in _claim(app, claims={"region": "eu"}).json] == [job["uuid"]]
    # Once the window has passed, any consumer of the action takes it.
    later = _submit(app, claims={"region": "eu"})
    engine = app.app.registry["nick_jobs.engine"]
    action = lifecycle.RemoteAction("reindex", lease=30, claim_window=3600)
    with transaction(engine) as conn:
        taken = lifecycle.claim(
            conn, [action], "indexer", {}, 5, now=utcnow() + dt.timedelta(seconds=3601)
        )
    assert [j["uuid"] for j in taken] == [later["uuid"]]
    bad = app.post_json(
        "/@jobs",
        {"params": {"action": "reindex", "site": "x", "claims": ["eu"]}},
        headers=app.auth(),
        status=400,
    )
    assert "claims" in bad.json["error"]["fields"]["params"]


def test_labels_choose_which_actions_a_consumer_claims(app):
    job = _submit(app)
    assert _claim(app, labels={"team": "other"}).json == []
    assert [j["uuid"] for j in _claim(app, labels={"team": "search"}).json] == [job["uuid"]]


def test_a_claim_names_remote_actions_only(app):
    res = _claim(app, actions=["reindex", "dummy", "nothing"], status=400).json
    assert res["error"]["fields"] == {
        "actions": {
            "1": ["'dummy' is a Python action, run by the service's workers: claim remote "
                  "actions only."],
            "2": ["'nothing' is no action: claim remote actions only."],
        }
    }  # fmt: skip


def test_only_workers_and_administrators_run_jobs(app):
    job = _submit(app)
    _claim(app, login="alice", status=403)
    # alice's own job: still not hers to report on.
    lease = _claim(app, login="admin").json[0]["lease"]["id"]
    _post(app, job["uuid"], "checkin", {"lease": lease}, status=403, login="alice")
    _post(app, job["uuid"], "checkin", {"lease": lease}, status=200, login="indexer")
    app.post_json("/@jobs/@claim", {"actions": ["reindex"]}, status=401)


def test_concurrent_claims_take_each_job_once(app):
    """Eight consumers drain 200 jobs at once: every job claimed exactly once."""
    bodies = [{"params": {"action": "reindex", "site": str(n)}} for n in range(200)]
    submitted = app.post_json("/@jobs", bodies, headers=app.auth(), status=201).json
    engine = app.app.registry["nick_jobs.engine"]
    action = lifecycle.RemoteAction("reindex", lease=30, claim_window=0)
    taken: list[str] = []
    lock = threading.Lock()

    def consumer(n: int) -> None:
        while True:
            with transaction(engine) as conn:
                jobs = lifecycle.claim(conn, [action], f"consumer-{n}", {}, 7)
            if not jobs:
                return
            with lock:
                taken.extend(job["uuid"] for job in jobs)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(consumer, range(8)))
    assert sorted(taken) == sorted(job["uuid"] for job in submitted)
