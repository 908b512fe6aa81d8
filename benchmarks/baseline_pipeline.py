"""Baseline for the job path: the same work as nick-jobs with raw psycopg 3 and Dramatiq.

A job is one INSERT (``created``) and a Dramatiq message carrying its uuid; the actor
runs ``UPDATE ... running ... RETURNING`` and ``UPDATE ... completed``, each its own
autocommit transaction on a per-thread connection. The table has nick-jobs' columns and
indexes, so the database does the same work for each row.

    python benchmarks/baseline_pipeline.py --dsn DSN --broker-url URL --namespace NS \\
        --queue Q {setup,produce N,preload N,worker}

``produce`` inserts and sends from ``--clients`` threads and prints the epoch time of
the first insert as JSON; ``preload`` inserts N waiting rows and sends their messages;
``worker`` consumes with one process of ``--threads`` threads until SIGTERM; ``bulk N``
stores N jobs from ``--clients`` threads in transactions of ``--batch`` jobs (one
multi-row INSERT of the jobs, one of their history rows), sends each batch's messages
after its commit, and prints the time it took, with the seconds spent inserting and
sending.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import sys
import threading
import time
import uuid as uuidlib

import dramatiq
import psycopg

DDL = """
CREATE TABLE IF NOT EXISTS baseline_jobs (
    id bigserial PRIMARY KEY,
    uuid varchar(36) NOT NULL UNIQUE,
    title text NOT NULL,
    description text NOT NULL,
    action varchar(100) NOT NULL,
    params jsonb NOT NULL,
    actor varchar(100) NOT NULL,
    status varchar(20) NOT NULL,
    created timestamptz NOT NULL,
    started timestamptz,
    finished timestamptz,
    result jsonb NOT NULL,
    error jsonb,
    attempt integer NOT NULL,
    idempotency_key varchar(200),
    UNIQUE (actor, idempotency_key)
);
CREATE INDEX IF NOT EXISTS baseline_jobs_actor_id ON baseline_jobs (actor, id);
CREATE INDEX IF NOT EXISTS baseline_jobs_status_id ON baseline_jobs (status, id);
CREATE INDEX IF NOT EXISTS baseline_jobs_action_id ON baseline_jobs (action, id);
CREATE TABLE IF NOT EXISTS baseline_job_history (
    id bigserial PRIMARY KEY,
    job_uuid varchar(36) NOT NULL,
    time timestamptz NOT NULL,
    event varchar(40) NOT NULL,
    by varchar(100) NOT NULL,
    attempt integer NOT NULL,
    data jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS baseline_job_history_job_uuid ON baseline_job_history (job_uuid);
"""

INSERT = """
INSERT INTO baseline_jobs (uuid, title, description, action, params, actor, status,
                           created, result, attempt)
VALUES (%s, 'Dummy job', '', 'dummy', '{"action": "dummy"}', 'bench', 'created', %s, '{}', 1)
RETURNING id
"""
START = """
UPDATE baseline_jobs SET status = 'running', started = %s
WHERE uuid = %s AND status = 'created'
RETURNING action, params, actor, attempt
"""
FINISH = """
UPDATE baseline_jobs SET status = 'completed', finished = %s, result = '{}'
WHERE uuid = %s AND status = 'running' AND attempt = %s
"""

ARGS = argparse.Namespace()
_local = threading.local()


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def connection() -> psycopg.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = _local.conn = psycopg.connect(ARGS.dsn, autocommit=True)
    return conn


def make_broker() -> dramatiq.Broker:
    if ARGS.broker_url.startswith("redis"):
        from dramatiq.brokers.redis import RedisBroker

        return RedisBroker(url=ARGS.broker_url, namespace=ARGS.namespace)
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    # As nick-jobs sends by default: persistent messages, no publisher confirms.
    return RabbitmqBroker(url=ARGS.broker_url)


def run_job(uuid: str) -> None:
    conn = connection()
    row = conn.execute(START, (now(), uuid)).fetchone()
    if row is None:
        return
    conn.execute(FINISH, (now(), uuid, row[3]))


def declare(broker: dramatiq.Broker) -> dramatiq.Actor:
    return dramatiq.Actor(
        run_job,
        broker=broker,
        actor_name="baseline_run_job",
        queue_name=ARGS.queue,
        priority=0,
        options={"max_retries": 0},
    )


def insert(conn: psycopg.Connection) -> str:
    uuid = str(uuidlib.uuid4())
    conn.execute(INSERT, (uuid, now()))
    return uuid


def cmd_setup() -> dict:
    with psycopg.connect(ARGS.dsn, autocommit=True) as conn:
        conn.execute(DDL)
        conn.execute("TRUNCATE baseline_jobs, baseline_job_history RESTART IDENTITY")
    return {"ok": True}


def cmd_produce() -> dict:
    actor = declare(make_broker())
    first: list[float] = []
    barrier = threading.Barrier(ARGS.clients)

    def client(n: int) -> None:
        with psycopg.connect(ARGS.dsn, autocommit=True) as conn:
            barrier.wait()
            if not first:
                first.append(time.time())
            for _ in range(n):
                actor.send(insert(conn))

    share = [ARGS.n // ARGS.clients + (k < ARGS.n % ARGS.clients) for k in range(ARGS.clients)]
    threads = [threading.Thread(target=client, args=(n,)) for n in share]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"first": min(first), "sent": ARGS.n, "done_sending": time.time()}


PARAMS = json.dumps({"action": "dummy", "steps": 0})
BULK_INSERT = (
    "INSERT INTO baseline_jobs (uuid, title, description, action, params, actor, status, "
    "created, result, attempt) VALUES"
)
HISTORY_INSERT = (
    "INSERT INTO baseline_job_history (job_uuid, time, event, by, attempt, data) VALUES"
)
# The columns a bulk submit binds for each job, and the history row of its creation.
BULK_ROW = "(%s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s::jsonb, %s)"
HISTORY_ROW = "(%s, %s, 'created', %s, 1, '{}'::jsonb)"


def bulk_statements(n: int) -> tuple[str, str]:
    """The two INSERTs of ``n`` rows: placeholders only, no value in the text."""
    jobs_rows = ", ".join([BULK_ROW] * n)
    history_rows = ", ".join([HISTORY_ROW] * n)
    jobs = f"{BULK_INSERT} {jobs_rows} RETURNING id, uuid"
    history = f"{HISTORY_INSERT} {history_rows}"
    return jobs, history


def insert_batch(conn: psycopg.Connection, n: int, *, keep: bool = True) -> list[str]:
    """One transaction: ``n`` jobs in one INSERT, their history rows in another (rolled
    back unless ``keep``)."""
    created = now()
    uuids = [str(uuidlib.uuid4()) for _ in range(n)]
    jobs_sql, history_sql = bulk_statements(n)
    job_args: list[object] = []
    history_args: list[object] = []
    for uuid in uuids:
        job_args += [uuid, "Dummy job", "", "dummy", PARAMS, "bench", "created", created, "{}", 1]
        history_args += [uuid, created, "bench"]
    with conn.transaction(force_rollback=not keep):
        ids = conn.execute(jobs_sql, job_args).fetchall()
        conn.execute(history_sql, history_args)
    assert len(ids) == n
    return uuids


def cmd_bulk() -> dict:
    actor = declare(make_broker())
    batches = [ARGS.batch] * (ARGS.n // ARGS.batch)
    if ARGS.n % ARGS.batch:
        batches.append(ARGS.n % ARGS.batch)
    shares = [mine for k in range(ARGS.clients) if (mine := batches[k :: ARGS.clients])]
    barrier = threading.Barrier(len(shares) + 1)
    spent = {"insert_s": 0.0, "send_s": 0.0}
    lock = threading.Lock()

    def client(mine: list[int]) -> None:
        inserting = sending = 0.0
        with psycopg.connect(ARGS.dsn, autocommit=True) as conn:
            # Connected, the statements prepared and the broker reached before the clock
            # starts, as the server side is warm.
            for _ in range(6):
                insert_batch(conn, ARGS.batch, keep=False)
            actor.send(str(uuidlib.uuid4()))
            barrier.wait()
            for size in mine:
                t0 = time.perf_counter()
                uuids = insert_batch(conn, size)
                t1 = time.perf_counter()
                for uuid in uuids:
                    actor.send(uuid)
                t2 = time.perf_counter()
                inserting += t1 - t0
                sending += t2 - t1
        with lock:
            spent["insert_s"] += inserting
            spent["send_s"] += sending

    threads = [threading.Thread(target=client, args=(mine,)) for mine in shares]
    for thread in threads:
        thread.start()
    barrier.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - t0
    return {"jobs": ARGS.n, "elapsed": elapsed, **spent}


def cmd_preload() -> dict:
    actor = declare(make_broker())
    with psycopg.connect(ARGS.dsn, autocommit=True) as conn, conn.transaction():
        uuids = [insert(conn) for _ in range(ARGS.n)]
    for uuid in uuids:
        actor.send(uuid)
    return {"sent": len(uuids)}


def cmd_worker() -> dict:
    broker = make_broker()
    declare(broker)
    broker.emit_after("process_boot")
    worker = dramatiq.Worker(broker, worker_threads=ARGS.threads, worker_timeout=100)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker.start()
    stop.wait()
    worker.stop(timeout=10_000)
    broker.close()
    return {"stopped": True}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--broker-url", required=True)
    parser.add_argument("--namespace", default="nick-jobs-baseline")
    parser.add_argument("--queue", default="baseline")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("command", choices=["setup", "produce", "preload", "worker", "bulk"])
    parser.add_argument("n", type=int, nargs="?", default=0)
    parser.parse_args(argv, namespace=ARGS)
    commands = {
        "setup": cmd_setup,
        "produce": cmd_produce,
        "preload": cmd_preload,
        "worker": cmd_worker,
        "bulk": cmd_bulk,
    }
    print(json.dumps(commands[ARGS.command]()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
