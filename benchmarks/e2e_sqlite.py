"""e2e_sqlite: the embedded default, as ``make run`` serves it (no PostgreSQL, no broker).

development.ini as shipped (SQLite in WAL mode, the stub broker, 4 embedded worker
threads in the API process, its waitress settings and logging), only on its own SQLite
file and port. Same HTTP load as ``e2e``; no baseline (the target is absolute).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from pathlib import Path

from . import e2e
from .harness import ADMIN, PASSWORD, Run, log, median

NAME = "e2e_sqlite"
SERVICES: set[str] = set()


def _query(path: Path, sql: str):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _epoch(value: str) -> float:
    return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC).timestamp()


def once(run: Run, path: Path, server, token: str, n: int) -> float:
    conn = sqlite3.connect(path, timeout=10)
    with conn:
        conn.execute("DELETE FROM jobs")
        conn.execute("DELETE FROM job_history")
    conn.close()
    result = e2e.submit_all(server, token, n, run.mode.clients)
    deadline = time.monotonic() + max(120, n / 2)
    done_sql = "SELECT count(*) FROM jobs WHERE status IN ('completed', 'failed', 'aborted')"
    while _query(path, done_sql)[0][0] < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{n} SQLite jobs did not finish in time")
        time.sleep(0.05)
    ((last,),) = _query(path, "SELECT max(finished) FROM jobs")
    statuses = dict(_query(path, "SELECT status, count(*) FROM jobs GROUP BY status"))
    e2e.check_statuses(statuses, n)
    return n / (_epoch(last) - result.started)


def run(run: Run) -> dict[str, float]:
    path = run.run_dir / "jobs.sqlite"
    ini = run.nick_ini(
        "e2e-sqlite",
        broker="stub",
        base="development.ini",
        app={"sqlalchemy.url": f"sqlite:///{path}"},
    )
    run.cli("migrate", str(ini))
    run.cli("users", "add", str(ini), "bench", "--password", PASSWORD, "--role", ADMIN)
    server = run.serve(ini, "e2e-sqlite-server")
    token = run.token(ini)
    once(run, path, server, token, 50)
    rates = []
    for r in range(run.mode.repeats):
        rates.append(once(run, path, server, token, run.mode.e2e_sqlite_n))
        log(f"e2e_sqlite run {r + 1}: {rates[-1]:.0f}/s")
    return {"e2e_sqlite_jobs_per_s": median(rates)}
