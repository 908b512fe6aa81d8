"""Claims of many jobs in one statement (PostgreSQL) and the batch complete,
``POST /@jobs/@complete``, on every backend."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from nick_jobs.db import get_engine
from nick_jobs.db.after_commit import savepoint, transaction
from nick_jobs.db.meta import utcnow
from nick_jobs.jobs import lifecycle
from nick_jobs.ops.logging import STATE_LOGGER
from tests.conftest import reset_database
from tests.jobs.test_consumers import with_remote_action

REINDEX = {
    "title": "Reindex a site",
    "permission": "Add Jobs",
    "result": {
        "type": "object",
        "properties": {"indexed": {"type": "integer"}},
        "required": ["indexed"],
    },
    "lease": 30,
}
ACTION = lifecycle.RemoteAction("reindex", lease=30, claim_window=0)
# A statement that reads or writes the jobs table (not job_logs, not remote_actions).
JOBS_TABLE = re.compile(r"\bjobs\b")


@pytest.fixture
def app(app_without_worker):
    """An app with the remote action ``reindex`` and a consumer's user, ``indexer``."""
    return with_remote_action(app_without_worker, REINDEX)


def _postgresql(app) -> bool:
    return app.backend.engine.dialect.name == "postgresql"


def _submit_many(app, n: int) -> list[dict]:
    bodies = [{"params": {"action": "reindex", "site": str(i)}} for i in range(n)]
    return app.post_json("/@jobs", bodies, headers=app.auth("alice"), status=201).json


def _claim(app, login: str = "indexer", status: int = 200, **body):
    body.setdefault("actions", ["reindex"])
    return app.post_json("/@jobs/@claim", body, headers=app.auth(login), status=status)


def _complete(app, items: Any, status: int = 200, login: str = "indexer"):
    return app.post_json("/@jobs/@complete", items, headers=app.auth(login), status=status)


def _job(app, uuid: str) -> dict:
    return app.get(f"/@jobs/{uuid}", headers=app.auth()).json


@contextlib.contextmanager
def statements(app) -> Iterator[list[str]]:
    """The statements the app's engines run on the jobs table meanwhile."""
    seen: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany) -> None:
        if JOBS_TABLE.search(statement):
            seen.append(statement)

    registry = app.app.registry
    engines = {id(e): e for e in (registry["nick_jobs.engine"], registry["nick_jobs.read_engine"])}
    for engine in engines.values():
        sa.event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        for engine in engines.values():
            sa.event.remove(engine, "before_cursor_execute", before)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- the claim -----------------------------------------------------------------------


def test_a_claim_of_50_is_one_statement_on_postgresql(app):
    submitted = _submit_many(app, 60)
    lags = _sample("nick_jobs_job_queue_lag_seconds_count", action="reindex")
    with statements(app) as seen:
        claimed = _claim(app, limit=50).json
    if _postgresql(app):
        assert len(seen) == 1, seen
        assert seen[0].lstrip().startswith("WITH")
        assert "FOR UPDATE SKIP LOCKED" in seen[0]
    else:
        # SQLite: the candidates read, then one conditional UPDATE a job.
        assert len(seen) == 51, seen
    # The oldest first, each with a lease of its own: 32 hex digits, 122 random bits.
    assert [job["uuid"] for job in claimed] == [job["uuid"] for job in submitted[:50]]
    leases = [job["lease"]["id"] for job in claimed]
    assert all(re.fullmatch("[0-9a-f]{32}", lease) for lease in leases)
    assert len(set(leases)) == 50
    assert {job["status"] for job in claimed} == {"running"}
    # Each start is counted (its queue lag) once the claim has committed.
    assert _sample("nick_jobs_job_queue_lag_seconds_count", action="reindex") == lags + 50
    history = app.get(f"/@jobs/{claimed[0]['uuid']}/history", headers=app.auth()).json
    assert [(e["event"], e["by"]) for e in history] == [
        ("created", "alice"),
        ("started", "indexer"),
    ]
    assert [job["uuid"] for job in _claim(app, limit=50).json] == [
        job["uuid"] for job in submitted[50:]
    ]


