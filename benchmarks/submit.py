"""submit: ``POST /@jobs`` alone, with no worker consuming (PostgreSQL + Redis).

Closed-loop keep-alive clients with a JWT submit dummy jobs for ``http_seconds``; their
messages go to a queue nobody consumes. Baseline: the Pyramid app of ``baseline_http.py``
on the same waitress settings, whose POST view parses the JSON body, inserts the row with
raw psycopg 3 and sends the Dramatiq message.

submit_rps_2proc: the same load on the same ini served by gunicorn with 2 gthread workers
(deploy/gunicorn.conf.py), alternated with the one ``pserve`` process;
``submit_2proc_scaling`` is its rate over the one process's, run by run.
"""

from __future__ import annotations

from . import e2e, httpload
from .harness import Run, Server, Skip, log, median, percentile

NAME = "submit"
SERVICES = {"postgresql", "redis"}


def load(run: Run, server: Server, raw: bytes, seconds: float) -> httpload.LoadResult:
    result = httpload.run(
        server.port, lambda k, i: raw, connections=run.mode.http_connections, duration=seconds
    )
    bad = result.bad((201,))
    if bad:
        raise RuntimeError(f"{bad} submits failed: {result.statuses} {result.bodies[:1]}")
    return result


def run(run: Run) -> dict[str, float]:
    run.need(*SERVICES)
    run.create_database()
    mode = run.mode
    ini = run.nick_ini("submit", broker="redis", queue=run.queue("submit_unconsumed"))
    server = run.serve(ini, "submit-server")
    base_queue = run.queue("submit_baseline_unconsumed")
    run.baseline_pipeline("setup", queue=base_queue)
    baseline = run.serve(run.baseline_ini("submit-baseline", queue=base_queue), "submit-baseline")
    raw = httpload.build("POST", "/@jobs", server.port, run.token(ini), e2e.BODY)
    base_raw = httpload.build("POST", "/@jobs", baseline.port, None, e2e.BODY)
    # The same settings and unconsumed queue as the pserve process, on a port of its own.
    two_ini = run.nick_ini("submit-2proc", broker="redis", queue=run.queue("submit_unconsumed"))
    try:
        two = run.serve_gunicorn(two_ini, "submit-2proc-server")
    except Skip as exc:
        run.notes.append(f"submit: no submit_rps_2proc: {exc}")
        two = None
    else:
        two_raw = httpload.build("POST", "/@jobs", two.port, run.token(two_ini), e2e.BODY)
    load(run, server, raw, 1.0)
    load(run, baseline, base_raw, 1.0)
    if two is not None:
        load(run, two, two_raw, 1.0)
    rps, base_rps, ratios, p99 = [], [], [], []
    rps_2proc, scaling_2proc = [], []
    for r in range(mode.repeats):
        pair = {}
        for side in (0, 1) if r % 2 == 0 else (1, 0):
            if side == 0:
                pair[0] = load(run, server, raw, mode.http_seconds)
            else:
                pair[1] = load(run, baseline, base_raw, mode.http_seconds)
        rps.append(pair[0].rps)
        base_rps.append(pair[1].rps)
        ratios.append(pair[0].rps / pair[1].rps)
        p99.append(percentile(pair[0].latencies_ms, 99))
        log(f"submit run {r + 1}: {pair[0].rps:.0f} req/s, baseline {pair[1].rps:.0f} req/s")
        if two is not None:
            two_proc = load(run, two, two_raw, mode.http_seconds)
            rps_2proc.append(two_proc.rps)
            scaling_2proc.append(two_proc.rps / pair[0].rps)
            log(
                f"submit run {r + 1}: 2 gunicorn workers {two_proc.rps:.0f} req/s "
                f"(p99 {percentile(two_proc.latencies_ms, 99):.1f} ms), x{scaling_2proc[-1]:.2f}"
            )
    extra = {}
    if rps_2proc:
        extra = {
            "submit_rps_2proc": median(rps_2proc),
            "submit_2proc_scaling": median(scaling_2proc),
        }
    return {
        **extra,
        "submit_rps": median(rps),
        "submit_baseline_rps": median(base_rps),
        "submit_ratio": median(ratios),
        "submit_p99_ms": median(p99),
    }
