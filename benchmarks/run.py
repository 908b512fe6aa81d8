"""Run the nick-jobs benchmarks and their baselines; print the table, write the results.

    python benchmarks/run.py            # make bench: every benchmark, full size
    python benchmarks/run.py --quick    # make bench-quick: smaller, under 3 minutes
    python benchmarks/run.py --only reads,submit

A complete run writes benchmarks/results.json and the results section of
docs/benchmarks.md; a run with ``--only`` writes only under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import (
    bulk,
    consumers,
    e2e,
    e2e_rabbitmq,
    e2e_sqlite,
    harness,
    latency,
    prune,
    reads,
    sse,
    submit,
    worker,
)
from benchmarks.harness import MODES, ROOT, Run, Skip, ensure_services, log

BENCHMARKS = [
    *(e2e, e2e_rabbitmq, e2e_sqlite, worker, latency, reads, submit, sse, prune),
    *(bulk, consumers),
]

# metric: (unit, comparison, target, baseline metric)
METRICS: dict[str, tuple[str, str | None, float | None, str | None]] = {
    "e2e_jobs_per_s": ("jobs/s", ">=", 400, "e2e_baseline_jobs_per_s"),
    "e2e_ratio": ("ratio", ">=", 0.5, None),
    "e2e_submit_rps": ("req/s", None, None, None),
    "e2e_2proc_jobs_per_s": ("jobs/s", None, None, None),
    "e2e_2proc_ratio": ("ratio", None, None, None),
    "worker_jobs_per_s": ("jobs/s", None, None, "worker_baseline_jobs_per_s"),
    "worker_ratio": ("ratio", ">=", 0.7, None),
    "e2e_rabbitmq_jobs_per_s": ("jobs/s", ">=", 400, "e2e_rabbitmq_baseline_jobs_per_s"),
    "e2e_sqlite_jobs_per_s": ("jobs/s", ">=", 150, None),
    "start_latency_p50_ms_redis": ("ms", "<=", 50, None),
    "start_latency_p50_ms_rabbitmq": ("ms", "<=", 10, None),
    "start_latency_post_p50_ms_redis": ("ms", None, None, None),
    "start_latency_created_p50_ms_redis": ("ms", None, None, None),
    "start_latency_post_p50_ms_rabbitmq": ("ms", None, None, None),
    "start_latency_created_p50_ms_rabbitmq": ("ms", None, None, None),
    "get_job_rps": ("req/s", None, None, "get_job_baseline_rps"),
    "get_job_ratio": ("ratio", ">=", 0.3, None),
    "get_job_p99_ms": ("ms", "<=", 20, None),
    "get_row_floor_ratio": ("ratio", None, None, None),
    "get_job_vs_row_floor": ("ratio", None, None, None),
    "get_job_rps_2proc": ("req/s", None, None, None),
    "get_job_2proc_scaling": ("ratio", None, None, None),
    "list_first_p99_ms": ("ms", "<=", 30, None),
    "list_deep_p99_ms": ("ms", "<=", 30, None),
    "list_deep_vs_first": ("ratio", "<=", 1.5, None),
    "list_scaling": ("ratio", "<=", 1.5, None),
    "submit_rps": ("req/s", None, None, "submit_baseline_rps"),
    "submit_ratio": ("ratio", ">=", 0.3, None),
    "submit_p99_ms": ("ms", None, None, None),
    "submit_rps_2proc": ("req/s", None, None, None),
    "submit_2proc_scaling": ("ratio", None, None, None),
    "sse_streams": ("streams", None, None, None),
    "sse_get_p99_ms": ("ms", "<=", 50, "sse_get_baseline_p99_ms"),
    "sse_event_p95_ms": ("ms", "<=", 250, None),
    "sse_event_p50_ms": ("ms", None, None, None),
    "sse_api_rss_mb": ("MB", "<=", 200, None),
    "worker_rss_growth_pct": ("%", "<=", 10, None),
    "prune_max_submit_ms": ("ms", "<=", 100, "prune_control_max_submit_ms"),
    "prune_p99_submit_ms": ("ms", None, None, None),
    "prune_rows_per_s": ("rows/s", None, None, None),
    "prune_longest_batch_ms": ("ms", None, None, None),
    "bulk_submit_jobs_per_s": ("jobs/s", ">=", 5000, "bulk_submit_baseline_jobs_per_s"),
    "bulk_submit_ratio": ("ratio", ">=", 0.5, None),
    "bulk_one_request_ms": ("ms", None, None, "bulk_part_raw_ms"),
    "bulk_one_request_cpu_ms": ("ms", None, None, None),
    # The worker benchmark's figure is beside it when both ran in the same run.
    "consumer_jobs_per_s": ("jobs/s", ">=", 500, "worker_jobs_per_s"),
    "consumer_vs_worker": ("ratio", None, None, None),
    # One process of the Python client's Consumer, beside the 4 raw consumer processes.
    "consumer_python_jobs_per_s": ("jobs/s", None, None, "consumer_jobs_per_s"),
    "claim_latency_p50_ms": ("ms", "<=", 20, "claim_latency_baseline_p50_ms"),
    "claim_latency_p99_ms": ("ms", None, None, "claim_latency_baseline_p99_ms"),
    "claim_latency_other_p50_ms": ("ms", None, None, None),
    "claim_latency_other_p99_ms": ("ms", None, None, None),
}
BASELINE_METRICS = {m[3] for m in METRICS.values() if m[3]}

DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def verdict(metric: str, value: float | None) -> str:
    _, op, target, _ = METRICS[metric]
    if op is None or value is None:
        return "—"
    met = value >= target if op == ">=" else value <= target
    return "met" if met else "**missed**"


def table(metrics: dict[str, float]) -> str:
    rows = ["| Metric | nick-jobs | Baseline | Target | Result |", "|---|---:|---:|---|---|"]
    for metric, (unit, op, target, base) in METRICS.items():
        if metric not in metrics:
            continue
        value = metrics[metric]
        goal = f"{op} {fmt(target)}" if op else "—"
        rows.append(
            f"| `{metric}` ({unit}) | {fmt(value)} | {fmt(metrics.get(base)) if base else '—'} "
            f"| {goal} | {verdict(metric, value)} |"
        )
    return "\n".join(rows)


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).stdout.strip()
    except OSError:
        return ""


def machine(run: Run) -> dict[str, object]:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    info: dict[str, object] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
    }
    if not run.services.get("postgresql"):
        try:
            with run.admin() as conn:
                info["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
        except Exception as exc:
            info["postgresql"] = f"unknown ({exc})"
    if not run.services.get("redis"):
        try:
            import redis

            info["redis"] = redis.Redis.from_url(harness.REDIS_URL).info("server")["redis_version"]
        except Exception as exc:
            info["redis"] = f"unknown ({exc})"
    if not run.services.get("rabbitmq"):
        try:
            import pika

            connection = pika.BlockingConnection(pika.URLParameters(harness.AMQP_URL))
            props = connection._impl.server_properties
            version = props.get("version", "")
            info["rabbitmq"] = version.decode() if isinstance(version, bytes) else str(version)
            connection.close()
        except Exception as exc:
            info["rabbitmq"] = f"unknown ({exc})"
    return info


def commit() -> dict[str, object]:
    return {
        "commit": _run(["git", "rev-parse", "HEAD"]) or "unknown",
        "dirty": bool(_run(["git", "status", "--porcelain", "--untracked-files=no"])),
    }


def write_doc(text: str) -> None:
    if DOC.exists() and START in DOC.read_text():
        current = DOC.read_text()
        pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
        DOC.write_text(pattern.sub(lambda _: f"{START}\n{text}\n{END}", current))
    else:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text(f"# Benchmarks\n\n{START}\n{text}\n{END}\n")


def results_section(results: dict, run: Run, elapsed: float) -> str:
    m = results["machine"]
    mode = run.mode
    lines = [
        f"Run: **{results['date']}**, `make bench{'-quick' if mode.name == 'quick' else ''}` "
        f"({mode.name}), commit `{results['commit'][:12]}`"
        f"{' + uncommitted changes' if results['dirty'] else ''}, {elapsed:.0f} s in all.",
        f"Machine: {m['cores']} x {m['cpu']}, {m['memory_gib']} GiB, {m['os']}, Python "
        f"{m['python']}, PostgreSQL {m.get('postgresql', '—')}, Redis {m.get('redis', '—')}, "
        f"RabbitMQ {m.get('rabbitmq', '—')}. Load average before the run: "
        f"{results['load_average_before']}.",
        f"Sizes: {results['parameters_text']}.",
        "",
        table(results),
    ]
    if results.get("skipped") or results.get("failed"):
        lines.append("")
        for name, reason in {**results.get("skipped", {}), **results.get("failed", {})}.items():
            lines.append(f"* `{name}` did not run: {reason}")
    lines += [
        "",
        "Baseline column: the raw psycopg + Dramatiq pipeline (e2e, worker), the one-view "
        "Pyramid app (get_job; its POST view with a raw INSERT + send for submit), and for "
        "`prune_max_submit_ms` the same submit load before the prune started; for "
        "`sse_get_p99_ms`, the same `GET` load on the same process with no stream open; "
        "for `bulk_submit_jobs_per_s`, raw multi-row INSERTs of 500 and their Dramatiq sends "
        "(`bulk_one_request_ms`: the same parts, one request's worth); for "
        "`consumer_jobs_per_s`, `worker_jobs_per_s` of the same run; for "
        "`consumer_python_jobs_per_s` (one Python `Consumer` process), the 4 raw consumer "
        "processes' `consumer_jobs_per_s`; for the claim latency, "
        "a claim sent right after the submit's answer, with no wait.",
    ]
    return "\n".join(lines)


def parameters_text(mode: harness.Mode) -> str:
    return (
        f"{mode.repeats} alternated run(s) per figure; e2e N={mode.e2e_n:,} (RabbitMQ "
        f"{mode.e2e_rabbitmq_n:,}, SQLite {mode.e2e_sqlite_n:,}) from {mode.clients} clients; "
        f"worker drain: a first run of {mode.rss_n:,} jobs (RSS after {mode.rss_n // 10:,} vs "
        f"{mode.rss_n:,}), then N={mode.worker_n:,}; "
        f"{mode.latency_samples} latency samples {mode.latency_gap_s} s apart; "
        f"reads on {mode.rows:,} rows (list_scaling {mode.rows:,} vs {mode.small_rows:,}, "
        f"deep page {mode.deep:,} rows down), {mode.http_connections} connections x "
        f"{mode.http_seconds:g} s per HTTP run; prune of {int(mode.rows * mode.prune_fraction):,} "
        f"rows with {mode.prune_clients} submitting clients; bulk: {mode.bulk_requests} "
        f"submits of 500 from {mode.clients} clients; consumers: {mode.consumer_n:,} remote jobs "
        f"by 4 consumer processes, {mode.claim_samples} waiting claims"
    )


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    names = [b.NAME for b in BENCHMARKS]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller and fewer runs (<3 min)")
    parser.add_argument("--only", help=f"comma-separated benchmarks to run, of: {', '.join(names)}")
    args = parser.parse_args(argv)
    selected = BENCHMARKS
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = set(wanted) - set(names)
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; use {names}")
        selected = [b for b in BENCHMARKS if b.NAME in wanted]
    mode = MODES["quick" if args.quick else "full"]
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = ROOT / "benchmarks" / "results" / f"{stamp}-{mode.name}"
    run_dir.mkdir(parents=True, exist_ok=True)
    harness.LOG_FILE = run_dir / "bench.log"

    # SIGTERM (a CI timeout, a supervisor) cleans up like Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    services = ensure_services(set().union(*(b.SERVICES for b in selected)))
    run = Run(mode=mode, run_dir=run_dir, services=services)
    log(f"{mode.name} run {run.tag}: {', '.join(b.NAME for b in selected)}; logs in {run_dir}")
    metrics: dict[str, float] = {}
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    try:
        for bench in selected:
            with harness.step(bench.NAME):
                try:
                    metrics.update({k: v for k, v in bench.run(run).items() if v is not None})
                except Skip as exc:
                    skipped[bench.NAME] = str(exc)
                    log(f"{bench.NAME} skipped: {exc}")
                except Exception as exc:
                    failed[bench.NAME] = f"{type(exc).__name__}: {exc}"
                    log(f"{bench.NAME} failed:\n{traceback.format_exc()}")
                finally:
                    for proc in list(run.procs):
                        run.stop(proc)
        if "consumer_jobs_per_s" in metrics and "worker_jobs_per_s" in metrics:
            metrics["consumer_vs_worker"] = (
                metrics["consumer_jobs_per_s"] / metrics["worker_jobs_per_s"]
            )
        info = machine(run)
    finally:
        run.close()
        harness.stop_started_services()
    elapsed = time.monotonic() - started

    results: dict[str, object] = {
        **{k: round(v, 3) for k, v in metrics.items()},
        "machine": info,
        **commit(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": mode.name,
        "parameters": dataclasses.asdict(mode),
        "parameters_text": parameters_text(mode),
        "load_average_before": load_before,
        "elapsed_s": round(elapsed, 1),
    }
    if skipped:
        results["skipped"] = skipped
    if failed:
        results["failed"] = failed
    for note in run.notes:
        log(note)
    print()
    print(table(metrics))
    print(f"\n{mode.name} run took {elapsed:.0f} s; logs and ini files in {run_dir}")
    (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if not args.only:
        (ROOT / "benchmarks" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        write_doc(results_section(results, run, elapsed))
        log("wrote benchmarks/results.json and docs/benchmarks.md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