FINISHED_ROWS = """
INSERT INTO jobs (uuid, title, description, action, params, actor, status, created, started,
                  finished, result, attempt, action_version)
SELECT gen_random_uuid()::text, 'Reindex', '', 'reindex', '{"action": "reindex"}'::jsonb,
       'alice', :status, now() - interval '1 day' + g * interval '1 ms', :started, :finished,
       '{}'::jsonb, 1, 1
FROM generate_series(1, :n) AS g
"""


def test_a_claim_reads_only_the_oldest_waiting_jobs_however_many_wait(pg_url):
    """20,000 finished remote jobs whose statistics PostgreSQL has, then 2,000 waiting ones
    it has none of yet (a burst, as autovacuum would see it): the claim's plan reads the
    waiting jobs of its action in order from their index, with no sort, and updates the
    50 it took by their primary key."""
    engine = get_engine(pg_url)
    reset_database(engine)
    try:
        now = utcnow()
        with engine.begin() as conn:
            finished = {"status": "completed", "started": now, "finished": now, "n": 20_000}
            conn.execute(sa.text(FINISHED_ROWS), finished)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("ANALYZE jobs"))
        with engine.begin() as conn:
            waiting = {"status": "created", "started": None, "finished": None, "n": 2_000}
            conn.execute(sa.text(FINISHED_ROWS), waiting)
            oldest = (
                conn.execute(
                    sa.text("SELECT uuid FROM jobs WHERE status = 'created' ORDER BY id LIMIT 50")
                )
                .scalars()
                .all()
            )
        seen: list[tuple[str, Any]] = []

        def before(conn, cursor, statement, parameters, context, executemany) -> None:
            seen.append((statement, parameters))

        sa.event.listen(engine, "before_cursor_execute", before)
        try:
            with transaction(engine) as conn:
                claimed = lifecycle.claim(conn, [ACTION], "indexer", {}, 50)
        finally:
            sa.event.remove(engine, "before_cursor_execute", before)
        assert [job["uuid"] for job in claimed] == oldest
        ((statement, parameters),) = seen
        with engine.connect() as conn:
            plan = "\n".join(conn.exec_driver_sql("EXPLAIN " + statement, parameters).scalars())
        assert "Index Scan using ix_jobs_claimable" in plan, plan
        assert "Sort" not in plan, plan
        assert re.search(
            r"Index Scan using pk_jobs on jobs\s.*\n\s*Index Cond: \(id = ANY", plan
        ), plan
    finally:
        reset_database(engine)
        engine.dispose()


def test_a_claimed_row_is_what_the_claim_wrote(app):
    job = _submit_many(app, 1)[0]
    engine = app.app.registry["nick_jobs.engine"]
    now = utcnow()
    action = lifecycle.RemoteAction("reindex", lease=45, claim_window=0)
    with transaction(engine) as conn:
        (claimed,) = lifecycle.claim(conn, [action], "indexer", {}, 5, now=now)
    assert claimed["uuid"] == job["uuid"]
    assert (claimed["status"], claimed["worker"]) == ("running", "indexer")
    assert claimed["started"] == claimed["heartbeat"] == now
    assert claimed["lease_expires"] == now + dt.timedelta(seconds=45)
    assert claimed["next_run"] is None
    assert claimed["checkin_data"] is None
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(lifecycle.jobs).where(lifecycle.jobs.c.uuid == job["uuid"])
        ).one()
    assert {k: v for k, v in row._mapping.items() if k != "changed"} == {
        k: v for k, v in claimed.items() if k != "changed"
    }


