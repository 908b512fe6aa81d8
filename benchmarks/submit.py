"""submit: ``POST /@jobs`` alone, with no worker consuming (PostgreSQL + Redis).

Closed-loop keep-alive clients with a JWT submit dummy jobs for ``http_seconds``; their
messages go to a queue nobody consumes. Baseline: the Pyramid app of ``baseline_http.py``
on the same waitress settings, whose POST view parses the JSON body, inserts the row with
raw psycopg 3 and sends the Dramatiq message.
"""

from __future__ import annotations

from . import e2e, httpload
from .harness import Run, Server, log, median, percentile

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
    load(run, server, raw, 1.0)
    load(run, baseline, base_raw, 1.0)
    rps, base_rps, ratios, p99 = [], [], [], []
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
    return {
        "submit_rps": median(rps),
        "submit_baseline_rps": median(base_rps),
        "submit_ratio": median(ratios),
        "submit_p99_ms": median(p99),
    }
