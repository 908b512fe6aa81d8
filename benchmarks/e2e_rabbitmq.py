"""e2e_rabbitmq: the e2e benchmark with RabbitMQ as the broker (PostgreSQL + RabbitMQ).

Same load as ``e2e``; nick-jobs sends as ``production.ini`` does (persistent messages,
without publisher confirms). The raw pipeline baseline runs on RabbitMQ too, sending the
same way, for reference.
"""

from __future__ import annotations

from . import e2e
from .harness import Run, log, median

NAME = "e2e_rabbitmq"
SERVICES = {"postgresql", "rabbitmq"}


def run(run: Run) -> dict[str, float]:
    run.need(*SERVICES)
    run.create_database()
    mode = run.mode
    ini = run.nick_ini("e2e-rabbitmq", broker="rabbitmq")
    server = run.serve(ini, "e2e-rabbitmq-server")
    run.worker(ini, "e2e-rabbitmq-worker")
    queue = run.queue("e2e_rabbitmq_baseline")
    run.baseline_pipeline("setup", queue=queue, broker="rabbitmq")
    run.baseline_worker(queue, "e2e-rabbitmq-baseline-worker", broker="rabbitmq")
    token = run.token(ini)
    e2e.nick_once(run, server, token, 100)
    e2e.baseline_once(run, queue, 100, broker="rabbitmq")
    rates, baselines = [], []
    for r in range(mode.repeats):
        rate, _ = e2e.nick_once(run, server, token, mode.e2e_rabbitmq_n)
        base = e2e.baseline_once(run, queue, mode.e2e_rabbitmq_n, broker="rabbitmq")
        log(f"e2e_rabbitmq run {r + 1}: nick-jobs {rate:.0f}/s, baseline {base:.0f}/s")
        rates.append(rate)
        baselines.append(base)
    return {
        "e2e_rabbitmq_jobs_per_s": median(rates),
        "e2e_rabbitmq_baseline_jobs_per_s": median(baselines),
    }
