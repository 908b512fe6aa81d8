"""Prometheus metrics: cluster-wide figures from the database, and per-process counters.

Two sources, because the API and the workers are different processes, often on
different machines:

* **The database, at scrape time** (:class:`DatabaseCollector`, served by the API's
  ``GET /metrics``): the jobs waiting and running now, by action, and the age of the
  oldest waiting job. The same answer from every API node, correct whatever happened to
  any process, and cheap: it reads only the partial index of unfinished jobs.
* **Counters and histograms of each process**, in prometheus-client's default registry:
  jobs created (API), aborted (API), completed and failed with their run time and queue
  lag (workers), and rescues (wherever the sweeper runs), each counted by
  :func:`observe` once its change has committed.
  A restarted process starts again from zero, which Prometheus's ``rate()`` expects.
  The API serves its own on ``/metrics``; each worker process serves its own on
  ``nick_jobs.worker_metrics_port`` (or its ``--metrics-port``).

Settings: ``nick_jobs.metrics_access`` (``manage``, the default: ``Manage Site`` is
needed; ``open``: no authentication), ``nick_jobs.worker_metrics_port`` (0: off) and
``nick_jobs.worker_metrics_host`` (``127.0.0.1``).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from nick_jobs.db.meta import table, utcnow
from nick_jobs.jobs.model import Job
from nick_jobs.scheduling.model import ScheduledJob
from nick_jobs.settings import ConfigurationError

if TYPE_CHECKING:  # the lifecycle imports this module
    from pyramid.config import Configurator

    from nick_jobs.jobs.lifecycle import Change
    from nick_jobs.worker.sweeper import SweepResult

log = logging.getLogger(__name__)

jobs = table(Job)
scheduled = table(ScheduledJob)

ACCESS_OPEN, ACCESS_MANAGE = "open", "manage"

# Seconds. Jobs run from milliseconds (a dummy) to hours (a reindex).
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400)
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

JOBS_CREATED = Counter(
    "nick_jobs_jobs_created", "Jobs created by this process (API), by action.", ["action"]
)
JOBS_FINISHED = Counter(
    "nick_jobs_jobs_finished",
    "Jobs this process finished: completed or failed by a worker, aborted by the API.",
    ["action", "status"],
)
JOB_DURATION = Histogram(
    "nick_jobs_job_duration_seconds",
    "Run time of the jobs this worker process completed or failed, by action.",
    ["action"],
    buckets=DURATION_BUCKETS,
)
QUEUE_LAG = Histogram(
    "nick_jobs_job_queue_lag_seconds",
    "Seconds from a job's creation (or, for a later attempt, its re-queueing) to its start "
    "on this worker process, by action.",
    ["action"],
    buckets=LAG_BUCKETS,
)
RESCUES = Counter(
    "nick_jobs_rescues",
    "Running jobs that lost their worker and were rescued by this process's sweeper "
    "(outcome: retried or failed).",
    ["outcome"],
)
RESENT = Counter(
    "nick_jobs_resent", "Messages of waiting jobs that this process's sweeper sent again."
)
SCHEDULED_FIRINGS_SKIPPED = Counter(
    "nick_jobs_scheduled_firings_skipped",
    "Firings this process's scheduler refused, disabling the scheduled job, because its "
    "owner no longer exists or no longer has the permission its action needs (by reason).",
    ["reason"],
)


@dataclass(frozen=True)
class MetricsSettings:
    access: str
    worker_port: int
    worker_host: str


def parse_settings(settings: Mapping[str, Any]) -> MetricsSettings:
    access = str(settings.get("nick_jobs.metrics_access", ACCESS_MANAGE)).strip()
    if access not in (ACCESS_OPEN, ACCESS_MANAGE):
        raise ConfigurationError(
            f"nick_jobs.metrics_access must be {ACCESS_OPEN} or {ACCESS_MANAGE}, not {access!r}"
        )
    raw = settings.get("nick_jobs.worker_metrics_port", 0) or 0
    try:
        port = int(raw)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"nick_jobs.worker_metrics_port must be a port number, not {raw!r}"
        ) from None
    if not 0 <= port <= 65000:
        raise ConfigurationError("nick_jobs.worker_metrics_port takes 0 (off) or a port number")
    host = str(settings.get("nick_jobs.worker_metrics_host", "127.0.0.1")).strip()
    return MetricsSettings(access, port, host)


def observe(change: Change) -> None:
    """Count one committed change of a job (see :mod:`nick_jobs.jobs.lifecycle`)."""
    event = change.event
    if event == "created":
        _child(JOBS_CREATED, change.action).inc()
    elif event in _FINISHED:
        _child(JOBS_FINISHED, change.action, change.status).inc()
        if event != "aborted" and change.took is not None:
            _child(JOB_DURATION, change.action).observe(change.took)
    elif event == "started":
        if change.lag is not None:
            _child(QUEUE_LAG, change.action).observe(change.lag)
    elif event in _RESCUES:
        _child(RESCUES, _RESCUES[event]).inc()


@functools.cache
def _child(metric: Any, *labels: str) -> Any:
    # A metric's child for these label values, looked up once: labels() validates and
    # locks on every call, which was most of what counting cost a worker's job.
    return metric.labels(*labels)


# The changes counted as finished: by a worker, or aborted through the API.
_FINISHED = ("completed", "failed", "aborted")
_RESCUES = {"rescued": "retried", "lost": "failed"}


def record_sweep(result: SweepResult) -> None:
    """Count what a sweeper round sent again (a :class:`nick_jobs.worker.sweeper.SweepResult`)."""
    if result.resent:
        RESENT.inc(result.resent)


def serve(port: int, host: str) -> bool:
    """Serve this process's metrics on ``host:port``; False (logged) when it can't."""
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        log.warning("could not serve metrics on %s:%d: %s", host, port, exc)
        return False
    log.info("metrics on http://%s:%d/metrics", host, port)
    return True


# --- the cluster-wide figures, read from the database at scrape time ----------------------


class DatabaseCollector(Collector):
    """Jobs waiting and running now, from the partial index of unfinished jobs."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "nick_jobs_database_up", "1 when the database answered this scrape, else 0."
        )
        unfinished = GaugeMetricFamily(
            "nick_jobs_jobs",
            "Jobs waiting (created) and running now, in the whole deployment, by action.",
            labels=["action", "status"],
        )
        running = GaugeMetricFamily(
            "nick_jobs_running_jobs", "Jobs running now, in the whole deployment."
        )
        oldest = GaugeMetricFamily(
            "nick_jobs_oldest_waiting_job_age_seconds",
            "Seconds since the oldest job still waiting to start was created (0: none waits).",
        )
        skipped = GaugeMetricFamily(
            "nick_jobs_scheduled_jobs_disabled_by_refused_firing",
            "Scheduled jobs disabled because a firing was refused (their owner gone or without"
            " the action's permission), by reason; every node sees them, whichever fired.",
            labels=["reason"],
        )
        unfinished_statuses = ("created", "running")
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(jobs.c.action, jobs.c.status, sa.func.count())
                    .where(jobs.c.status.in_(unfinished_statuses))
                    .group_by(jobs.c.action, jobs.c.status)
                ).all()
                first = conn.execute(
                    sa.select(sa.func.min(jobs.c.created)).where(jobs.c.status == "created")
                ).scalar_one_or_none()
                refused = conn.execute(
                    sa.select(scheduled.c.skip_reason, sa.func.count())
                    .where(scheduled.c.skip_reason.is_not(None))
                    .group_by(scheduled.c.skip_reason)
                ).all()
        except sa.exc.SQLAlchemyError as exc:
            log.warning("metrics: the database did not answer: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        total_running = 0
        for action, status, count in rows:
            unfinished.add_metric([action, status], count)
            if status == "running":
                total_running += count
        yield unfinished
        running.add_metric([], total_running)
        yield running
        if first is not None and first.tzinfo is None:
            first = first.replace(tzinfo=dt.UTC)
        age = max((utcnow() - first).total_seconds(), 0.0) if first else 0.0
        oldest.add_metric([], age)
        yield oldest
        for reason, count in refused:
            skipped.add_metric([reason], count)
        yield skipped


def install(config: Configurator) -> None:
    """Keep the metrics settings on the registry (``nick_jobs.ops.metrics``)."""
    config.registry["nick_jobs.ops.metrics"] = parse_settings(config.get_settings())
