"""bulk: jobs created and enqueued by bulk submits of 500, PostgreSQL + Redis.

``Run.mode.clients`` keep-alive clients POST ``/@jobs`` with a JSON array of 500 no-op
job bodies (``dummy``, ``steps: 0``; JWT) until ``bulk_requests`` arrays are in; the
messages go to a queue nobody consumes, as in ``submit``. The figure is the jobs
created over the time from the first request to the last answer, in one ``pserve``
process.

Baseline (``baseline_pipeline.py bulk``): as many threads, each on its own connection,
store 500 jobs a transaction (one multi-row ``INSERT … RETURNING`` of the jobs, one of
their history rows, raw psycopg 3) and then send their 500 messages with Dramatiq's
``RedisBroker`` (one ``send`` a job), with no HTTP. Each run empties both tables and
both queues first; the two sides alternate.

Then, where a bulk submit's time goes, one request at a time: the request's round trip
and the server's CPU for it; the same with the server's state-change log lines off (an
ini whose ``nick_jobs`` logger is at WARN); and, in this process, the parts of the
request one by one (parsing the body, checking it, the two INSERTs with their commit,
the 500 sends, writing the answer), beside the raw INSERTs, the raw sends, one Redis
pipeline carrying the same 500 messages' worth of commands, and the same jobs and
history rows written into nick-jobs' tables by one ``unnest`` statement.
"""

from __future__ import annotations

import configparser
import datetime as dt
import json
import time
import uuid as uuidlib
from pathlib import Path

from . import httpload
from .harness import REDIS_URL, Run, Server, cpu_seconds, free_port, log, median

NAME = "bulk"
SERVICES = {"postgresql", "redis"}
BATCH = 500
PARAMS = {"action": "dummy", "steps": 0}
BODY = json.dumps([{"params": PARAMS}] * BATCH).encode()
# Requests one at a time (and in-process repeats) for the breakdown, by mode.
PARTS = {"quick": 8, "full": 15}


# The jobs and their history rows of a bulk submit in one short statement, one array
# parameter a varying column, on nick-jobs' own tables (their indexes and trigger): what
# the INSERTs would cost written that way.
UNNEST_INSERT = """
WITH new_jobs AS (
    INSERT INTO jobs (uuid, title, description, action, params, actor, status, created,
                      result, attempt, enqueued)
    SELECT u, 'Dummy job', '', 'dummy', p, %(actor)s, 'created', %(now)s, '{}'::jsonb, 1,
           %(now)s
    FROM unnest(%(uuids)s::varchar[], %(params)s::jsonb[]) AS t(u, p)
    RETURNING id, uuid
), history AS (
    INSERT INTO job_history (job_uuid, time, event, by, attempt, data)
    SELECT uuid, %(now)s, 'created', %(actor)s, 1, '{}'::jsonb FROM new_jobs
)
SELECT id, uuid FROM new_jobs
"""


