"""``nick_jobs.abort_check_interval``: how often a worker process looks for aborts and stop
requests of the jobs it runs."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from nick_jobs.db import get_engine
from nick_jobs.db.after_commit import transaction
from nick_jobs.jobs import lifecycle
from nick_jobs.jobs.actions import ActionRegistry, JobAction
from nick_jobs.settings import ConfigurationError, parse
from nick_jobs.worker.runner import JobRunner
from tests.conftest import base_settings, reset_database


def settings(**overrides: str):
    return parse(base_settings(**{"sqlalchemy.url": "sqlite://", **overrides}))


def test_the_default_is_half_a_second():
    assert settings().abort_check_interval_s == 0.5


def test_it_takes_seconds():
    assert settings(**{"nick_jobs.abort_check_interval": "0.2"}).abort_check_interval_s == 0.2


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "soon"])
def test_it_must_be_a_number_above_zero(bad):
    with pytest.raises(ConfigurationError, match=r"nick_jobs\.abort_check_interval"):
        settings(**{"nick_jobs.abort_check_interval": bad})


@pytest.fixture
def engine(backend) -> Iterator[sa.Engine]:
    """The runner's own engine, so that its watcher's queries can be counted."""
    reset_database(backend.engine)
    engine = get_engine(backend.settings["sqlalchemy.url"])
    yield engine
    engine.dispose()


def make_job(engine: sa.Engine, action: str) -> str:
    with transaction(engine) as conn:
        return lifecycle.create(
            conn, action=action, params={"action": action}, actor="admin", title="", description=""
        )["uuid"]


@pytest.mark.parametrize(("interval", "looks"), [(0.05, 8), (0.5, 3)])
def test_the_watcher_looks_once_per_interval(engine, interval, looks):
    """While a handler runs (and never checks), the watcher keeps looking, never more
    often than once per interval, with one query for all the jobs of the process."""
    polls: list[float] = []
    enough = threading.Event()

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        if " AS stop" in statement:  # lifecycle.watch's query
            polls.append(time.monotonic())
            if len(polls) >= looks:
                enough.set()

    def handler(params, ctx):
        # Runs until the watcher has looked often enough (or a deadline passes).
        return {"looked": enough.wait(15)}

    registry = ActionRegistry()
    registry.add(JobAction(name="busy", handler=handler))
    runner = JobRunner(engine, registry, heartbeat_interval_s=0, abort_check_interval_s=interval)
    uuid = make_job(engine, "busy")
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        assert runner.run(uuid) == "completed"
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert enough.is_set(), len(polls)
    gaps = [later - earlier for earlier, later in itertools.pairwise(polls)]
    # A look waits out its interval after the one before (a little timer slack allowed).
    assert min(gaps[: looks - 1]) >= interval * 0.9, gaps


def test_an_abort_interrupts_a_handler_within_the_interval(backend, engine):
    """With no grace, the first look after the abort interrupts the handler."""
    started = threading.Event()
    stopped_at: list[float] = []
    looks: list[float] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        if " AS stop" in statement:  # transitions.watch's query
            looks.append(time.monotonic())

    def handler(params, ctx):
        started.set()
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                time.sleep(0.005)
        finally:
            stopped_at.append(time.monotonic())

    registry = ActionRegistry()
    registry.add(JobAction(name="oblivious", handler=handler, abort_grace=0))
    runner = JobRunner(engine, registry, heartbeat_interval_s=0, abort_check_interval_s=0.05)
    uuid = make_job(engine, "oblivious")
    outcome: list[str | None] = []
    thread = threading.Thread(target=lambda: outcome.append(runner.run(uuid)))
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        thread.start()
        assert started.wait(10)
        with transaction(backend.engine) as conn:
            lifecycle.abort(conn, uuid, "admin")
        aborted_at = time.monotonic()  # committed: the looks from here may see it
        thread.join(20)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert outcome == ["aborted"]
    # Counted in the watcher's looks, not in seconds (a busy machine stretches those):
    # the first after the commit sees the abort and interrupts the handler; a few more
    # may start while the interrupted thread waits for the CPU. Missed, the handler
    # would have run on through about 600 more.
    after = [t for t in looks if aborted_at < t < stopped_at[0]]
    assert len(after) <= 20, (len(after), stopped_at[0] - aborted_at)