def test_each_action_gets_its_own_lease_and_window(app):
    export_action = {"permission": "Add Jobs", "lease": 600, "claim_window": 3600}
    app.put_json("/@job-actions/export", export_action, headers=app.auth())
    engine = app.app.registry["nick_jobs.engine"]
    reindex = app.submit({"action": "reindex", "site": "a", "claims": {"dc": "x"}}, login="alice")
    export = app.submit({"action": "export", "claims": {"dc": "x"}}, login="alice")
    plain = app.submit({"action": "export"}, login="alice")
    actions = [
        lifecycle.RemoteAction("reindex", lease=30, claim_window=0),
        lifecycle.RemoteAction("export", lease=600, claim_window=3600),
    ]
    now = utcnow()
    with transaction(engine) as conn:
        claimed = lifecycle.claim(conn, actions, "indexer", {}, 10, now=now)
    # The export with claims is still in its window; the reindex one's window is 0.
    assert [job["uuid"] for job in claimed] == [reindex["uuid"], plain["uuid"]]
    assert [job["lease_expires"] - now for job in claimed] == [
        dt.timedelta(seconds=30),
        dt.timedelta(seconds=600),
    ]
    with transaction(engine) as conn:
        later = lifecycle.claim(conn, actions, "indexer", {}, 10, now=now + dt.timedelta(hours=2))
    assert [job["uuid"] for job in later] == [export["uuid"]]


# Claims a job may carry, as the params' "claims" (MISSING: none at all). The API only
# stores objects of strings; a job made otherwise may have anything.
MISSING = object()
CLAIMS: list[Any] = [
    MISSING,
    None,
    {},
    [],
    "",
    0,
    0.0,
    False,
    {"region": "eu"},
    {"region": "eu", "tier": "gold"},
    {"region": "us"},
    {"region": 1},
    {"region": None},
    {"region": ["eu"]},
    {"region": {"eu": "yes"}},
    ["eu"],
    "eu",
    1,
    True,
]
OFFERS = [{}, {"region": "eu"}, {"region": "eu", "tier": "gold"}, {"region": "1"}]


def _make(conn: sa.Connection, claims: Any, params: Any = None) -> str:
    if params is None:
        params = {"action": "reindex"}
        if claims is not MISSING:
            params["claims"] = claims
    job = lifecycle.create(
        conn,
        action="reindex",
        params=params,
        actor="alice",
        title="t",
        description="",
        action_version=1,
    )
    return job["uuid"]


@pytest.mark.parametrize("offer", OFFERS, ids=lambda offer: ",".join(offer) or "none")
def test_claims_and_windows_decide_as_the_python_rule(app, offer):
    """Every shape of claims, offered against, within and after the window: the claim
    takes exactly the jobs :func:`lifecycle._claims_allow` lets the consumer have."""
    engine = app.app.registry["nick_jobs.engine"]
    window = lifecycle.RemoteAction("reindex", lease=30, claim_window=60)
    with transaction(engine) as conn:
        made = {_make(conn, claims): claims for claims in CLAIMS}
        # Params that are no object have no claims.
        made[_make(conn, None, params=["reindex"])] = MISSING
    with engine.connect() as conn:
        created = dict(
            conn.execute(
                sa.select(lifecycle.jobs.c.uuid, lifecycle.jobs.c.created).where(
                    lifecycle.jobs.c.uuid.in_(list(made))
                )
            ).all()
        )
    newest = max(created.values())
    # Within the window of the newest job; then just before, and at, the end of its window.
    for now, expected_window_over in (
        (newest + dt.timedelta(seconds=1), False),
        (newest + dt.timedelta(seconds=60, microseconds=-1), False),
        (newest + dt.timedelta(seconds=60), True),
    ):
        expected = {
            uuid
            for uuid, claims in made.items()
            if lifecycle._claims_allow(
                {} if claims is MISSING else {"claims": claims},
                created[uuid],
                window.claim_window,
                offer,
                now,
            )
        }
        with transaction(engine) as conn:
            taken = _claimed_then_undone(conn, window, offer, now)
        assert {job["uuid"] for job in taken} == expected, (offer, now)
        ids = [job["id"] for job in taken]
        assert ids == sorted(ids)
        if expected_window_over:
            assert expected == set(made)

    # What the rule says, spelt out for the shapes the API lets a submit store.
    def allowed(claims: Any) -> bool:
        return lifecycle._claims_allow(
            {"claims": claims}, newest, 60, offer, newest + dt.timedelta(seconds=1)
        )

    assert all(allowed(none) for none in ({}, None, [], 0, ""))
    assert allowed({"region": "eu"}) == (offer.get("region") == "eu")
    assert allowed({"region": "eu", "tier": "gold"}) == (offer.get("tier") == "gold")
    assert not allowed({"region": "us"})
    # Claims of no other shape are offered by anyone: held for the window.
    assert not any(allowed(other) for other in (["eu"], "eu", True, {"region": None}))
    assert not allowed({"region": 1})


