"""Chaos: hundreds of jobs, two real worker processes, random ``kill -9``, a broker outage.

Each ``nick-jobs worker`` is one process; the test runs them as a process manager does
(``Restart=on-failure`` of deploy/systemd/nick-jobs-worker@.service): a worker that dies
is replaced by a new process. At the end every job is in a terminal state, none is
missing, and none was completed twice. The figures are printed (``pytest -s``) and
quoted in docs/reliability.md.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import json
import os
import random
import secrets
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import sqlalchemy as sa

from nick_jobs import main
from nick_jobs.db import get_engine
from nick_jobs.db.after_commit import transaction
from nick_jobs.db.meta import utcnow
from nick_jobs.jobs import lifecycle
from tests.chaos_actions import CREATE_TABLE, MAX_RETRIES, TABLE
from tests.cli.test_cli import COMMAND, clean_env
from tests.conftest import (
    RABBITMQ_URL,
    REDIS_URL,
    ROOT,
    Client,
    _purge_rabbitmq,
    base_settings,
    need,
    reset_database,
    stop_process,
    write_ini,
)
from tests.netutil import Proxy
from tests.outages import need_pg_ctl, need_rabbitmqctl, postgres_restarted, rabbitmq_restarted

# Worker processes killed and replaced, PostgreSQL and RabbitMQ restarted: run alone
# (make test runs the exclusive tests after the others).
pytestmark = pytest.mark.exclusive

jobs, history = lifecycle.jobs, lifecycle.history

JOBS_BEFORE = 300  # submitted before the outage
JOBS_DURING = 100  # submitted while the broker is down
KILLS = 8
OUTAGE_S = 2.0
DEADLINE_S = 50.0
TERMINAL = ("completed", "failed", "aborted")


@pytest.fixture
def chaos(pg_url, tmp_path):
    need("Redis", "127.0.0.1", 6379)
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
    with transaction(engine) as conn:
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
    with transaction(engine) as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {TABLE}"))
    engine.dispose()


def terminal_count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).select_from(jobs).where(jobs.c.status.in_(TERMINAL))
        ).scalar_one()


class ProcessManager:
    """``count`` ``nick-jobs worker`` processes, run as a process manager runs them: one
    that exits with a failure (``kill -9``) is replaced by a new process in its place, as
    systemd's ``Restart=on-failure`` does. Each process's output goes to a log file."""

    def __init__(self, ini: Path, count: int, threads: int = 4) -> None:
        self.ini, self.threads = ini, threads
        self.started: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.slots = [self._start() for _ in range(count)]

    def _start(self) -> subprocess.Popen:
        log = self.ini.parent / f"worker-{len(self.started)}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [*COMMAND, "worker", str(self.ini), "--threads", str(self.threads)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=clean_env(),
                cwd=ROOT,
            )
        self.started.append(proc)
        self.logs.append(log)
        return proc

    def restart_failed(self) -> list[int]:
        """Replace each process that exited with a failure; the pids of those replaced."""
        replaced = []
        for slot, proc in enumerate(self.slots):
            code = proc.poll()
            if code is not None and code != 0:
                replaced.append(proc.pid)
                self.slots[slot] = self._start()
        return replaced

    def kill_one(self, rng: random.Random) -> int | None:
        """``kill -9`` of one running worker process, at random; its pid, or None."""
        running = [proc for proc in self.slots if proc.poll() is None]
        if not running:
            return None
        proc = rng.choice(running)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return proc.pid

    def log_lines(self, words: set[str]) -> list[str]:
        """The lines of the processes' logs that hold any of ``words``, each after its
        log's name: what a failed assertion about those jobs shows."""
        return [
            f"{log.name}: {line}"
            for log in self.logs
            for line in log.read_text(errors="replace").splitlines()
            if any(word in line for word in words)
        ]

    def stop(self) -> None:
        """SIGTERM to those running, as the process manager's stop; none is left."""
        for proc in self.slots:
            with contextlib.suppress(ProcessLookupError):
                if proc.poll() is None:
                    proc.terminate()
        for proc in self.started:
            stop_process(proc)


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

    workers = ProcessManager(ini, 2, threads=4)
    killed: list[int] = []
    replaced: list[int] = []
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
            replaced += workers.restart_failed()
            if kill_at and done >= kill_at[0] * total:
                pid = workers.kill_one(rng)
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
        replaced += workers.restart_failed()
    finally:
        workers.stop()
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
    # Every process killed was replaced, as its process manager would, and no other one
    # died: a process that exits by itself is not part of the chaos.
    assert sorted(replaced) == sorted(killed)


