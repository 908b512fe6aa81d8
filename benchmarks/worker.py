"""worker: jobs already created and queued, drained by one worker process (PostgreSQL + Redis).

N ``created`` rows of the no-op job of ``e2e``, with ``enqueued`` set as the API sets it,
are bulk-loaded and their messages sent (``lifecycle.send_waiting``, the same send the
API does) before ``nick-jobs worker -t 8`` starts. The figure is N over first
``started`` to last ``finished``, so the worker's boot is not counted. The baseline
preloads the same N rows and messages and drains them with the plain Dramatiq worker of
``baseline_pipeline.py``.

The first run drains ``rss_n`` jobs in a fresh worker and reads the worker process's RSS
after ``rss_n/10`` and after ``rss_n`` jobs: ``worker_rss_growth_pct``.
"""

from __future__ import annotations

import json
import time

from . import e2e
from .harness import Run, log, median, rss_kib

NAME = "worker"
SERVICES = {"postgresql", "redis"}

PRELOAD_SQL = """
INSERT INTO jobs (uuid, title, description, action, params, actor, status, created,
                  enqueued, result, attempt)
SELECT gen_random_uuid()::text, 'Dummy job', '', 'dummy', %(params)s::jsonb,
       'bench', 'created', now(), now(), '{}'::jsonb, 1
FROM generate_series(1, %(n)s)
"""


def nick_once(run: Run, ini, n: int, sample_rss: bool) -> tuple[float, float | None]:
    from nick_jobs.jobs import lifecycle

    run.truncate_jobs()
    with run.db() as conn:
        conn.execute(PRELOAD_SQL, {"n": n, "params": json.dumps(e2e.PARAMS)})
    app = run.app(ini)
    with app.registry["nick_jobs.engine"].connect() as conn:
        sent = lifecycle.send_waiting(conn, app.registry["nick_jobs.queue"].send)
    assert sent == n, (sent, n)
    worker = run.worker(ini, "worker")
    growth = None
    if sample_rss:
        checkpoints = {n // 10: None, n: None}
        deadline = time.monotonic() + max(300, n / 10)
        query = "SELECT count(*) FROM jobs WHERE status IN ('completed', 'failed', 'aborted')"
        with run.db() as conn:
            for mark in sorted(checkpoints):
                while conn.execute(query).fetchone()[0] < mark:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the worker did not finish {n} jobs in time")
                    time.sleep(0.05)
                checkpoints[mark] = rss_kib(worker.pid)
        early, late = checkpoints[n // 10], checkpoints[n]
        growth = (late - early) / early * 100
        log(
            f"worker RSS {early / 1024:.1f} MiB after {n // 10} jobs, "
            f"{late / 1024:.1f} MiB after {n}"
        )
    else:
        run.wait_finished(n, timeout=max(300, n / 10))
    first, last, _, statuses = run.finished_span()
    run.stop(worker)
    if statuses.get("completed") != n:
        raise RuntimeError(f"expected {n} completed jobs, found {statuses}")
    return n / (last - first), growth


def baseline_once(run: Run, queue: str, n: int) -> float:
    run.baseline_pipeline("setup", queue=queue)
    run.baseline_pipeline("preload", str(n), queue=queue)
    proc = run.baseline_worker(queue, "worker-baseline")
    run.wait_finished(n, table="baseline_jobs", timeout=max(300, n / 10))
    first, last, _, statuses = run.finished_span("baseline_jobs")
    run.stop(proc)
    if statuses.get("completed") != n:
        raise RuntimeError(f"expected {n} completed baseline jobs, found {statuses}")
    return n / (last - first)


def run(run: Run) -> dict[str, float]:
    run.need(*SERVICES)
    run.create_database()
    mode = run.mode
    ini = run.nick_ini("worker", broker="redis")
    queue = run.queue("worker_baseline")
    rates, baselines, ratios = [], [], []
    growth = None
    for r in range(mode.repeats):
        n = mode.rss_n if r == 0 else mode.worker_n
        rate, measured = nick_once(run, ini, n, sample_rss=r == 0)
        growth = measured if measured is not None else growth
        base = baseline_once(run, queue, n)
        log(f"worker run {r + 1} ({n} jobs): nick-jobs {rate:.0f}/s, baseline {base:.0f}/s")
        rates.append(rate)
        baselines.append(base)
        ratios.append(rate / base)
    return {
        "worker_jobs_per_s": median(rates),
        "worker_baseline_jobs_per_s": median(baselines),
        "worker_ratio": median(ratios),
        "worker_rss_growth_pct": growth,
    }