class _Undo(Exception):
    pass


def _claimed_then_undone(
    conn: sa.Connection, action: lifecycle.RemoteAction, offer: dict, now: dt.datetime
) -> list[dict]:
    """What a claim takes, rolled back (with its effects), so that the next claim finds
    every job waiting again."""
    taken: list[dict] = []
    with contextlib.suppress(_Undo), savepoint(conn):
        taken = lifecycle.claim(conn, [action], "indexer", offer, 100, now=now)
        raise _Undo
    return taken


def test_concurrent_claims_of_50_take_each_job_once(app):
    submitted = _submit_many(app, 600)
    engine = app.app.registry["nick_jobs.engine"]
    taken: list[str] = []
    leases: list[str] = []
    lock = threading.Lock()

    def consumer(n: int) -> int:
        claims = 0
        while True:
            with transaction(engine) as conn:
                jobs = lifecycle.claim(conn, [ACTION], f"consumer-{n}", {}, 50)
            if not jobs:
                return claims
            claims += 1
            assert [job["id"] for job in jobs] == sorted(job["id"] for job in jobs)
            with lock:
                taken.extend(job["uuid"] for job in jobs)
                leases.extend(job["lease_id"] for job in jobs)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(consumer, range(8)))
    assert sorted(taken) == sorted(job["uuid"] for job in submitted)
    assert len(set(leases)) == 600


# --- the batch complete ----------------------------------------------------------------


def _items(claimed: list[dict], result: dict | None = None) -> list[dict]:
    return [
        {"uuid": job["uuid"], "lease": job["lease"]["id"], "result": result or {"indexed": 1}}
        for job in claimed
    ]


def test_a_batch_completes_its_jobs_in_two_statements_on_postgresql(app):
    _submit_many(app, 50)
    claimed = _claim(app, limit=50).json
    with statements(app) as seen:
        answer = _complete(app, _items(claimed)).json
    assert answer == [{"uuid": job["uuid"], "completed": True} for job in claimed]
    if _postgresql(app):
        # The leases, read FOR UPDATE; the jobs finished (with their lines) by one UPDATE.
        assert len(seen) == 2, seen
        assert "FOR UPDATE" in seen[0]
    else:
        assert len(seen) == 51, seen
    page = app.get("/@jobs", params={"status": "completed"}, headers=app.auth()).json
    assert {job["uuid"] for job in page} == {job["uuid"] for job in claimed}
    assert {str(job["result"]) for job in page} == {"{'indexed': 1}"}


def test_a_batch_locks_the_running_jobs_it_names_and_reads_the_others(app):
    """A finished job a stale item names is read, not locked (a prune may be deleting
    it), and still refused with its status; a running one is locked until the batch's
    transaction ends (on PostgreSQL: SQLite locks the whole database)."""
    _submit_many(app, 2)
    finished, running = _claim(app, limit=2).json
    assert _complete(app, _items([finished])).json[0]["completed"] is True
    engine = app.app.registry["nick_jobs.engine"]
    named = [(job["uuid"], job["lease"]["id"]) for job in (finished, running)]
    with transaction(engine) as conn:
        found = lifecycle.leased_many(conn, named)
        refused = found[finished["uuid"]]
        assert isinstance(refused, lifecycle.LeaseRefused)
        assert refused.status == "completed"
        assert isinstance(found[running["uuid"]], lifecycle.StartedJob)
        if _postgresql(app):
            with engine.connect() as other:
                other.execute(sa.text("SET lock_timeout = '300ms'"))
                jobs = lifecycle.jobs
                rename = jobs.update().values(title="renamed")
                other.execute(rename.where(jobs.c.uuid == finished["uuid"]))  # no wait
                other.rollback()
                other.execute(sa.text("SET lock_timeout = '300ms'"))
                with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
                    other.execute(rename.where(jobs.c.uuid == running["uuid"]))
                other.rollback()


