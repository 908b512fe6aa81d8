"""Chaos: hundreds of jobs, two real worker supervisors, random ``kill -9``, a broker outage.

At the end every job is in a terminal state, none is missing, and none was completed
twice. The figures are printed (``pytest -s``) and quoted in docs/reliability.md.
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import secrets
import signal
import time
from urllib.parse import urlsplit, urlunsplit

import pytest
import sqlalchemy as sa

from nick_jobs import main, transitions
from nick_jobs.models import get_engine

from .chaos_actions import CREATE_TABLE, MAX_RETRIES, TABLE
from .conftest import (
    REDIS_URL,
    Client,
    base_settings,
    need,
    reset_database,
    start_worker,
    stop_process,
    write_ini,
)
from .netutil import Proxy
from .test_cli import alive, children_of

jobs, history = transitions.jobs, transitions.history

JOBS_BEFORE = 300  # submitted before the outage
JOBS_DURING = 100  # submitted while the broker is down
KILLS = 8
OUTAGE_S = 2.0
DEADLINE_S = 50.0
TERMINAL = ("completed", "failed", "aborted")


@pytest.fixture
def chaos(pg_url, tmp_path):
    need("Redis", "127.0.0.1", 6379)
    import redis

    tag = secrets.token_hex(4)
    target = urlsplit(REDIS_URL)
    proxy = Proxy(target.port or 6379, target.hostname or "127.0.0.1").up()
    settings = base_settings(
        **{
            "sqlalchemy.url": pg_url,
            # Workers and the API reach Redis through the proxy, which the test cuts.
            "nick_jobs.broker_url": urlunsplit(target._replace(netloc=proxy.address)),
            "nick_jobs.broker_namespace": f"nick-jobs-chaos-{tag}",
            "nick_jobs.queue": f"nick_jobs_chaos_{tag}",
            "nick_jobs.includes": "tests.actions_for_tests tests.chaos_actions",
            "nick_jobs.heartbeat_interval": "0.25",
            "nick_jobs.lease": "1.5",
            "nick_jobs.sweep_interval": "0.25",
            "nick_jobs.resend_grace": "3",
            "nick_jobs.worker_grace": "1",
        }
    )
    engine = get_engine(pg_url)
    reset_database(engine)
    with engine.begin() as conn:
        conn.execute(sa.text(CREATE_TABLE))
        conn.execute(sa.text(f"DELETE FROM {TABLE}"))  # noqa: S608 - a fixed name
    client = redis.Redis.from_url(REDIS_URL)
    key = f"nick-jobs-chaos-{tag}:finished"
    yield {
        "settings": settings,
        "engine": engine,
        "tmp": tmp_path,
        "key": key,
        "redis": client,
        "proxy": proxy,
    }
    proxy.down()
    for name in client.scan_iter(f"nick-jobs-chaos-{tag}*"):
        client.delete(name)
    client.close()
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {TABLE}"))
    engine.dispose()


def terminal_count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).select_from(jobs).where(jobs.c.status.in_(TERMINAL))
        ).scalar_one()


def kill_a_worker_process(rng: random.Random, supervisors) -> int | None:
    """``kill -9`` of one worker process of a random supervisor; its pid, or None."""
    for supervisor in rng.sample(supervisors, len(supervisors)):
        children = sorted(children_of(supervisor.pid))
        if children:
            pid = rng.choice(children)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                return pid
    return None


def test_chaos_every_job_ends_once(chaos):
    engine, settings, key = chaos["engine"], chaos["settings"], chaos["key"]
    seed = int(os.environ.get("NICK_JOBS_CHAOS_SEED", secrets.randbelow(10**6)))
    rng = random.Random(seed)
    ini = write_ini(chaos["tmp"] / "chaos.ini", settings)
    app = Client(main({}, **settings), extra_environ={"HTTP_HOST": "localhost:8080"})
    headers = app.auth()
    proxy = chaos["proxy"]

    def submit() -> str:
        body = {"action": "counted", "sleep": rng.uniform(0, 0.1), "redis": REDIS_URL, "key": key}
        response = app.post_json("/@jobs", {"params": body}, headers=headers, status=201)
        return response.json["@id"].rsplit("/", 1)[1]

    supervisors = [start_worker(ini, threads=4) for _ in range(2)]
    killed: list[int] = []
    seen: set[int] = set()
    try:
        started = time.monotonic()
        submitted = [submit() for _ in range(JOBS_BEFORE)]
        total = JOBS_BEFORE + JOBS_DURING
        # Kill at random points of the run (fractions of the jobs finished), and cut the
        # broker once half of the first jobs are done.
        kill_at = sorted(rng.uniform(0.02, 0.8) for _ in range(KILLS))
        outage_at, outage = JOBS_BEFORE // 2, None
        back_at = None
        deadline = started + DEADLINE_S
        done = 0
        while done < total:
            assert time.monotonic() < deadline, (
                f"{total - done} of {total} jobs not finished after {DEADLINE_S} s "
                f"(seed {seed}, kills {len(killed)})"
            )
            for supervisor in supervisors:
                seen |= children_of(supervisor.pid)
            if kill_at and done >= kill_at[0] * total:
                pid = kill_a_worker_process(rng, supervisors)
                if pid is not None:
                    killed.append(pid)
                    kill_at.pop(0)
            if outage is None and done >= outage_at:
                proxy.down()
                outage = time.monotonic()
                # The API still takes jobs: committed, sent by the sweeper later.
                submitted += [submit() for _ in range(JOBS_DURING)]
            if outage is not None and back_at is None and time.monotonic() - outage >= OUTAGE_S:
                proxy.up()
                back_at = time.monotonic()
            time.sleep(0.05)
            done = terminal_count(engine)
        drained = time.monotonic() - started
        after_outage = time.monotonic() - back_at if back_at else None
    finally:
        for supervisor in supervisors:
            stop_process(supervisor)
        for pid in seen:  # only ever the supervisors' own children
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        app.app.registry["nick_jobs.queue"].broker.close()
        app.app.registry["nick_jobs.engine"].dispose()

    with engine.connect() as conn:
        rows = conn.execute(sa.select(jobs.c.uuid, jobs.c.status, jobs.c.attempt, jobs.c.error))
        final = {r.uuid: r for r in rows}
        completions = collections.Counter(
            conn.execute(sa.text(f"SELECT job_uuid FROM {TABLE}")).scalars()  # noqa: S608
        )
        events = collections.Counter(
            conn.execute(sa.select(history.c.event).where(history.c.event != "created")).scalars()
        )
    finishes = {k.decode(): int(v) for k, v in chaos["redis"].hgetall(key).items()}

    # None missing, each terminal.
    assert sorted(final) == sorted(submitted)
    statuses = collections.Counter(r.status for r in final.values())
    assert set(statuses) <= {"completed", "failed"}, statuses
    # Failed only by losing its worker more often than the action allows retries.
    for r in final.values():
        if r.status == "failed":
            assert (r.error["type"], r.attempt) == ("WorkerLost", MAX_RETRIES + 1)
    # None completed twice: one completion per completed job, none for the others.
    completed = {u for u, r in final.items() if r.status == "completed"}
    assert set(completions) == completed
    duplicates = {u: n for u, n in completions.items() if n > 1}
    assert duplicates == {}
    # A handler that reached its end twice (killed or rescued between its end and the
    # commit) had its job run as a new attempt; it was still completed only once.
    reran = {u: n for u, n in finishes.items() if n > 1}
    assert all(final[u].attempt > 1 for u in reran)
    worker_lost = sum(1 for r in final.values() if r.status == "failed")
    rescues = events["rescued"] + worker_lost
    print(
        f"\nchaos (seed {seed}): {total} jobs, {len(killed)} kill -9, broker down "
        f"{OUTAGE_S:g} s; drained in {drained:.1f} s ({after_outage:.1f} s after the broker "
        f"came back); {dict(statuses)}; rescues {rescues} (retried {events['rescued']}, "
        f"failed {worker_lost}); handed back {events['handed back']}; attempts > 1: "
        f"{sum(1 for r in final.values() if r.attempt > 1)}; handlers finished twice "
        f"{len(reran)}; completed twice {len(duplicates)}"
    )
    assert len(killed) == KILLS
