"""consumers: remote jobs run by consumer processes over HTTP, and how fast a waiting
claim answers (PostgreSQL; remote jobs get no broker message).

A remote action ``bench_noop`` (``{"params": {"type": "object"}}``) is declared with
``PUT /@job-actions/bench_noop`` on one ``pserve`` process.

consumer_jobs_per_s: ``consumer_n`` of its jobs are submitted in bulk (arrays of 500,
not timed), then 4 consumer processes (``consumer_client.py``: ``http.client``, one
keep-alive connection each) drain them, each loop claiming up to 50
(``POST /@jobs/@claim``) and completing them with one batch complete
(``POST /@jobs/@complete``). The
figure is the jobs over first ``started`` to last ``finished`` (the rows' timestamps, so
the consumers' start-up is not counted), as ``worker_jobs_per_s`` is for a Python
worker; run.py puts the two side by side when both ran.

claim_latency: one consumer waits in a claim (``wait`` 10, ``limit`` 1); 0.15-0.25 s
later (random, so that the submit falls anywhere in a claim's polling) a job is
submitted with a plain ``POST /@jobs``; the latency is from the submit's answer to the
claim's answer, both on this process's clock. Baseline: a claim with no ``wait`` sent
right after a submit's answer, the same interval: the cost of one look and its round
trip, with no polling. Each claimed job is then completed. Then the same with the jobs
submitted through a second API process (``claim_latency_other_*``), whose ``NOTIFY``
the claim's process hears on its ``LISTEN`` connection (nick_jobs/web/claim_bell.py).

Where a job's time goes: the API process's CPU over each drain, and a claim of 50, its
completes one by one and another claim of 50 completed by one batch complete, run
through the WSGI app in this process (no server, no HTTP), with the SQL statements and
the CPU of each.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time

from . import httpload
from .harness import ROOT, Run, Server, cpu_seconds, log, median, percentile

NAME = "consumers"
SERVICES = {"postgresql", "redis"}
ACTION = "bench_noop"
CONSUMERS = 4
PY_CONCURRENCY = 16
LIMIT = 50
BATCH = 500
SUBMIT = json.dumps({"params": {"action": ACTION}}).encode()


def declare(server: Server, token: str) -> None:
    conn = httpload.Connection(server.port)
    body = json.dumps({"params": {"type": "object"}}).encode()
    status, answer = conn.request(
        httpload.build("PUT", f"/@job-actions/{ACTION}", server.port, token, body)
    )
    conn.close()
    if status not in (200, 201):
        raise RuntimeError(f"PUT /@job-actions/{ACTION} answered {status}: {answer[:200]!r}")


def presubmit(server: Server, token: str, n: int) -> None:
    if n % BATCH:
        raise ValueError(f"submit a multiple of {BATCH} jobs, not {n}")
    bodies = json.dumps([{"params": {"action": ACTION}}] * BATCH).encode()
    raw = httpload.build("POST", "/@jobs", server.port, token, bodies)
    requests = n // BATCH
    result = httpload.run(server.port, lambda k, i: raw, connections=2, count=requests)
    bad = result.bad((201,))
    if bad:
        raise RuntimeError(f"{bad} bulk submits failed: {result.statuses} {result.bodies[:1]}")


def drain_once(run: Run, server: Server, token: str, n: int) -> tuple[float, float, list[dict]]:
    """(jobs/s, the API process's CPU ms a job, the consumers' summaries)."""
    run.truncate_jobs()
    presubmit(server, token, n)
    cpu0 = cpu_seconds(server.proc.pid)
    script = str(ROOT / "benchmarks" / "consumer_client.py")
    args = ["--port", str(server.port), "--token", token, "--action", ACTION]
    procs = [
        run.spawn(f"consumer-{k}", [sys.executable, script, *args, "--limit", str(LIMIT)])
        for k in range(CONSUMERS)
    ]
    deadline = time.monotonic() + max(120, n / 20)
    for proc in procs:
        proc.wait(timeout=max(1, deadline - time.monotonic()))
        run.stop(proc)
    cpu_ms = (cpu_seconds(server.proc.pid) - cpu0) * 1000 / n
    summaries = []
    for k, proc in enumerate(procs):
        lines = (run.run_dir / f"consumer-{k}.log").read_text().strip().splitlines()
        summary = json.loads(lines[-1]) if lines else {"errors": ["no output"]}
        if proc.returncode != 0 or summary.get("errors"):
            raise RuntimeError(f"consumer {k} exited with {proc.returncode}: {summary}")
        summaries.append(summary)
    first, last, _, statuses = run.finished_span()
    if statuses.get("completed") != n:
        raise RuntimeError(f"expected {n} completed jobs, found {statuses}")
    return n / (last - first), cpu_ms, summaries


def python_drain_once(run: Run, server: Server, token: str, n: int) -> tuple[float, dict]:
    """(jobs/s, the consumer's summary) of one ``python_consumer.py`` process."""
    run.truncate_jobs()
    presubmit(server, token, n)
    script = str(ROOT / "benchmarks" / "python_consumer.py")
    args = ["--url", f"http://127.0.0.1:{server.port}", "--token", token, "--action", ACTION]
    proc = run.spawn(
        "python-consumer",
        [sys.executable, script, *args, "--jobs", str(n), "--concurrency", str(PY_CONCURRENCY)],
    )
    proc.wait(timeout=max(120, n / 20))
    run.stop(proc)
    lines = (run.run_dir / "python-consumer.log").read_text().strip().splitlines()
    summary = json.loads(lines[-1]) if lines else {"ended": {}}
    if proc.returncode != 0:
        raise RuntimeError(f"the Python consumer exited with {proc.returncode}: {summary}")
    first, last, _, statuses = run.finished_span()
    if statuses.get("completed") != n:
        raise RuntimeError(f"expected {n} completed jobs, found {statuses}")
    return n / (last - first), summary


def _complete(conn: httpload.Connection, port: int, token: str, job: dict) -> None:
    body = json.dumps({"lease": job["lease"]["id"], "result": {}}).encode()
    raw = httpload.build("POST", f"/@jobs/{job['uuid']}/complete", port, token, body)
    status, answer = conn.request(raw)
    if status != 204:
        raise RuntimeError(f"complete answered {status}: {answer[:200]!r}")


def _claimed(status: int, body: bytes, uuid: str) -> dict:
    jobs = json.loads(body) if status == 200 else None
    if not jobs or jobs[0]["uuid"] != uuid:
        raise RuntimeError(f"the claim answered {status} {body[:200]!r}, not job {uuid}")
    return jobs[0]


def _wait_in_claim(conn: httpload.Connection, raw: bytes, answer: dict) -> None:
    answer["reply"] = conn.request(raw)
    answer["at"] = time.perf_counter()


def claim_latency(
    run: Run, server: Server, token: str, samples: int, submit_to: Server | None = None
) -> dict[str, float]:
    """The waiting claim on ``server``; the jobs submitted to it, or to ``submit_to``,
    another process (then with no baseline: the figures are ``claim_latency_other_*``)."""
    run.truncate_jobs()
    port = server.port
    other = submit_to is not None
    submit_port = submit_to.port if submit_to is not None else port

    def claim(wait: float) -> bytes:
        body = json.dumps({"actions": [ACTION], "limit": 1, "wait": wait}).encode()
        return httpload.build("POST", "/@jobs/@claim", port, token, body)

    waiting_raw, now_raw = claim(10), claim(0)
    submit_raw = httpload.build("POST", "/@jobs", submit_port, token, SUBMIT)
    waiter, client = httpload.Connection(port), httpload.Connection(submit_port)
    rng = random.Random(7)
    waited: list[float] = []
    from_post: list[float] = []
    direct: list[float] = []
    uuids: list[str] = []
    warmup = 3
    for i in range(samples + warmup):
        answer: dict = {}
        thread = threading.Thread(target=_wait_in_claim, args=(waiter, waiting_raw, answer))
        thread.start()
        # The claim has looked once and found nothing by then (a look takes a few ms);
        # the random gap puts the submit anywhere within its 50 ms polling.
        time.sleep(rng.uniform(0.15, 0.25))
        sending = time.perf_counter()
        status, body = client.request(submit_raw)
        submitted = time.perf_counter()
        if status != 201:
            raise RuntimeError(f"submit answered {status}: {body[:200]!r}")
        uuid = json.loads(body)["uuid"]
        thread.join(timeout=15)
        if "at" not in answer:
            raise RuntimeError("the waiting claim did not answer in 15 s")
        job = _claimed(*answer["reply"], uuid)
        _complete(client, submit_port, token, job)
        if i >= warmup:
            uuids.append(job["uuid"])
            waited.append((answer["at"] - submitted) * 1000)
            from_post.append((answer["at"] - sending) * 1000)
        if other:
            continue
        # The baseline: a claim sent at once after the submit's answer, no polling.
        status, body = client.request(submit_raw)
        submitted_direct = time.perf_counter()
        uuid = json.loads(body)["uuid"]
        reply = client.request(now_raw)
        answered_direct = time.perf_counter()
        _complete(client, port, token, _claimed(*reply, uuid))
        if i >= warmup:
            direct.append((answered_direct - submitted_direct) * 1000)
    waiter.close()
    client.close()
    with run.db() as db:
        # In the server: the submit's INSERT (created is set just before it) to the claim's
        # UPDATE (started), what the polling adds and the API's reading of the row.
        rows = db.execute(
            "SELECT extract(epoch FROM started - created) * 1000 FROM jobs WHERE uuid = ANY(%s)",
            (uuids,),
        ).fetchall()
    in_server = [float(r[0]) for r in rows]
    if other:
        log(
            f"claim latency, the job submitted through another process: p50 "
            f"{median(waited):.1f} ms, p99 {percentile(waited, 99):.1f} ms; created -> "
            f"started p50 {median(in_server):.1f} ms, p99 {percentile(in_server, 99):.1f} ms"
        )
        return {
            "claim_latency_other_p50_ms": median(waited),
            "claim_latency_other_p99_ms": percentile(waited, 99),
            "claim_latency_other_created_started_p50_ms": median(in_server),
        }
    log(
        f"claim latency: waiting claim p50 {median(waited):.1f} ms, p99 "
        f"{percentile(waited, 99):.1f} ms (min {min(waited):.1f}, max {max(waited):.1f}); "
        f"claim sent after the submit p50 {median(direct):.1f} ms, p99 "
        f"{percentile(direct, 99):.1f} ms; from the submit's request p50 "
        f"{median(from_post):.1f} ms; created -> started p50 {median(in_server):.1f} ms, p99 "
        f"{percentile(in_server, 99):.1f} ms"
    )
    return {
        "claim_latency_p50_ms": median(waited),
        "claim_latency_p99_ms": percentile(waited, 99),
        "claim_latency_min_ms": min(waited),
        "claim_latency_max_ms": max(waited),
        "claim_latency_baseline_p50_ms": median(direct),
        "claim_latency_baseline_p99_ms": percentile(direct, 99),
        "claim_latency_from_post_p50_ms": median(from_post),
        "claim_latency_created_started_p50_ms": median(in_server),
        "claim_latency_created_started_p99_ms": percentile(in_server, 99),
    }


def in_process(run: Run, ini, token: str, n: int = LIMIT) -> dict[str, float]:
    """A claim of ``n`` and its ``n`` completes, then a claim of ``n`` and one batch
    complete of them, through the WSGI app in this process, with no server or HTTP: the
    SQL statements each runs and this thread's CPU for each."""
    import sqlalchemy as sa
    from webob import Request

    app = run.app(ini)
    engine = app.registry["nick_jobs.engine"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    def call(path: str, body: object) -> tuple[object, float, int]:
        request = Request.blank(
            path, method="POST", headers=headers, body=json.dumps(body).encode()
        )
        before, c0 = len(statements), time.thread_time()
        response = request.get_response(app)
        cpu = (time.thread_time() - c0) * 1000
        if response.status_code >= 300:
            raise RuntimeError(f"{path} answered {response.status}: {response.body[:200]!r}")
        return (response.json if response.body else None), cpu, len(statements) - before

    run.truncate_jobs()
    call("/@jobs", [{"params": {"action": ACTION}}] * n)
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        jobs, claim_cpu, claim_sql = call("/@jobs/@claim", {"actions": [ACTION], "limit": n})
        complete_cpu, complete_sql = [], []
        for job in jobs:
            _, cpu, sql = call(
                f"/@jobs/{job['uuid']}/complete", {"lease": job["lease"]["id"], "result": {}}
            )
            complete_cpu.append(cpu)
            complete_sql.append(sql)
        last = [" ".join(text.split())[:90] for text in statements[-complete_sql[-1] :]]
        call("/@jobs", [{"params": {"action": ACTION}}] * n)
        jobs, _, _ = call("/@jobs/@claim", {"actions": [ACTION], "limit": n})
        batch = [{"uuid": job["uuid"], "lease": job["lease"]["id"], "result": {}} for job in jobs]
        outcomes, batch_cpu, batch_sql = call("/@jobs/@complete", batch)
        batch_last = [" ".join(text.split())[:90] for text in statements[-batch_sql:]]
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    if sum(1 for outcome in outcomes if outcome.get("completed")) != n:
        raise RuntimeError(f"the batch complete did not complete all {n} jobs: {outcomes[:3]}")
    out = {
        "consumer_claim_in_process_cpu_ms": claim_cpu,
        "consumer_claim_statements": claim_sql,
        "consumer_complete_in_process_cpu_ms": median(complete_cpu),
        "consumer_complete_statements": median(complete_sql),
        "consumer_complete_batch_in_process_cpu_ms": batch_cpu,
        "consumer_complete_batch_statements": batch_sql,
    }
    log(
        f"in this process, no HTTP: {out}; a complete's statements: {last}; a batch "
        f"complete's: {batch_last}"
    )
    return out


def run(run: Run) -> dict[str, float]:
    run.need(*SERVICES)
    run.create_database()
    mode = run.mode
    # Redis is the ini's broker, though remote jobs send it nothing.
    ini = run.nick_ini("consumers", broker="redis", queue=run.queue("consumers_unused"))
    server = run.serve(ini, "consumers-server")
    token = run.token(ini)
    declare(server, token)
    drain_once(run, server, token, min(1_000, mode.consumer_n // 4))  # warm-up
    rates: list[float] = []
    cpus: list[float] = []
    for r in range(mode.repeats):
        rate, cpu_ms, summaries = drain_once(run, server, token, mode.consumer_n)
        claims = sum(s["claims"] for s in summaries)
        claim_ms = sum(s["claim_s"] for s in summaries) * 1000 / claims
        complete_ms = sum(s["complete_s"] for s in summaries) * 1000 / mode.consumer_n
        log(
            f"consumers run {r + 1} ({mode.consumer_n:,} jobs, {CONSUMERS} consumers): "
            f"{rate:,.0f} jobs/s; a claim of up to {LIMIT} took {claim_ms:.1f} ms, its "
            f"batch complete {complete_ms:.2f} ms a job (means, per consumer); the API "
            "process spent "
            f"{cpu_ms:.2f} ms of CPU a job; load average {os.getloadavg()[0]:.1f}"
        )
        rates.append(rate)
        cpus.append(cpu_ms)
    py_rates: list[float] = []
    py_n = mode.consumer_n // 4
    for r in range(mode.repeats):
        rate, summary = python_drain_once(run, server, token, py_n)
        requests = sum(summary["requests"].values())
        log(
            f"Python consumer run {r + 1} ({py_n:,} jobs, concurrency {PY_CONCURRENCY}): "
            f"{rate:,.0f} jobs/s, {requests / py_n:.2f} requests a job "
            f"({summary['requests']}); load average {os.getloadavg()[0]:.1f}"
        )
        py_rates.append(rate)
    latency = claim_latency(run, server, token, mode.claim_samples)
    # Another API process on the same database: a job submitted there reaches the claim's
    # process by NOTIFY.
    other_ini = run.nick_ini("consumers-other", broker="redis", queue=run.queue("consumers_unused"))
    other = run.serve(other_ini, "consumers-other-server")
    latency.update(claim_latency(run, server, token, mode.claim_samples, submit_to=other))
    run.stop(other.proc)
    parts = in_process(run, ini, token)
    return {
        "consumer_jobs_per_s": median(rates),
        "consumer_api_cpu_ms_per_job": median(cpus),
        "consumer_python_jobs_per_s": median(py_rates),
        **latency,
        **parts,
    }
