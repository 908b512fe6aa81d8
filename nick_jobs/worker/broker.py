"""Wiring of the job queue into the Pyramid registry (``registry["nick_jobs.queue"]``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nick_jobs.jobs.actions import get_registry, load_entry_points
from nick_jobs.ops import metrics
from nick_jobs.settings import registry_settings
from nick_jobs.worker.queue import JobQueue
from nick_jobs.worker.runner import JobRunner

if TYPE_CHECKING:
    from pyramid.config import Configurator


def includeme(config: Configurator) -> None:
    settings = registry_settings(config.registry)
    actions = get_registry(config.registry)
    runner = JobRunner(
        config.registry["nick_jobs.engine"],
        actions,
        settings.heartbeat_interval_s,
        settings.abort_check_interval_s,
        log_copy_rate=settings.job_log_copy_rate,
    )
    queue = JobQueue(settings, actions, runner)
    # Interrupting overdue handlers of aborted jobs, in the embedded worker and in
    # `nick-jobs worker` processes alike (both build their broker here).
    queue.broker.add_middleware(runner.interrupts)
    config.registry["nick_jobs.queue"] = queue
    metrics.install(config)
    # Dramatiq's global broker stays the host's: nick-jobs' actor is declared on its own
    # broker, and nothing of nick-jobs asks Dramatiq for "the" broker.
    # After the host's own add_job_action calls, so its registrations win.
    config.action(None, load_entry_points, args=(actions,), order=10)