def clear_queue(namespace: str, queue: str) -> None:
    """Drop the messages of an unconsumed queue, so each run starts from an empty one."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:{queue}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def nick_once(run: Run, server: Server, raw: bytes, queue: str, requests: int) -> float:
    run.truncate_jobs()
    clear_queue(run.namespace, queue)
    clients = run.mode.clients
    result = httpload.run(server.port, lambda k, i: raw, connections=clients, count=requests)
    bad = result.bad((201,))
    if bad:
        sample = result.bodies[:1] or result.errors[:1]
        raise RuntimeError(f"{bad} of {requests} bulk submits failed: {result.statuses} {sample}")
    with run.db() as conn:
        stored = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
    if stored != requests * BATCH:
        raise RuntimeError(f"expected {requests * BATCH} jobs, found {stored}")
    return requests * BATCH / result.elapsed


def baseline_once(run: Run, queue: str, requests: int) -> dict:
    run.baseline_pipeline("setup", queue=queue)
    clear_queue(run.namespace + "-baseline", queue)
    out = run.baseline_pipeline(
        "--clients",
        str(run.mode.clients),
        "--batch",
        str(BATCH),
        "bulk",
        str(requests * BATCH),
        queue=queue,
    )
    out["rate"] = out["jobs"] / out["elapsed"]
    return out


def quiet_ini(ini: Path, name: str, run: Run) -> Path:
    """The same ini on a port of its own, with nick-jobs' INFO lines (a state-change
    line a job) off."""
    parser = configparser.RawConfigParser()
    parser.optionxform = str
    parser.read(ini)
    parser.set("logger_nick_jobs", "level", "WARN")
    parser.set("server:main", "listen", f"127.0.0.1:{free_port()}")
    path = run.run_dir / f"{name}.ini"
    with path.open("w") as fh:
        parser.write(fh)
    return path


def one_by_one(server: Server, raw: bytes, n: int) -> tuple[float, float]:
    """(p50 round trip ms, server CPU ms a request) of ``n`` bulk submits in sequence."""
    conn = httpload.Connection(server.port)
    times = []
    cpu0 = cpu_seconds(server.proc.pid)
    for _ in range(n):
        t0 = time.perf_counter()
        status, body = conn.request(raw)
        times.append((time.perf_counter() - t0) * 1000)
        if status != 201:
            raise RuntimeError(f"bulk submit answered {status}: {body[:200]!r}")
    cpu = (cpu_seconds(server.proc.pid) - cpu0) * 1000 / n
    conn.close()
    return median(times), cpu


def parts(run: Run, ini: Path, queue: str, repeats: int) -> dict[str, float]:
    """The parts of one bulk submit of 500, each timed alone in this process: ms of
    wall time, and ms of this thread's CPU (``_cpu``)."""
    import psycopg
    import redis
    from dramatiq.brokers.redis import RedisBroker

    from nick_jobs.db.after_commit import transaction
    from nick_jobs.jobs import submission
    from nick_jobs.jobs.actions import get_registry
    from nick_jobs.jobs.remote_actions import Actions
    from nick_jobs.jobs.serialize import job_json
    from nick_jobs.web.strict import dumps

    from . import baseline_pipeline

    app = run.app(ini)
    engine = app.registry["nick_jobs.engine"]
    send = app.registry["nick_jobs.queue"].send
    baseline_pipeline.ARGS.queue = queue + "_parts"
    broker = RedisBroker(url=REDIS_URL, namespace=run.namespace + "-parts")
    actor = baseline_pipeline.declare(broker)
    client = redis.Redis.from_url(REDIS_URL)
    timings: dict[str, list[float]] = {}

    def timed(name: str, fn, *args):
        t0, c0 = time.perf_counter(), time.thread_time()
        out = fn(*args)
        timings.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
        timings.setdefault(f"{name}_cpu", []).append((time.thread_time() - c0) * 1000)
        return out

    def check(data):
        with engine.connect() as conn:
            return submission.prepare_many(Actions(get_registry(app.registry), conn), data)

    def store(prepared):
        with transaction(engine) as conn:
            return submission.submit_many(conn, prepared, "bench")[0]

    def answer(jobs):
        return dumps([job_json(job, f"http://127.0.0.1/@jobs/{job['uuid']}") for job in jobs])

    def one_statement(prepared):
        from psycopg.types.json import Jsonb

        values = {
            "actor": "bench",
            "now": dt.datetime.now(dt.UTC),
            "uuids": [str(uuidlib.uuid4()) for _ in prepared],
            "params": [Jsonb(item.params) for item in prepared],
        }
        with raw_conn.transaction():
            rows = raw_conn.execute(UNNEST_INSERT, values).fetchall()
        assert len(rows) == len(prepared)

    def pipelined(uuids):
        # What one batched enqueue would cost: each message's body stored and its id
        # queued, as RedisBroker's enqueue does, all in one round trip.
        key = f"{run.namespace}-parts:pipeline"
        pipe = client.pipeline(transaction=False)
        for u in uuids:
            message_id = str(uuidlib.uuid4())
            pipe.hset(f"{key}.msgs", message_id, json.dumps({"args": [u], "id": message_id}))
            pipe.rpush(key, message_id)
        pipe.execute()

    raw_conn = psycopg.connect(run.dsn, autocommit=True)
    try:
        for _ in range(repeats + 2):
            data = timed("parse", json.loads, BODY)
            prepared = timed("check", check, data)
            jobs = timed("insert", store, prepared)
            timed("unnest_insert", one_statement, prepared)
            timed("send", lambda jobs: [send(job["uuid"], job["action"]) for job in jobs], jobs)
            timed("answer", answer, jobs)
            uuids = timed("raw_insert", baseline_pipeline.insert_batch, raw_conn, BATCH)
            timed("raw_send", lambda uuids: [actor.send(u) for u in uuids], uuids)
            timed("redis_pipeline", pipelined, uuids)
    finally:
        raw_conn.close()
        broker.close()
        client.close()
    # The first two of each are warm-up.
    return {name: median(values[2:]) for name, values in timings.items()}