def test_a_batch_answers_each_job_in_order_and_completes_the_good_ones(app):
    jobs = _submit_many(app, 6)
    claimed = _claim(app, limit=6).json
    good, wrong, aborted, deleted, unfit, also_good = claimed
    app.post(f"/@jobs/{aborted['uuid']}/abort", headers=app.auth(), status=204)
    app.post(f"/@jobs/{deleted['uuid']}/abort", headers=app.auth(), status=204)
    app.delete(f"/@jobs/{deleted['uuid']}", headers=app.auth(), status=204)
    items = _items(claimed)
    items[1]["lease"] = "not-the-lease"
    items[4]["result"] = {"indexed": "many"}
    answer = _complete(app, items).json
    running = (
        "This lease does not hold the job: it is wrong, or it ran out and another claim "
        "holds the job now."
    )
    assert answer == [
        {"uuid": good["uuid"], "completed": True},
        {
            "uuid": wrong["uuid"],
            "error": {"type": "Lease refused", "message": running, "status": "running"},
        },
        {
            "uuid": aborted["uuid"],
            "error": {
                "type": "Lease refused",
                "message": "The job is aborted now: this lease no longer holds it.",
                "status": "aborted",
            },
        },
        {
            "uuid": deleted["uuid"],
            "error": {
                "type": "Lease refused",
                "message": "The job no longer exists: this lease no longer holds it.",
                "status": None,
            },
        },
        {
            "uuid": unfit["uuid"],
            "error": {
                "type": "Validation error",
                "message": "The request has invalid fields.",
                "fields": {"result": {"indexed": ["'many' is not of type 'integer'"]}},
            },
        },
        {"uuid": also_good["uuid"], "completed": True},
    ]
    statuses = {
        job["uuid"]: _job(app, job["uuid"])["status"]
        for job in jobs
        if job["uuid"] != deleted["uuid"]
    }
    assert statuses == {
        good["uuid"]: "completed",
        wrong["uuid"]: "running",
        aborted["uuid"]: "aborted",
        unfit["uuid"]: "running",
        also_good["uuid"]: "completed",
    }
    # The single complete refuses the same wrong lease with the same words.
    single = app.post_json(
        f"/@jobs/{wrong['uuid']}/complete",
        {"lease": "not-the-lease", "result": {"indexed": 1}},
        headers=app.auth("indexer"),
        status=409,
    ).json
    assert single["error"] == answer[1]["error"]
    # What the batch refused, the consumer sends again once it fits.
    again = _complete(app, [{**items[4], "result": {"indexed": 5}}]).json
    assert again == [{"uuid": unfit["uuid"], "completed": True}]
    # A job already completed: its lease no longer holds it.
    done = _complete(app, [items[0]]).json
    assert done[0]["error"]["status"] == "completed"


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def state_lines() -> Iterator[list[str]]:
    handler = _Lines()
    logger = logging.getLogger(STATE_LOGGER)
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _finished_metrics() -> tuple[float, float, float]:
    return (
        _sample("nick_jobs_jobs_finished_total", action="reindex", status="completed"),
        _sample("nick_jobs_job_duration_seconds_count", action="reindex"),
        _sample("nick_jobs_job_duration_seconds_sum", action="reindex"),
    )


