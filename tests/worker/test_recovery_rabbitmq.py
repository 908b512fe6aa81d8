"""Recovery on RabbitMQ: a ``nick-jobs worker`` killed with ``kill -9`` in the middle of a job.

A real worker process on PostgreSQL + RabbitMQ runs a long job while five more wait
behind it; the process is killed with SIGKILL and another one started. RabbitMQ gives the
dead consumer's unacknowledged messages back as soon as its connection drops, so the
waiting jobs run on the new worker at once. The running job's message comes back too, but
its row is ``running``: the conditional start refuses it, and the job comes back through
the lease-based rescue instead, as a second attempt. Every job ends completed exactly once.

``pytest tests/worker/test_recovery_rabbitmq.py -s`` prints the times; with
``NICK_JOBS_RECOVERY_TIMINGS=2,10,3`` (heartbeat interval, lease, sweep interval, in
seconds) the same steps run with other recovery settings than the test suite's.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from nick_jobs.db import get_engine
from nick_jobs.db.after_commit import transaction
from nick_jobs.jobs import lifecycle
from tests.cli.test_cli import clean_env, wait_until
from tests.conftest import RABBITMQ_URL, ROOT, base_settings, need, reset_database, stop_process
from tests.conftest import write_ini as write_app_ini
from tests.ops_actions import CREATE_TABLE, TABLE
from tests.worker.test_recovery import api, events, row, status_is, submit

HEARTBEAT, LEASE, SWEEP = (
    float(x) for x in os.environ.get("NICK_JOBS_RECOVERY_TIMINGS", "0.25,1.5,0.25").split(",")
)
WAITING = 5
REFUSED = re.compile(r"job ([0-9a-f-]{36}) is not waiting to run")
# The log line's time (the ini's format: local time, milliseconds after a comma).
REFUSED_AT = re.compile(r"^(\S+ \S+) INFO .*is not waiting to run", re.MULTILINE)


@pytest.fixture
def rabbitmq_deployment(pg_url, tmp_path):
    """PostgreSQL + RabbitMQ with short recovery settings, on queues of its own."""
    need("RabbitMQ", "127.0.0.1", 5672)
    tag = secrets.token_hex(4)
    queue = f"nick_jobs_rabbitmq_recovery_{tag}"
    settings = base_settings(
        **{
            "sqlalchemy.url": pg_url,
            "nick_jobs.broker_url": RABBITMQ_URL,
            "nick_jobs.queue": queue,
            "nick_jobs.includes": "tests.actions_for_tests tests.ops_actions",
            "nick_jobs.heartbeat_interval": str(HEARTBEAT),
            "nick_jobs.lease": str(LEASE),
            "nick_jobs.sweep_interval": str(SWEEP),
            # Far beyond the test: a waiting job that runs came back through RabbitMQ,
            # not through the sweeper sending its message again.
            "nick_jobs.resend_grace": "600",
            "nick_jobs.worker_grace": "2",
        }
    )
    engine = get_engine(pg_url)
    reset_database(engine)
    with transaction(engine) as conn:
        conn.execute(sa.text(CREATE_TABLE))
        conn.execute(sa.text(f"DELETE FROM {TABLE}"))  # noqa: S608
    yield {"settings": settings, "engine": engine, "tmp": tmp_path, "queue": queue}
    with transaction(engine) as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {TABLE}"))
    engine.dispose()
    _delete_queues(queue)


def _delete_queues(queue: str) -> None:
    import pika

    with contextlib.suppress(Exception):
        connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
        channel = connection.channel()
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            channel.queue_delete(name)
        connection.close()


def worker_ini(path: Path, settings: dict[str, str]) -> Path:
    """The worker's ini, with ``nick_jobs.worker.runner`` at INFO: it logs each refused start."""
    write_app_ini(path, settings)
    text = path.read_text().replace("[loggers]\nkeys = root\n", "[loggers]\nkeys = root, runner\n")
    text += "\n[logger_runner]\nlevel = INFO\nhandlers =\nqualname = nick_jobs.worker.runner\n"
    path.write_text(text)
    return path


COMMAND = [sys.executable, "-m", "nick_jobs.cli", "worker"]


@contextlib.contextmanager
def worker(ini: Path, log: Path) -> Iterator[subprocess.Popen]:
    """``nick-jobs worker -p 1 -t 1 --no-supervise``: one process, its sweeper inside it."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*COMMAND, str(ini), "-t", "1"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=clean_env(),
            cwd=ROOT,
        )
        try:
            yield proc
        finally:
            stop_process(proc)


class Queue:
    """Reads a RabbitMQ queue's counts, as the broker sees them, on one connection."""

    def __init__(self, name: str) -> None:
        import pika

        self.name = name
        self.connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
        self.channel = self.connection.channel()

    def counts(self) -> tuple[int, int]:
        """(messages ready for a consumer, consumers)."""
        method = self.channel.queue_declare(queue=self.name, passive=True).method
        return method.message_count, method.consumer_count

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.close()


