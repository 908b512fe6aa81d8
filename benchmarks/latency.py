"""latency: submit → started with an idle worker, on Redis and on RabbitMQ.

One client POSTs a dummy job, waits ``latency_gap_s`` (long enough for an idle Redis
consumer to back off to its full poll interval, ``nick_jobs.worker_timeout_ms``), and
again. The latency of a job is its ``started`` timestamp (milliseconds, as stored)
minus the client's clock just before it sent the request; both clocks are this machine's.
Two parts of it are reported beside it: the POST's own round trip, and ``created`` (set
in the request before the INSERT) to ``started``, which holds commit, send and pickup.
"""

from __future__ import annotations

import configparser
import json
import time
from pathlib import Path

from . import e2e, httpload
from .harness import Run, log, median

NAME = "latency"
SERVICES = {"postgresql", "redis", "rabbitmq"}


def waitress_threads(ini: Path) -> int:
    """The ``threads`` of the served ini's ``[server:main]`` (waitress's default: 4)."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ini)
    return parser.getint("server:main", "threads", fallback=4)


def measure(run: Run, broker: str) -> dict[str, float]:
    run.need("postgresql", broker)
    ini = run.nick_ini(f"latency-{broker}", broker=broker)
    server = run.serve(ini, f"latency-{broker}-server")
    worker = run.worker(ini, f"latency-{broker}-worker")
    token = run.token(ini)
    raw = httpload.build("POST", "/@jobs", server.port, token, e2e.BODY)
    run.truncate_jobs()
    # Warm-up from as many clients as waitress has threads: each thread opens its own
    # broker connection on its first send, which is start-up, not latency.
    clients = waitress_threads(server.ini)
    warmup = clients * 4
    httpload.run(server.port, lambda k, i: raw, connections=clients, count=warmup)
    run.wait_finished(warmup, timeout=60)
    conn = httpload.Connection(server.port)
    sent: list[tuple[float, str]] = []
    round_trips: list[float] = []
    for _ in range(run.mode.latency_samples):
        time.sleep(run.mode.latency_gap_s)
        t0 = time.time()
        status, body = conn.request(raw)
        if status != 201:
            raise RuntimeError(f"submit answered {status}: {body[:200]!r}")
        round_trips.append((time.time() - t0) * 1000)
        sent.append((t0, json.loads(body)["uuid"]))
    conn.close()
    run.wait_finished(warmup + len(sent), timeout=60)
    with run.db() as db:
        rows = db.execute(
            "SELECT uuid, extract(epoch FROM started), extract(epoch FROM started - created) "
            "FROM jobs WHERE uuid = ANY(%s)",
            ([u for _, u in sent],),
        ).fetchall()
    run.stop(worker)
    run.stop(server.proc)
    started = {u: float(s) for u, s, _ in rows}
    queued = [float(q) * 1000 for _, _, q in rows]
    latencies = [(started[u] - t0) * 1000 for t0, u in sent]
    log(
        f"{broker}: submit->started p50 {median(latencies):.1f} ms (max {max(latencies):.1f}); "
        f"POST round trip p50 {median(round_trips):.1f} ms; created->started p50 "
        f"{median(queued):.1f} ms"
    )
    return {
        f"start_latency_p50_ms_{broker}": median(latencies),
        f"start_latency_post_p50_ms_{broker}": median(round_trips),
        f"start_latency_created_p50_ms_{broker}": median(queued),
    }


def run(run: Run) -> dict[str, float]:
    run.need("postgresql")
    run.create_database()
    out: dict[str, float] = {}
    for broker in ("redis", "rabbitmq"):
        if run.services.get(broker):
            run.notes.append(f"start_latency_p50_ms_{broker} skipped: {run.services[broker]}")
            continue
        out.update(measure(run, broker))
    return out