# --- an outage of the database or of RabbitMQ in the middle of 1,000 jobs -------------

OUTAGE_JOBS = 1_000
OUTAGE_AT = 300  # jobs finished when the service goes down
BACKLOG = 150  # jobs submitted and not finished, at most
# A failure threshold for a loaded machine: a run takes 35 to 55 s (docs/reliability.md).
OUTAGE_DEADLINE_S = 120.0
ANSWER_WITHIN_S = 5.0
SCHEDULE = "chaos"


@pytest.fixture(params=["postgres-restart", "rabbitmq-restart"])
def outage_chaos(request, pg_url, tmp_path):
    fault = request.param
    tag = secrets.token_hex(4)
    need("Redis", "127.0.0.1", 6379)  # the action counts its ends there
    if fault == "postgres-restart":
        need_pg_ctl()
        broker_url = REDIS_URL
    else:
        need("RabbitMQ", "127.0.0.1", 5672)
        need_rabbitmqctl()
        broker_url = RABBITMQ_URL
    key = f"nick-jobs-chaos-{tag}:finished"
    settings = base_settings(
        **{
            "sqlalchemy.url": pg_url,
            "nick_jobs.broker_url": broker_url,
            "nick_jobs.broker_namespace": f"nick-jobs-chaos-{tag}",
            "nick_jobs.queue": f"nick_jobs_chaos_{tag}",
            "nick_jobs.includes": "tests.actions_for_tests tests.chaos_actions",
            # A lease shorter than the outage: a sweeper that took the heartbeats the
            # database could not take for lost workers would rescue (or fail) jobs.
            "nick_jobs.heartbeat_interval": "0.25",
            "nick_jobs.lease": "1.5",
            "nick_jobs.sweep_interval": "0.25",
            "nick_jobs.resend_grace": "3",
            "nick_jobs.worker_grace": "1",
            "nick_jobs.scheduler.interval": "0.5",
            "nick_jobs.schedules": SCHEDULE,
            f"nick_jobs.schedule.{SCHEDULE}.action": "counted",
            f"nick_jobs.schedule.{SCHEDULE}.schedule": "0 0 1 1 *",
            f"nick_jobs.schedule.{SCHEDULE}.params": json.dumps({"redis": REDIS_URL, "key": key}),
        }
    )
    engine = get_engine(pg_url)
    reset_database(engine)
    with transaction(engine) as conn:
        conn.execute(sa.text(CREATE_TABLE))
        conn.execute(sa.text(f"DELETE FROM {TABLE}"))  # noqa: S608 - a fixed name
    client = redis.Redis.from_url(REDIS_URL)
    yield {"fault": fault, "settings": settings, "engine": engine, "tmp": tmp_path, "key": key}
    for name in client.scan_iter(f"nick-jobs-chaos-{tag}*"):
        client.delete(name)
    client.close()
    if fault == "rabbitmq-restart":
        _purge_rabbitmq(settings["nick_jobs.queue"])
    engine.dispose()
    engine = get_engine(pg_url)
    with transaction(engine) as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {TABLE}"))
        conn.execute(sa.text("DELETE FROM scheduled_firings"))
        conn.execute(sa.text("DELETE FROM scheduled_jobs"))
    engine.dispose()


@dataclass
class ApiAnswers:
    statuses: collections.Counter = field(default_factory=collections.Counter)
    accepted: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    slowest_s: float = 0.0
    finished: int = 0  # the jobs finished, as the test last counted them
    outage: bool = False  # while the service restarts: the client submits without pause


