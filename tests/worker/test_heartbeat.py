"""Worker-side liveness: the heartbeat of running jobs and the worker's own connections."""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa

from nick_jobs.db.after_commit import transaction
from nick_jobs.jobs import lifecycle
from nick_jobs.jobs.actions import ActionRegistry, JobAction
from nick_jobs.worker.runner import JobRunner
from tests.conftest import reset_database

jobs = lifecycle.jobs


def _create(engine: sa.Engine, action: str) -> str:
    with transaction(engine) as conn:
        return lifecycle.create(
            conn, action=action, params={"action": action}, actor="admin", title="", description=""
        )["uuid"]


def _heartbeat(engine: sa.Engine, uuid: str):
    with engine.connect() as conn:
        return conn.execute(sa.select(jobs.c.heartbeat).where(jobs.c.uuid == uuid)).scalar_one()


def test_running_job_heartbeat_advances_and_stops_with_the_job(backend):
    reset_database(backend.engine)
    release = threading.Event()
    started = threading.Event()

    def wait(params, ctx):
        started.set()
        release.wait(30)
        return {}

    registry = ActionRegistry()
    registry.add(JobAction(name="wait", handler=wait))
    runner = JobRunner(backend.engine, registry, heartbeat_interval_s=0.05)
    uuid = _create(backend.engine, "wait")
    thread = threading.Thread(target=runner.run, args=(uuid,))
    thread.start()
    assert started.wait(10)
    first = _heartbeat(backend.engine, uuid)
    assert first is not None  # set by the start transition itself
    deadline = time.monotonic() + 10
    while _heartbeat(backend.engine, uuid) <= first:
        assert time.monotonic() < deadline, "the heartbeat never advanced"
        time.sleep(0.02)
    release.set()
    thread.join(10)
    assert runner.running() == {}
    after = _heartbeat(backend.engine, uuid)
    assert runner.heartbeats.beat() == 0  # nothing running: no statement, no change
    assert _heartbeat(backend.engine, uuid) == after


def test_heartbeat_touches_only_running_jobs(backend):
    reset_database(backend.engine)
    waiting = _create(backend.engine, "x")
    now = lifecycle.utcnow()
    with transaction(backend.engine) as conn:
        assert lifecycle.heartbeat(conn, {waiting: 1}, now) == 0
    assert _heartbeat(backend.engine, waiting) is None


def test_worker_connection_is_reopened_after_a_failure(backend):
    reset_database(backend.engine)
    registry = ActionRegistry()
    registry.add(JobAction(name="noop", handler=lambda params, ctx: {"ok": True}))
    runner = JobRunner(backend.engine, registry)
    assert runner.run(_create(backend.engine, "noop")) == "completed"
    broken = runner.connections.get()
    broken.invalidate()  # as after a database restart
    assert runner.run(_create(backend.engine, "noop")) == "completed"
    assert runner.connections.get() is not broken