@pytest.mark.parametrize("progress", [lifecycle.UNCHANGED, None, {"percent": 100}])
def test_complete_many_finishes_a_job_exactly_as_complete_does(app, monkeypatch, progress):
    """Two jobs of one claim: one finished by complete, the other by complete_many, at
    the same moment with the same result, progress and lines. Their rows, log lines,
    history, state-change lines and counters are the same but for the uuid."""
    first, second = _submit_many(app, 2)
    engine = app.app.registry["nick_jobs.engine"]
    claimed_at = utcnow()
    finished_at = claimed_at + dt.timedelta(seconds=2.5)
    with transaction(engine) as conn:
        lifecycle.claim(conn, [ACTION], "indexer", {}, 2, now=claimed_at)
        # Some progress from a check-in, for the finishing to keep or replace.
        for job in (first, second):
            running = lifecycle.leased(conn, job["uuid"], _lease(conn, job["uuid"]))
            lifecycle.checkin(conn, running, 30, progress={"percent": 40}, now=claimed_at)
    monkeypatch.setattr(lifecycle, "utcnow", lambda: finished_at)
    result = {"indexed": 12}

    def lines(uuid: str) -> list[dict]:
        return [
            {"job_uuid": uuid, "attempt": 1, "time": finished_at, "level": level, "message": m}
            for level, m in ((20, "batch 5 of 5"), (30, "3 pages skipped"))
        ]

    effects = []
    for job, finish in (
        (first, "one"),
        (second, "many"),
    ):
        with state_lines() as logged:
            before = _finished_metrics()
            with transaction(engine) as conn:
                found = lifecycle.leased(conn, job["uuid"], _lease(conn, job["uuid"]))
                if finish == "one":
                    assert lifecycle.complete(conn, found, result, progress, lines(job["uuid"]))
                else:
                    item = lifecycle.Completion(found, result, progress, lines(job["uuid"]))
                    assert lifecycle.complete_many(conn, [item]) == {job["uuid"]}
                # Nothing is logged or counted before the commit.
                assert logged == []
                assert _finished_metrics() == before
            after = _finished_metrics()
        effects.append(
            (
                [line.replace(job["uuid"], "UUID") for line in logged],
                tuple(a - b for a, b in zip(after, before, strict=True)),
            )
        )
    assert effects[0][0] == effects[1][0]
    assert effects[0][1] == pytest.approx(effects[1][1])
    assert effects[0][0] == ["job UUID action=reindex actor=alice status=completed duration=2.500s"]
    assert effects[0][1] == pytest.approx((1.0, 1.0, 2.5))
    rows = {}
    with engine.connect() as conn:
        for job in (first, second):
            row = conn.execute(
                sa.select(lifecycle.jobs).where(lifecycle.jobs.c.uuid == job["uuid"])
            ).one()
            rows[job["uuid"]] = {
                key: value
                for key, value in row._mapping.items()
                if key not in ("id", "uuid", "params", "lease_id", "changed", "created")
            }
            rows[job["uuid"]]["progress_is_sql_null"] = conn.execute(
                sa.select(lifecycle.jobs.c.progress.is_(sa.null())).where(
                    lifecycle.jobs.c.uuid == job["uuid"]
                )
            ).scalar_one()
    one, many = rows[first["uuid"]], rows[second["uuid"]]
    assert one == many
    assert (one["status"], one["result"], one["finished"]) == ("completed", result, finished_at)
    assert one["progress"] == ({"percent": 40} if progress is lifecycle.UNCHANGED else progress)
    for what in ("history", "log"):
        first_out, second_out = (
            app.get(f"/@jobs/{job['uuid']}/{what}", headers=app.auth()).json
            for job in (first, second)
        )
        strip = [{k: v for k, v in e.items() if k not in ("id", "job")} for e in first_out]
        assert strip == [{k: v for k, v in e.items() if k not in ("id", "job")} for e in second_out]
        assert strip, what
    log = app.get(f"/@jobs/{second['uuid']}/log", headers=app.auth()).json
    assert [line["message"] for line in log] == ["batch 5 of 5", "3 pages skipped"]
    one_json, many_json = _job(app, first["uuid"]), _job(app, second["uuid"])
    for out in (one_json, many_json):
        for key in ("@id", "uuid", "params", "created"):
            out.pop(key)
    assert one_json == many_json


def _lease(conn: sa.Connection, uuid: str) -> str:
    return conn.execute(
        sa.select(lifecycle.jobs.c.lease_id).where(lifecycle.jobs.c.uuid == uuid)
    ).scalar_one()