def submit_jobs(app: Client, headers: dict, key: str, answers: ApiAnswers, stop) -> None:
    """Submit until OUTAGE_JOBS are accepted, at most BACKLOG ahead of the workers (but
    for the outage itself), so jobs are submitted, started and finished all through it.
    A 503 is the only refusal taken; the client waits a moment before it tries again."""
    rng = random.Random()
    while len(answers.accepted) < OUTAGE_JOBS and not stop.is_set():
        if not answers.outage and len(answers.accepted) - answers.finished >= BACKLOG:
            stop.wait(0.02)
            continue
        params = {"action": "counted", "sleep": rng.uniform(0, 0.05), "redis": REDIS_URL}
        body = {"params": {**params, "key": key}}
        began = time.monotonic()
        response = app.post_json("/@jobs", body, headers=headers, status="*")
        took = time.monotonic() - began
        answers.statuses[response.status_int] += 1
        answers.slowest_s = max(answers.slowest_s, took)
        if response.status_int == 201:
            answers.accepted.append(response.json["@id"].rsplit("/", 1)[1])
            continue
        error = response.json if response.content_type == "application/json" else {}
        if response.status_int != 503 or set(error.get("error", {})) < {"type", "message"}:
            answers.bad.append(f"{response.status_int} {response.body[:300]!r}")
        if took > ANSWER_WITHIN_S:
            answers.bad.append(f"a {response.status_int} after {took:.1f} s")
        stop.wait(0.05)


def finished_count(engine: sa.Engine) -> int | None:
    """How many jobs are finished; None while the database can't say."""
    try:
        return terminal_count(engine)
    except sa.exc.DBAPIError:
        return None


def unfinished(engine: sa.Engine, since: dt.datetime) -> int | None:
    """How many jobs are not finished, counting a firing of the schedule made ``since`` as
    unfinished until there is one; None while the database can't say."""
    try:
        with engine.connect() as conn:
            left = conn.execute(
                sa.select(sa.func.count()).select_from(jobs).where(jobs.c.status.not_in(TERMINAL))
            ).scalar_one()
            fired = conn.execute(
                sa.select(sa.func.count())
                .select_from(jobs)
                .where(jobs.c.params["scheduled_job"].as_string() == SCHEDULE)
                .where(jobs.c.created >= since)
            ).scalar_one()
    except sa.exc.DBAPIError:
        return None
    return left + (0 if fired else 1)


def make_schedule_due(engine: sa.Engine) -> dt.datetime | None:
    """Make the schedule's next slot now, for a firing after the restart; when, or None
    if the database does not answer yet."""
    now = utcnow()
    try:
        with transaction(engine) as conn:
            conn.execute(
                sa.text("UPDATE scheduled_jobs SET next_run = :now WHERE id = :id"),
                {"now": now, "id": SCHEDULE},
            )
    except sa.exc.DBAPIError:
        return None
    return now


