"""prune: how long ``POST /@jobs`` can take while the built-in prune job runs.

The table is loaded for this benchmark: ``prune_old`` finished jobs that finished 90 days
ago (the lowest ids, as on a real table, where the oldest jobs came first) and the rest of
``rows`` finished a day ago, each with a ``created`` history entry and one log line, as
the API and a handler leave them. A worker runs ``prune`` (days=30, its default batch of
1,000 jobs per transaction) while ``prune_clients`` closed-loop clients submit dummy jobs
(which the same worker runs). ``prune_max_submit_ms`` is the slowest submit while the
prune job is running; the same load for ``http_seconds`` before the prune gives
``prune_control_max_submit_ms``.

``prune_old`` is ``rows`` x ``prune_fraction`` (100,000 in the full run); set
``NICK_JOBS_BENCH_PRUNE_OLD`` to prune more, e.g. 1000000 for a million:

    NICK_JOBS_BENCH_PRUNE_OLD=1000000 python benchmarks/run.py --only prune
"""

from __future__ import annotations

import json
import os
import threading
import time

from . import e2e, httpload
from .harness import Run, log, percentile

NAME = "prune"
SERVICES = {"postgresql", "redis"}
# NICK_JOBS_BENCH_PRUNE_BATCH: another batch_size than prune's default (1,000).
PRUNE_PARAMS = {"action": "prune", "days": 30} | (
    {"batch_size": int(os.environ["NICK_JOBS_BENCH_PRUNE_BATCH"])}
    if os.environ.get("NICK_JOBS_BENCH_PRUNE_BATCH")
    else {}
)
PRUNE = json.dumps({"params": PRUNE_PARAMS}).encode()
# Old jobs that are not finished (stopped, with a finished time): prune must keep them.
KEEP_EVERY = 10_000

LOAD_SQL = """
INSERT INTO jobs (uuid, title, description, action, params, actor, status, created,
                  started, finished, result, error, attempt, idempotency_key)
SELECT gen_random_uuid()::text, 'Dummy job', '', 'dummy', '{"action": "dummy"}'::jsonb,
       'bench',
       CASE WHEN g <= %(old)s AND g %% %(keep)s = 0 THEN 'stopped'
            WHEN g %% 1000 = 0 THEN 'failed'
            WHEN g %% 1000 = 1 THEN 'aborted'
            ELSE 'completed' END,
       ts, ts + interval '2 ms', ts + interval '9 ms', '{}'::jsonb,
       CASE WHEN g %% 1000 = 0 THEN '{"type": "JobFailed", "message": "no"}'::jsonb END,
       1, NULL
FROM (
    SELECT g, CASE WHEN g <= %(old)s
                   THEN now() - interval '90 days' + g * interval '5 ms'
                   ELSE now() - interval '1 day' + (g - %(old)s) * interval '5 ms' END AS ts
    FROM generate_series(1::bigint, %(total)s::bigint) AS g
) AS s
"""
HISTORY_SQL = """
INSERT INTO job_history (job_uuid, time, event, by, attempt, data)
SELECT uuid, created, 'created', actor, 1, '{}'::jsonb FROM jobs
"""
LOGS_SQL = """
INSERT INTO job_logs (job_uuid, attempt, time, level, message)
SELECT uuid, 1, finished, 20, 'step 1 of 1 done' FROM jobs
"""


def load(run: Run, old: int, total: int) -> int:
    """Load ``total`` finished jobs, ``old`` of them 90 days old; return how many to prune."""
    log(f"loading {total:,} jobs ({old:,} to prune), their history and logs")
    started = time.monotonic()
    with run.db() as conn:
        conn.execute("TRUNCATE jobs, job_history, job_logs RESTART IDENTITY")
        conn.execute(LOAD_SQL, {"old": old, "total": total, "keep": KEEP_EVERY})
        conn.execute(HISTORY_SQL)
        conn.execute(LOGS_SQL)
        for table in ("jobs", "job_history", "job_logs"):
            conn.execute(f"VACUUM ANALYZE {table}")
        (prunable,) = conn.execute(
            "SELECT count(*) FROM jobs WHERE status IN ('completed', 'failed', 'aborted') "
            "AND finished < now() - interval '30 days'"
        ).fetchone()
    run.checkpoint()
    # The table is this benchmark's now: a benchmark after it loads its own rows again.
    run.loaded_rows = 0
    log(f"loaded in {time.monotonic() - started:.1f}s")
    return prunable