def test_a_job_completed_by_the_batch_reads_as_one_completed_alone(app):
    first, second = _submit_many(app, 2)
    one, many = _claim(app, limit=2).json
    app.post_json(
        f"/@jobs/{one['uuid']}/complete",
        {"lease": one["lease"]["id"], "result": {"indexed": 3}},
        headers=app.auth("indexer"),
        status=204,
    )
    _complete(app, _items([many], {"indexed": 3}))
    alone, batched = _job(app, first["uuid"]), _job(app, second["uuid"])
    for out in (alone, batched):
        for key in ("@id", "uuid", "params", "created", "finished"):
            out.pop(key)
    assert alone == batched
    assert alone["status"] == "completed"
    histories = [
        [
            (e["event"], e["by"], e["attempt"])
            for e in app.get(f"/@jobs/{job['uuid']}/history", headers=app.auth()).json
        ]
        for job in (first, second)
    ]
    assert (
        histories[0]
        == histories[1]
        == [
            ("created", "alice", 1),
            ("started", "indexer", 1),
            ("completed", "indexer", 1),
        ]
    )


TAKES = "A batch complete takes 1 to 100 jobs"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ([], {"_schema": [f"{TAKES}; this one has 0."]}),
        ("101", {"_schema": [f"{TAKES}; this one has 101."]}),
        ("missing lease", {"0": {"lease": ["Missing data for required field."]}}),
        ("unknown field", {"1": {"colour": ["Unknown field."]}}),
        ("bad uuid", {"0": {"uuid": ["Not a valid UUID."]}}),
        ("twice", {"1": {"uuid": ["The job of item 0 again."]}}),
        ("not an object", {"0": {"_schema": ["Invalid input type."]}}),
        ("result not an object", {"0": {"result": ["Not a valid mapping type."]}}),
    ],
)  # fmt: skip
def test_an_invalid_body_is_a_400_by_index_and_completes_nothing(app, body, fields):
    _submit_many(app, 2)
    claimed = _claim(app, limit=2).json
    items = _items(claimed)
    bodies: dict[str, Any] = {
        "101": items[:1] * 101,
        "missing lease": [{"uuid": claimed[0]["uuid"]}, items[1]],
        "unknown field": [items[0], {**items[1], "colour": "red"}],
        "bad uuid": [{**items[0], "uuid": "news"}, items[1]],
        "twice": [items[0], {**items[0], "lease": "another"}],
        "not an object": ["news", items[1]],
        "result not an object": [{**items[0], "result": [1]}, items[1]],
    }
    sent = bodies.get(body, body) if isinstance(body, str) else body
    res = _complete(app, sent, status=400).json
    assert res["error"]["type"] == "Validation error"
    assert res["error"]["fields"] == fields
    assert [_job(app, job["uuid"])["status"] for job in claimed] == ["running", "running"]


def test_a_body_that_is_no_array_is_refused(app):
    _submit_many(app, 1)
    (job,) = _claim(app).json
    item = _items([job])[0]
    res = _complete(app, item, status=400).json
    assert res["error"] == {"type": "Invalid JSON", "message": "The body must be a JSON array."}
    assert _job(app, job["uuid"])["status"] == "running"


def test_the_batch_complete_needs_run_jobs(app):
    _submit_many(app, 1)
    claimed = _claim(app, login="admin").json
    _complete(app, _items(claimed), status=403, login="alice")
    app.post_json("/@jobs/@complete", _items(claimed), status=401)
    assert _job(app, claimed[0]["uuid"])["status"] == "running"
    assert _complete(app, _items(claimed), login="admin").json[0]["completed"] is True


def test_a_claim_never_starts_a_job_before_its_creation(app):
    """A look whose clock was read just before a submit committed may still take the job:
    its start is then the job's creation, never earlier, and its history lists the
    creation first."""
    (job,) = _submit_many(app, 1)
    created = dt.datetime.fromisoformat(job["created"].replace("Z", "+00:00"))
    engine = app.app.registry["nick_jobs.engine"]
    with transaction(engine) as conn:
        early = created - dt.timedelta(seconds=1)
        (claimed,) = lifecycle.claim(conn, [ACTION], "indexer", {}, 1, now=early)
    assert claimed["started"] == created
    stored = _job(app, job["uuid"])
    assert (stored["status"], stored["started"]) == ("running", job["created"])
    history = app.get(f"/@jobs/{job['uuid']}/history", headers=app.auth()).json
    assert [event["event"] for event in history] == ["created", "started"]