def completions(engine: sa.Engine) -> dict[str, list[int]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT job_uuid, attempt FROM {TABLE} ORDER BY id"))  # noqa: S608
        out: dict[str, list[int]] = {}
        for uuid, attempt in rows:
            out.setdefault(uuid, []).append(attempt)
        return out


def refused(log: Path) -> list[str]:
    """The jobs whose start the worker refused (a duplicate or late message), in order."""
    return REFUSED.findall(log.read_text())


def rescued_at(engine: sa.Engine, uuid: str) -> dt.datetime | None:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(lifecycle.history.c.time).where(
                lifecycle.history.c.job_uuid == uuid,
                lifecycle.history.c.event == "rescued",
            )
        ).scalar_one_or_none()


def test_kill_9_on_rabbitmq_loses_no_job_and_completes_each_once(rabbitmq_deployment):
    d: dict[str, Any] = rabbitmq_deployment
    engine, settings, tmp = d["engine"], d["settings"], d["tmp"]
    deadline = LEASE + SWEEP + 30
    app = api(settings)
    ini = worker_ini(tmp / "worker.ini", settings)
    first_log, second_log = tmp / "first-worker.log", tmp / "second-worker.log"
    queue: Queue | None = None
    try:
        with worker(ini, first_log) as first:
            long = submit(app, "tracked", first_attempt_sleep=120)
            wait_until(
                lambda: row(engine, long).status == "running" and row(engine, long).heartbeat,
                30,
                "the long job to run and heartbeat",
            )
            # Five more wait behind it: the worker's one thread is busy.
            waiting = [submit(app, "tracked") for _ in range(WAITING)]
            enqueued = {uuid: row(engine, uuid).enqueued for uuid in waiting}
            queue = Queue(d["queue"])
            ready_before, _consumers = wait_until(
                lambda: (c := queue.counts())[1] == 1 and c, 10, "the worker's consumer"
            )
            assert all(status_is(engine, uuid, "created") for uuid in waiting)

            killed_at, killed_wall = time.monotonic(), time.time()
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            # No consumer is left: every message comes back as ready, the running job's too.
            wait_until(
                lambda: queue.counts() == (1 + WAITING, 0), 30, "RabbitMQ to requeue the messages"
            )
            requeued_after = time.monotonic() - killed_at
            assert row(engine, long).status == "running"  # the database still says so

        started_at = time.monotonic()
        with worker(ini, second_log):
            wait_until(
                lambda: all(status_is(engine, uuid, "completed") for uuid in waiting),
                deadline,
                "the waiting jobs to run on the new worker",
            )
            waiting_done_after = time.monotonic() - started_at
            wait_until(
                lambda: status_is(engine, long, "completed", 2), deadline, "the long job's rescue"
            )
            long_done_after = time.monotonic() - killed_at
            # Its two messages (the one RabbitMQ gave back, the one the rescue sent) are
            # both taken: one started attempt 2, the other was refused.
            wait_until(lambda: queue.counts() == (0, 1), 30, "the queue to drain")
            wait_until(lambda: refused(second_log), 10, "the refused duplicate in the log")
        rescue_time = rescued_at(engine, long)
    finally:
        if queue is not None:
            queue.close()
        app.app.registry["nick_jobs.queue"].broker.close()
        app.app.registry["nick_jobs.engine"].dispose()

    # No job is lost, and each was completed exactly once.
    assert {uuid: row(engine, uuid).status for uuid in [long, *waiting]} == dict.fromkeys(
        [long, *waiting], "completed"
    )
    assert completions(engine) == {long: [2], **{uuid: [1] for uuid in waiting}}
    # The running job came back through the lease, as its second attempt ...
    assert [e[0] for e in events(engine, long)] == ["created", "rescued"]
    assert row(engine, long).result == {"attempt": 2}
    # ... and its duplicate message was refused by the conditional start, once.
    assert refused(second_log) == [long]
    # The waiting jobs ran from RabbitMQ's redelivery: first attempts, no rescue, and the
    # sweeper never sent their messages again.
    for uuid in waiting:
        assert [e[0] for e in events(engine, uuid)] == ["created"]
        assert row(engine, uuid).enqueued == enqueued[uuid]

    rescued_after = rescue_time.timestamp() - killed_wall
    (logged,) = REFUSED_AT.findall(second_log.read_text())
    refused_after = dt.datetime.strptime(logged, "%Y-%m-%d %H:%M:%S,%f").timestamp() - killed_wall
    print(
        f"\nRabbitMQ kill -9 (heartbeat {HEARTBEAT:g} s, lease {LEASE:g} s, sweep {SWEEP:g} s): "
        f"{ready_before} ready and {1 + WAITING - ready_before} unacknowledged before the kill; "
        f"requeued by RabbitMQ after {requeued_after:.3f} s; waiting jobs done "
        f"{waiting_done_after:.2f} s after the new worker started; running job rescued "
        f"after {rescued_after:.2f} s, completed (attempt 2) after {long_done_after:.2f} s; "
        f"its duplicate refused after {refused_after:.2f} s "
        f"({'before' if refused_after < rescued_after else 'after'} the rescue)"
    )