def test_chaos_an_outage_fails_no_job(outage_chaos):
    """1,000 jobs, two worker processes, a scheduler; PostgreSQL (or RabbitMQ) restarted
    once 300 are done. Every job completes once, none fails, none is lost; the API
    answers 503 meanwhile; the workers and the scheduler carry on by themselves: no
    process exits, so the process manager never restarts one."""
    kind, engine, key = outage_chaos["fault"], outage_chaos["engine"], outage_chaos["key"]
    settings = outage_chaos["settings"]
    ini = write_ini(outage_chaos["tmp"] / "chaos.ini", settings)
    app = Client(main({}, **settings), extra_environ={"HTTP_HOST": "localhost:8080"})
    headers = app.auth()
    restart = postgres_restarted if kind == "postgres-restart" else rabbitmq_restarted
    workers = ProcessManager(ini, 2, threads=4)
    scheduler = subprocess.Popen(
        [*COMMAND, "scheduler", str(ini)], stdin=subprocess.DEVNULL, env=clean_env(), cwd=ROOT
    )
    answers, stop = ApiAnswers(), threading.Event()
    client = threading.Thread(target=submit_jobs, args=(app, headers, key, answers, stop))
    times: dict[str, float] = {}
    replaced: list[int] = []

    def fault_now() -> None:
        times["down"] = time.monotonic()
        times["accepted"] = len(answers.accepted)
        answers.outage = True
        try:
            with restart():
                times["back"] = time.monotonic()
                times["accepted during"] = len(answers.accepted) - times["accepted"]
        finally:
            answers.outage = False

    fault = threading.Thread(target=fault_now)
    try:
        started = time.monotonic()
        client.start()
        deadline = started + OUTAGE_DEADLINE_S
        back: dt.datetime | None = None
        before: list[int] = []
        while True:
            assert time.monotonic() < deadline, (
                f"not done after {OUTAGE_DEADLINE_S} s: {answers.finished} finished, {answers}"
            )
            replaced += workers.restart_failed()
            answers.finished = finished_count(engine) or answers.finished
            if answers.finished >= OUTAGE_AT and fault.ident is None:
                # The worker processes that ran the jobs so far, to be running at the end.
                before = [proc.pid for proc in workers.slots]
                fault.start()
            if back is None and "back" in times:
                engine.dispose()  # the test's own connections went with the restart
                back = make_schedule_due(engine)
            if not client.is_alive():
                times.setdefault("submitted", time.monotonic())
                if back is not None and unfinished(engine, back) == 0:
                    break
            time.sleep(0.05)
        fault.join()
        down_at, back_at, accepted_before = times["down"], times["back"], times["accepted"]
        submitted = times["submitted"] - started
        drained = time.monotonic() - started
        after = time.monotonic() - back_at
        running = [p.poll() is None for p in (*workers.slots, scheduler)]
        after_fault = [proc.pid for proc in workers.slots]
    finally:
        stop.set()
        client.join(timeout=10)
        if fault.ident is not None:
            fault.join()  # the service runs again, whatever happened
        stop_process(scheduler)
        workers.stop()
        app.app.registry["nick_jobs.queue"].broker.close()
        app.app.registry["nick_jobs.engine"].dispose()
        app.app.registry["nick_jobs.read_engine"].dispose()

    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                jobs.c.uuid,
                jobs.c.status,
                jobs.c.attempt,
                jobs.c.error,
                jobs.c.created,
                jobs.c.params["scheduled_job"].as_string().label("schedule"),
            )
        ).all()
        final = {r.uuid: r for r in rows}
        completions = collections.Counter(
            conn.execute(sa.text(f"SELECT job_uuid FROM {TABLE}")).scalars()  # noqa: S608
        )
        events = collections.Counter(
            conn.execute(sa.select(history.c.event).where(history.c.event != "created")).scalars()
        )
        rescued = set(
            conn.execute(sa.select(history.c.job_uuid).where(history.c.event == "rescued"))
            .scalars()
            .all()
        )
    counter = redis.Redis.from_url(REDIS_URL)
    finishes = {k.decode(): int(v) for k, v in counter.hgetall(key).items()}
    counter.close()
    statuses = collections.Counter(r.status for r in final.values())
    reran = {u: n for u, n in finishes.items() if n > 1}
    fired = [u for u, r in final.items() if r.schedule == SCHEDULE and r.created >= back]
    # Jobs committed although their client was answered 503 (the commit's answer lost).
    unanswered = len(final) - len(answers.accepted) - len(fired)
    print(
        f"\nchaos, {kind} ({back_at - down_at:.1f} s, after {down_at - started:.1f} s with "
        f"{accepted_before} jobs accepted, {times['accepted during']:.0f} more during it): "
        f"{len(final)} jobs {dict(statuses)}, all accepted "
        f"in {submitted:.1f} s, drained in {drained:.1f} s ({after:.1f} s after the restart); "
        f"API answers "
        f"{dict(answers.statuses)}, slowest {answers.slowest_s:.2f} s; committed but "
        f"answered 503: {unanswered}; history {dict(events)}; attempts > 1: "
        f"{sum(1 for r in final.values() if r.attempt > 1)}; handlers finished twice "
        f"{len(reran)}; worker processes {before} then {after_fault}"
    )
    # The API: a job or a 503 with the error body, each within 5 s; never a 500.
    assert answers.bad == []
    assert answers.slowest_s < ANSWER_WITHIN_S
    if kind == "postgres-restart":
        assert answers.statuses[503] > 0, "the API never saw the restart"
    # None lost, none failed: every accepted job and the schedule's are completed.
    assert set(answers.accepted) <= set(final)
    assert len(answers.accepted) == OUTAGE_JOBS
    assert statuses == {"completed": len(final)}, [
        (u, r.status, r.error) for u, r in final.items() if r.status != "completed"
    ][:5]
    # None taken for lost while its worker lived.
    assert events["rescued"] == 0, workers.log_lines(rescued)[-40:]
    # None completed twice: one committed completion per job.
    assert completions == collections.Counter(list(final))
    # The scheduler carried on: the firing after the restart made its job, which ran.
    assert len(fired) == 1
    # Workers and scheduler reconnected by themselves: the same processes throughout,
    # none exited for its process manager to start again.
    assert all(running)
    assert replaced == []
    assert after_fault == before == [proc.pid for proc in workers.started]
