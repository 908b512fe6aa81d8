"""The Dramatiq side: the broker, the one actor that runs jobs, and how a message is sent.

The message carries only the job's uuid; the SQL row is the source of truth. The job's
lifecycle (:mod:`nick_jobs.jobs.lifecycle`) sends it through :meth:`JobQueue.send` only
after the transaction that created (or retried) its job has committed, so a worker never
looks for a row that isn't there and a rolled-back job never runs.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn, TypeVar

import dramatiq
from dramatiq.brokers.stub import StubBroker

from nick_jobs.jobs.actions import ActionRegistry
from nick_jobs.settings import ConfigurationError, Settings
from nick_jobs.worker.runner import JobRunner

log = logging.getLogger(__name__)

ACTOR_NAME = "nick_jobs.run_job"

# Redis broker: Dramatiq's defaults give a killed worker's messages back only after 60 s,
# and on an idle queue much later; a shorter heartbeat and more frequent maintenance bring
# that down to seconds. The database remains the real guarantee.
REDIS_HEARTBEAT_TIMEOUT_MS = 15_000
REDIS_MAINTENANCE_CHANCE = 10_000  # per million commands
# Brokers count delays in whole milliseconds and the clock may tick in between.
DELAY_MARGIN_MS = 10


def make_broker(settings: Settings, namespace: str = "nick_jobs") -> dramatiq.Broker:
    url = settings.broker_url
    if url.startswith("stub://"):
        return StubBroker()
    if url.startswith(("redis://", "rediss://")):
        try:
            from dramatiq.brokers.redis import RedisBroker
        except ModuleNotFoundError as exc:
            _missing_client(exc, "redis", "redis")

        # Dramatiq leaves RedisBroker's constructor unannotated.
        return RedisBroker(  # type: ignore[no-untyped-call]
            url=url,
            namespace=namespace,
            heartbeat_timeout=REDIS_HEARTBEAT_TIMEOUT_MS,
            maintenance_chance=REDIS_MAINTENANCE_CHANCE,
        )
    try:
        from dramatiq.brokers.rabbitmq import RabbitmqBroker
    except ModuleNotFoundError as exc:
        _missing_client(exc, "pika", "rabbitmq")

    # Without publisher confirms by default. The job's row, committed before its message
    # is sent, is the job; a message the broker loses (it crashed before writing it down,
    # the connection died with it on the way) leaves the row created, and the sweeper
    # sends it again after nick_jobs.resend_grace, as it does when a send fails. Waiting
    # for each persistent message's confirm made RabbitMQ write each one down on its own
    # and cost a submit a round trip: 15 % of what a job cost the machine
    # (docs/benchmarks.md). With nick_jobs.publisher_confirms, send() returns only once
    # RabbitMQ has the message, and a message it refuses is logged at once.
    return RabbitmqBroker(url=url, confirm_delivery=settings.publisher_confirms)


def _missing_client(exc: ModuleNotFoundError, client: str, extra: str) -> NoReturn:
    """Dramatiq's broker could not import its client library: say which extra brings it
    (the bare install runs the stub:// broker alone)."""
    if exc.name != client:
        raise exc
    raise ConfigurationError(
        f"a {extra} broker URL (nick_jobs.broker_url) needs the {client} library: "
        f"pip install 'nick-jobs[{extra}]'"
    ) from exc


_T = TypeVar("_T")


class Publishers:
    """A few threads that send every message of the process, each on its own connection.

    Dramatiq's RabbitMQ broker keeps one AMQP connection (and channel, with publisher
    confirms) per thread that sends. In an API process every waitress thread that handled
    a submit held one: up to ``threads`` connections per process (256 with
    ``production.ini``), each opened by the first submit of its thread, which waited for
    it. Sending from these threads instead bounds the connections to ``count`` and keeps
    them warm; the sending thread waits for the publish (and, with
    ``nick_jobs.publisher_confirms``, its confirm), as before.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pid = 0

    def run(self, send: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        return self._executor().submit(send, *args, **kwargs).result()

    def _executor(self) -> ThreadPoolExecutor:
        # Made on first use, and again in a forked child: threads don't survive a fork.
        pid = os.getpid()
        if self._pool is None or self._pid != pid:
            with self._lock:
                if self._pool is None or self._pid != pid:
                    self._pool = ThreadPoolExecutor(
                        self.count, thread_name_prefix="nick-jobs-publisher"
                    )
                    self._pid = pid
        return self._pool

    def shutdown(self) -> None:
        with self._lock:
            if self._pool is not None and self._pid == os.getpid():
                self._pool.shutdown(wait=True)
            self._pool = None


class JobQueue:
    """Owns the broker and the job actor of one application."""

    def __init__(
        self,
        settings: Settings,
        actions: ActionRegistry,
        runner: JobRunner,
        broker: dramatiq.Broker | None = None,
    ) -> None:
        self.settings = settings
        self.actions = actions
        self.runner = runner
        self.broker = broker or make_broker(settings, namespace=settings.broker_namespace)
        # Declared on this broker explicitly, never on Dramatiq's global default, so two
        # apps in one process (tests, API + embedded worker) each keep their own.
        self.actor = dramatiq.Actor(
            runner,
            broker=self.broker,
            actor_name=ACTOR_NAME,
            queue_name=settings.queue_name,
            priority=0,
            options={
                # Only infrastructure errors reach Dramatiq (the runner records handler
                # errors on the row), so a few quick redeliveries are right.
                "max_retries": 5,
                "min_backoff": 1_000,
                "max_backoff": 30_000,
                "time_limit": int(settings.job_time_limit_s * 1000),
            },
        )
        self._worker: dramatiq.Worker | None = None
        self._lock = threading.Lock()
        # Only RabbitMQ's connections are per thread; Redis's come from a shared pool.
        rabbitmq = settings.broker_url.startswith(("amqp://", "amqps://"))
        self.publishers = (
            Publishers(settings.publisher_threads)
            if rabbitmq and settings.publisher_threads > 0
            else None
        )
        # The runner sends the automatic retries of failed jobs, delayed by their backoff.
        runner.send = self.send

    def message_options(self, action_name: str) -> dict[str, Any]:
        action = self.actions.get(action_name)
        if action is not None and action.time_limit is not None:
            return {"time_limit": int(action.time_limit * 1000)}
        return {}

    def send(self, uuid: str, action_name: str, delay_s: float = 0.0) -> None:
        """Send the message for job ``uuid`` now (outside any request transaction).

        With ``delay_s``, the broker delivers it that many seconds later: a job waiting
        for its ``next_run`` (the start refuses it before then, so it is delivered a few
        milliseconds late rather than early).
        """
        options = self.message_options(action_name)
        if delay_s > 0:
            options["delay"] = math.ceil(delay_s * 1000) + DELAY_MARGIN_MS
        if self.publishers is None:
            self.actor.send_with_options(args=(uuid,), **options)
        else:
            self.publishers.run(self.actor.send_with_options, args=(uuid,), **options)

    def waiting(self) -> int | None:
        """How many messages wait in the job queue, not yet delivered to a worker (the
        delayed ones apart); None when the broker can't be asked."""
        queue_name = self.settings.queue_name
        # Which broker it is decides which of its own methods count the queue.
        broker: Any = self.broker
        try:
            if isinstance(broker, StubBroker):
                return broker.queues[queue_name].qsize() if queue_name in broker.queues else 0
            counts: tuple[int, ...]
            if self.publishers is not None:
                counts = self.publishers.run(broker.get_queue_message_counts, queue_name)
                return counts[0]
            if hasattr(broker, "get_queue_message_counts"):
                counts = broker.get_queue_message_counts(queue_name)
                return counts[0]
            # Redis: the queue is a list of the ids of the messages not yet delivered.
            return int(broker.client.llen(f"{broker.namespace}:{queue_name}"))
        except Exception:
            log.warning("could not count the messages waiting in %s", queue_name, exc_info=True)
            return None

    # --- the embedded worker (development default: no separate process, no Redis) -----

    def start_embedded_worker(self, threads: int) -> None:
        with self._lock:
            if self._worker is not None:
                return
            # Starts the middleware that needs a process of its own (TimeLimit's watcher).
            self.broker.emit_after("process_boot")
            self._worker = dramatiq.Worker(
                self.broker, worker_threads=threads, worker_timeout=self.settings.worker_timeout_ms
            )
            self._worker.start()

    def stop_embedded_worker(self, timeout_ms: int = 10_000) -> None:
        with self._lock:
            if self._worker is None:
                return
            self._worker.stop(timeout=timeout_ms)
            self._worker = None