def run(run: Run) -> dict[str, float]:
    run.need(*SERVICES)
    run.create_database()
    mode = run.mode
    old = int(os.environ.get("NICK_JOBS_BENCH_PRUNE_OLD") or mode.rows * mode.prune_fraction)
    total = old + mode.rows - int(mode.rows * mode.prune_fraction)
    prunable = load(run, old, total)
    # About 5,000 jobs/s at the least, with their history and logs.
    timeout = max(mode.prune_timeout_s, prunable / 5_000)
    ini = run.nick_ini("prune", broker="redis")
    server = run.serve(ini, "prune-server")
    run.worker(ini, "prune-worker")
    token = run.token(ini)
    submit = httpload.build("POST", "/@jobs", server.port, token, e2e.BODY)
    clients = mode.prune_clients
    httpload.run(server.port, lambda k, i: submit, connections=clients, duration=1.0)
    control = httpload.run(
        server.port, lambda k, i: submit, connections=clients, duration=mode.http_seconds
    )

    conn = httpload.Connection(server.port)
    status, body = conn.request(httpload.build("POST", "/@jobs", server.port, token, PRUNE))
    conn.close()
    if status != 201:
        raise RuntimeError(f"the prune submit answered {status}: {body[:300]!r}")
    uuid = json.loads(body)["uuid"]
    stop = threading.Event()
    outcome: dict[str, object] = {}

    def watch() -> None:
        deadline = time.monotonic() + timeout
        with run.db() as db:
            while time.monotonic() < deadline:
                row = db.execute(
                    "SELECT status, result, extract(epoch FROM finished - started) "
                    "FROM jobs WHERE uuid = %s",
                    (uuid,),
                ).fetchone()
                if row and row[0] in ("completed", "failed", "aborted"):
                    outcome.update(status=row[0], result=row[1], seconds=float(row[2]))
                    break
                time.sleep(0.05)
        stop.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    during = httpload.run(server.port, lambda k, i: submit, connections=clients, stop=stop)
    watcher.join()
    for result in (control, during):
        if result.bad((201,)):
            raise RuntimeError(f"submits failed: {result.statuses} {result.bodies[:1]}")
    if outcome.get("status") != "completed":
        raise RuntimeError(
            f"the prune job did not complete in {timeout:.0f}s: {outcome or 'running'}"
        )
    result = outcome["result"]
    deleted = result["deleted"]
    if deleted != prunable:
        raise RuntimeError(f"prune deleted {deleted} jobs, not the {prunable} past retention")
    with run.db() as db:
        (orphans,) = db.execute(
            "SELECT (SELECT count(*) FROM job_history h WHERE NOT EXISTS "
            "(SELECT 1 FROM jobs j WHERE j.uuid = h.job_uuid)) + (SELECT count(*) FROM "
            "job_logs l WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.uuid = l.job_uuid))"
        ).fetchone()
    if orphans:
        raise RuntimeError(f"{orphans} history entries or log lines of pruned jobs are left")
    log(
        f"prune deleted {deleted:,} jobs (+ as many history entries and log lines) in "
        f"{outcome['seconds']:.1f}s, {result.get('batches')} batches, the longest "
        f"{result.get('longest_batch_ms')} ms; submits during it: {during.count}, max "
        f"{max(during.latencies_ms):.0f} ms, p99 {percentile(during.latencies_ms, 99):.0f} ms "
        f"(before it: max {max(control.latencies_ms):.0f} ms)"
    )
    return {
        "prune_max_submit_ms": max(during.latencies_ms),
        "prune_p99_submit_ms": percentile(during.latencies_ms, 99),
        "prune_control_max_submit_ms": max(control.latencies_ms),
        "prune_rows_per_s": deleted / outcome["seconds"],
        "prune_longest_batch_ms": result.get("longest_batch_ms"),
        "prune_jobs_deleted": deleted,
    }
