"""prune: how long ``POST /@jobs`` can take while the built-in prune job runs.

On the bulk-loaded table (``prune_fraction`` of it finished 90 days ago), a worker runs
``prune`` (days=30, its default batch of 1,000 rows per transaction) while
``prune_clients`` closed-loop clients submit dummy jobs (which the same worker runs).
``prune_max_submit_ms`` is the slowest submit while the prune job is running; the same
load for ``http_seconds`` before the prune gives ``prune_control_max_submit_ms``.
"""

from __future__ import annotations

import json
import threading
import time

from . import e2e, httpload
from .harness import Run, log, percentile

NAME = "prune"
SERVICES = {"postgresql", "redis"}
PRUNE = json.dumps({"params": {"action": "prune", "days": 30}}).encode()


def run(run: Run) -> dict[str, float]:
    run.need(*SERVICES)
    run.create_database()
    mode = run.mode
    run.ensure_rows(mode.rows)
    with run.db() as conn:
        (old,) = conn.execute(
            "SELECT count(*) FROM jobs WHERE status IN ('completed', 'failed', 'aborted') "
            "AND finished < now() - interval '30 days'"
        ).fetchone()
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
        deadline = time.monotonic() + mode.prune_timeout_s
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
            f"the prune job did not complete in {mode.prune_timeout_s}s: {outcome or 'running'}"
        )
    deleted = outcome["result"]["deleted"]
    log(
        f"prune deleted {deleted} of {old} old rows in {outcome['seconds']:.1f}s; submits "
        f"during it: {during.count}, max {max(during.latencies_ms):.0f} ms, "
        f"p99 {percentile(during.latencies_ms, 99):.0f} ms "
        f"(before it: max {max(control.latencies_ms):.0f} ms)"
    )
    return {
        "prune_max_submit_ms": max(during.latencies_ms),
        "prune_p99_submit_ms": percentile(during.latencies_ms, 99),
        "prune_control_max_submit_ms": max(control.latencies_ms),
        "prune_rows_per_s": deleted / outcome["seconds"],
    }
