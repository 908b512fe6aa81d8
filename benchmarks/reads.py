"""reads: ``GET /@jobs/{uuid}`` and ``GET /@jobs`` pages on a large table (PostgreSQL).

The table is bulk-loaded with ``Run.mode.rows`` finished jobs (generate_series, never the
API). Every load is ``http_connections`` keep-alive clients for ``http_seconds``, with a
JWT, run alternately against nick-jobs and its baseline:

* get_job: random uuids from the table; baseline: the one-view Pyramid app
  (``baseline_http.py``) on the same waitress settings. For reference, the same app's
  view that reads the row with one raw query (``/@rows/{uuid}``): ``get_row_floor_ratio``
  is its rate over the no-query view's, what any view reading one row can reach here, and
  ``get_job_vs_row_floor`` nick-jobs' rate over it.
* list_first / list_deep: ``?b_size=50``, the first page, and the page ``deep`` rows down,
  reached with the API's own cursor.
* list_scaling: the first page's median latency with ``rows`` loaded over that with
  ``small_rows`` loaded.
* get_job_rps_2proc: the get_job load on the same ini served by gunicorn with 2 gthread
  workers (deploy/gunicorn.conf.py), alternated with the one ``pserve`` process;
  ``get_job_2proc_scaling`` is its rate over the one process's, run by run. The load
  generator shares the machine's cores with both.
"""

from __future__ import annotations

import random

from . import httpload
from .harness import Run, Server, Skip, log, median, percentile

NAME = "reads"
SERVICES = {"postgresql"}


def load(run: Run, server: Server, requests: list[bytes], seconds: float) -> httpload.LoadResult:
    result = httpload.run(
        server.port,
        lambda k, i: requests[(k * 7919 + i) % len(requests)],
        connections=run.mode.http_connections,
        duration=seconds,
    )
    bad = result.bad((200,))
    if bad:
        raise RuntimeError(f"{bad} requests failed: {result.statuses} {result.bodies[:1]}")
    return result


def run(run: Run) -> dict[str, float]:
    from nick_jobs.jobs.listing import encode_cursor

    run.need(*SERVICES)
    run.create_database()
    mode = run.mode
    seconds = mode.http_seconds
    run.truncate_jobs()
    run.ensure_rows(mode.small_rows)
    ini = run.nick_ini("reads", broker="redis")
    server = run.serve(ini, "reads-server")
    baseline = run.serve(
        run.baseline_ini("reads-baseline", queue=run.queue("reads_baseline")),
        "reads-baseline-server",
    )
    token = run.token(ini)
    first_page = [httpload.build("GET", "/@jobs?b_size=50", server.port, token)]
    load(run, server, first_page, 1.0)  # warm-up
    small_p50 = [
        percentile(load(run, server, first_page, seconds).latencies_ms, 50)
        for _ in range(mode.repeats)
    ]

    run.ensure_rows(mode.rows)
    with run.db() as conn:
        uuids = [u for (u,) in conn.execute("SELECT uuid FROM jobs ORDER BY random() LIMIT 2000")]
        (max_id,) = conn.execute("SELECT max(id) FROM jobs").fetchone()
    random.shuffle(uuids)
    gets = [httpload.build("GET", f"/@jobs/{u}", server.port, token) for u in uuids]
    base_gets = [httpload.build("GET", f"/@jobs/{u}", baseline.port) for u in uuids]
    row_gets = [httpload.build("GET", f"/@rows/{u}", baseline.port) for u in uuids]
    deep_cursor = encode_cursor(max_id - mode.deep + 1)
    deep_page = [
        httpload.build("GET", f"/@jobs?b_size=50&cursor={deep_cursor}", server.port, token)
    ]
    warm = [(gets, server), (base_gets, baseline), (row_gets, baseline), (deep_page, server)]
    try:
        two = run.serve_gunicorn(run.nick_ini("reads-2proc", broker="redis"), "reads-2proc-server")
    except Skip as exc:
        run.notes.append(f"reads: no get_job_rps_2proc: {exc}")
        two, two_gets = None, []
    else:
        two_gets = [httpload.build("GET", f"/@jobs/{u}", two.port, token) for u in uuids]
        warm.append((two_gets, two))
    for requests, target in warm:
        load(run, target, requests, 1.0)  # warm-up

    rps, base_rps, ratios, get_p99 = [], [], [], []
    row_ratios, vs_row = [], []
    first_p99, first_p50, deep_p99 = [], [], []
    rps_2proc, scaling_2proc = [], []
    sides = ((server, gets), (baseline, base_gets), (baseline, row_gets))
    for r in range(mode.repeats):
        order = (0, 1, 2) if r % 2 == 0 else (2, 1, 0)
        got = {side: load(run, *sides[side], seconds) for side in order}
        rps.append(got[0].rps)
        base_rps.append(got[1].rps)
        ratios.append(got[0].rps / got[1].rps)
        row_ratios.append(got[2].rps / got[1].rps)
        vs_row.append(got[0].rps / got[2].rps)
        get_p99.append(percentile(got[0].latencies_ms, 99))
        first = load(run, server, first_page, seconds)
        first_p99.append(percentile(first.latencies_ms, 99))
        first_p50.append(percentile(first.latencies_ms, 50))
        deep = load(run, server, deep_page, seconds)
        deep_p99.append(percentile(deep.latencies_ms, 99))
        log(
            f"reads run {r + 1}: get {got[0].rps:.0f} req/s (p99 {get_p99[-1]:.1f} ms), "
            f"baseline {got[1].rps:.0f} req/s, one-query view {got[2].rps:.0f} req/s; "
            f"list first p99 {first_p99[-1]:.1f} ms "
            f"({first.rps:.0f} req/s), deep p99 {deep_p99[-1]:.1f} ms ({deep.rps:.0f} req/s)"
        )
        if two is not None:
            pair = load(run, two, two_gets, seconds)
            rps_2proc.append(pair.rps)
            scaling_2proc.append(pair.rps / got[0].rps)
            log(
                f"reads run {r + 1}: get from 2 gunicorn workers {pair.rps:.0f} req/s "
                f"(p99 {percentile(pair.latencies_ms, 99):.1f} ms), x{scaling_2proc[-1]:.2f}"
            )
    two_proc = {}
    if rps_2proc:
        two_proc = {
            "get_job_rps_2proc": median(rps_2proc),
            "get_job_2proc_scaling": median(scaling_2proc),
        }
    return {
        **two_proc,
        "get_job_rps": median(rps),
        "get_job_baseline_rps": median(base_rps),
        "get_job_ratio": median(ratios),
        "get_job_p99_ms": median(get_p99),
        "get_row_floor_ratio": median(row_ratios),
        "get_job_vs_row_floor": median(vs_row),
        "list_first_p99_ms": median(first_p99),
        "list_deep_p99_ms": median(deep_p99),
        "list_deep_vs_first": median(deep_p99) / median(first_p99),
        "list_scaling": median(first_p50) / median(small_p50),
    }
