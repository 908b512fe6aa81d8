"""e2e: no-op jobs submitted over HTTP, run by one worker process (PostgreSQL + Redis).

nick-jobs: ``Run.mode.clients`` keep-alive clients POST ``/@jobs`` (``dummy`` with
``steps: 0``: the handler returns at once and reports nothing; JWT) until N are
submitted; one ``nick-jobs worker -t 8`` runs them. The figure is N over the time
from the first submit to the last ``finished`` timestamp.

Baseline (``baseline_pipeline.py``): the same number of producer threads INSERT a row and
send its message; a plain Dramatiq worker (1 process x 8 threads) runs the two UPDATEs.

e2e_2proc: the same submits to the same ini served by gunicorn with 2 gthread workers
(deploy/gunicorn.conf.py: one API process per core, as docs/deployment.md advises), run
by the same worker, in turn with the one ``pserve`` process; ``e2e_2proc_ratio`` is its
rate over the same round's baseline.
"""

from __future__ import annotations

import json

from . import httpload
from .harness import Run, Server, Skip, log, median

NAME = "e2e"
SERVICES = {"postgresql", "redis"}
# The no-op job. (``dummy``'s default, one step with a message and a log line, costs the
# worker a report and the finishing statement a log row: docs/benchmarks.md.)
PARAMS = {"action": "dummy", "steps": 0}
BODY = json.dumps({"params": PARAMS}).encode()


def submit_all(server: Server, token: str, n: int, clients: int) -> httpload.LoadResult:
    raw = httpload.build("POST", "/@jobs", server.port, token, BODY)
    result = httpload.run(server.port, lambda k, i: raw, connections=clients, count=n)
    bad = result.bad((201,))
    if bad:
        sample = result.bodies[:1] or result.errors[:1]
        raise RuntimeError(f"{bad} of {n} submits failed: {result.statuses} {sample}")
    return result


def check_statuses(statuses: dict[str, int], n: int) -> None:
    if statuses.get("completed", 0) != n:
        raise RuntimeError(f"expected {n} completed jobs, found {statuses}")


def nick_once(run: Run, server: Server, token: str, n: int) -> tuple[float, float]:
    """(jobs/s end to end, submits/s while submitting)."""
    run.truncate_jobs()
    result = submit_all(server, token, n, run.mode.clients)
    run.wait_finished(n, timeout=max(120, n / 5))
    _, last, _, statuses = run.finished_span()
    check_statuses(statuses, n)
    return n / (last - result.started), result.rps


def baseline_once(run: Run, queue: str, n: int, broker: str = "redis") -> float:
    run.baseline_pipeline("setup", queue=queue, broker=broker)
    out = run.baseline_pipeline(
        "--clients", str(run.mode.clients), "produce", str(n), queue=queue, broker=broker
    )
    run.wait_finished(n, table="baseline_jobs", timeout=max(120, n / 5))
    _, last, _, statuses = run.finished_span("baseline_jobs")
    check_statuses(statuses, n)
    return n / (last - out["first"])


def run(run: Run) -> dict[str, float]:
    run.need(*SERVICES)
    run.create_database()
    mode = run.mode
    ini = run.nick_ini("e2e-redis", broker="redis")
    server = run.serve(ini, "e2e-server")
    run.worker(ini, "e2e-worker")
    queue = run.queue("e2e_baseline")
    run.baseline_pipeline("setup", queue=queue)
    run.baseline_worker(queue, "e2e-baseline-worker")
    token = run.token(ini)
    # The same settings and queue (so the same worker), on a port of its own.
    two_ini = run.nick_ini("e2e-2proc", broker="redis", queue=run.queue("e2e_redis"))
    try:
        two: Server | None = run.serve_gunicorn(two_ini, "e2e-2proc-server")
    except Skip as exc:
        run.notes.append(f"e2e: no e2e_2proc_jobs_per_s: {exc}")
        two = None
    # Warm-up: connection pools, imports, the first compiled statements, on both sides.
    nick_once(run, server, token, 100)
    if two is not None:
        nick_once(run, two, token, 100)
    baseline_once(run, queue, 100)
    rates, submits, baselines, ratios = [], [], [], []
    rates_2proc, ratios_2proc = [], []
    for r in range(mode.repeats):
        sides = [0, 1, 2] if two is not None else [0, 1]
        order = sides if r % 2 == 0 else sides[::-1]
        got = {}
        for side in order:
            if side == 0:
                got[0], submit_rps = nick_once(run, server, token, mode.e2e_n)
            elif side == 1:
                got[1] = baseline_once(run, queue, mode.e2e_n)
            else:
                got[2], _ = nick_once(run, two, token, mode.e2e_n)
        log(
            f"e2e run {r + 1}: nick-jobs {got[0]:.0f}/s (submitting at {submit_rps:.0f}/s), "
            f"baseline {got[1]:.0f}/s"
            + (f", 2 gunicorn workers {got[2]:.0f}/s" if 2 in got else "")
        )
        rates.append(got[0])
        submits.append(submit_rps)
        baselines.append(got[1])
        ratios.append(got[0] / got[1])
        if 2 in got:
            rates_2proc.append(got[2])
            ratios_2proc.append(got[2] / got[1])
    extra = {}
    if rates_2proc:
        extra = {
            "e2e_2proc_jobs_per_s": median(rates_2proc),
            "e2e_2proc_ratio": median(ratios_2proc),
        }
    return {
        **extra,
        "e2e_jobs_per_s": median(rates),
        "e2e_baseline_jobs_per_s": median(baselines),
        "e2e_ratio": median(ratios),
        "e2e_submit_rps": median(submits),
    }