def run(run: Run) -> dict[str, float]:
    run.need(*SERVICES)
    run.create_database()
    mode = run.mode
    queue = run.queue("bulk_unconsumed")
    ini = run.nick_ini("bulk", broker="redis", queue=queue)
    server = run.serve(ini, "bulk-server")
    raw = httpload.build("POST", "/@jobs", server.port, run.token(ini), BODY)
    base_queue = run.queue("bulk_baseline_unconsumed")
    # Warm-up: the pool's connections, imports, the first compiled statements.
    nick_once(run, server, raw, queue, mode.clients)
    baseline_once(run, base_queue, mode.clients)
    rates, base_rates, ratios = [], [], []
    for r in range(mode.repeats):
        got: dict[int, float] = {}
        base: dict = {}
        for side in (0, 1) if r % 2 == 0 else (1, 0):
            if side == 0:
                got[0] = nick_once(run, server, raw, queue, mode.bulk_requests)
            else:
                base = baseline_once(run, base_queue, mode.bulk_requests)
                got[1] = base["rate"]
        log(
            f"bulk run {r + 1} ({mode.bulk_requests * BATCH:,} jobs): nick-jobs {got[0]:,.0f} "
            f"jobs/s, baseline {got[1]:,.0f} jobs/s (its threads spent {base['insert_s']:.2f} s "
            f"inserting, {base['send_s']:.2f} s sending)"
        )
        rates.append(got[0])
        base_rates.append(got[1])
        ratios.append(got[0] / got[1])

    # Where the time goes: one request at a time, with and without the log lines.
    quiet = run.serve(quiet_ini(ini, "bulk-quiet", run), "bulk-quiet-server")
    quiet_raw = httpload.build("POST", "/@jobs", quiet.port, run.token(ini), BODY)
    one_by_one(quiet, quiet_raw, 3)
    one_by_one(server, raw, 3)
    repeats = PARTS[mode.name]
    loud_ms, loud_cpu, quiet_ms, quiet_cpu = [], [], [], []
    for _ in range(2):
        run.truncate_jobs()
        ms, cpu = one_by_one(server, raw, repeats)
        loud_ms.append(ms)
        loud_cpu.append(cpu)
        run.truncate_jobs()
        ms, cpu = one_by_one(quiet, quiet_raw, repeats)
        quiet_ms.append(ms)
        quiet_cpu.append(cpu)
    run.stop(quiet.proc)
    run.truncate_jobs()
    split = parts(run, ini, queue, repeats)
    run.truncate_jobs()
    clear_queue(run.namespace, queue)
    breakdown = {
        "bulk_one_request_ms": median(loud_ms),
        "bulk_one_request_cpu_ms": median(loud_cpu),
        "bulk_one_request_no_log_ms": median(quiet_ms),
        "bulk_one_request_no_log_cpu_ms": median(quiet_cpu),
        **{f"bulk_part_{name}_ms": value for name, value in split.items()},
        "bulk_part_raw_ms": split["raw_insert"] + split["raw_send"],
    }
    log(
        "bulk submit of 500, one at a time: "
        + ", ".join(f"{name} {value:.1f}" for name, value in breakdown.items())
    )
    return {
        "bulk_submit_jobs_per_s": median(rates),
        "bulk_submit_baseline_jobs_per_s": median(base_rates),
        "bulk_submit_ratio": median(ratios),
        **breakdown,
    }
