"""State-change log lines and counters of the API fire only once its change has committed.

A request whose transaction rolls back (its view failed after the change) logs and counts
nothing; a committed one logs after the commit, never before. The same holds for a session
``SAVEPOINT`` and for Core connections; on an autocommit connection the line is immediate.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY
from pyramid.security import NO_PERMISSION_REQUIRED
from sqlalchemy.orm import Session

from nick_jobs.db.after_commit import savepoint, transaction
from nick_jobs.jobs import lifecycle
from nick_jobs.ops.logging import STATE_LOGGER
from tests.conftest import reset_database

INCLUDES = "tests.actions_for_tests tests.worker.test_worker_state_log"


class Lines(logging.Handler):
    """The state-change lines logged while it is attached."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def about(self, uuid: str) -> list[str]:
        return [line for line in self.lines if uuid in line]


LINES = Lines()


@pytest.fixture
def lines() -> Iterator[Lines]:
    logger = logging.getLogger(STATE_LOGGER)
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(LINES)
    LINES.lines.clear()
    yield LINES
    logger.removeHandler(LINES)
    logger.setLevel(level)


def abort_then_maybe_fail(request):
    """Aborts the job, then fails when asked: pyramid_tm rolls the abort back."""
    uuid = request.matchdict["uuid"]
    lifecycle.abort(request.dbsession, uuid, by="admin")
    request.dbsession.flush()
    logged_by_then = len(LINES.about(uuid))
    if request.params.get("fail"):
        raise RuntimeError("the view fails after its change")
    return {"logged_before_commit": logged_by_then}


def includeme(config) -> None:
    """Loaded through ``nick_jobs.includes`` by the apps of these tests only."""
    config.add_route("abort-then-maybe-fail", "/test-abort-then-maybe-fail/{uuid}")
    config.add_view(
        abort_then_maybe_fail,
        route_name="abort-then-maybe-fail",
        request_method="POST",
        renderer="json",
        permission=NO_PERMISSION_REQUIRED,
    )


@pytest.fixture
def app(backend, make_app, unconsumed_queue):
    reset_database(backend.engine)
    return make_app(
        **{"nick_jobs.includes": INCLUDES, "nick_jobs.embedded_worker_threads": "0"}
        | ({"nick_jobs.queue": unconsumed_queue} if backend.real_worker else {})
    )


def aborted_count() -> float:
    labels = {"action": "dummy", "status": "aborted"}
    return REGISTRY.get_sample_value("nick_jobs_jobs_finished_total", labels) or 0.0


def status(backend, uuid: str) -> str:
    with backend.engine.connect() as conn:
        query = sa.select(lifecycle.jobs.c.status).where(lifecycle.jobs.c.uuid == uuid)
        return conn.execute(query).scalar_one()


def test_a_request_whose_transaction_rolls_back_logs_and_counts_nothing(backend, app, lines):
    uuid = app.submit({"action": "dummy"})["uuid"]
    assert lines.about(uuid) == [f"job {uuid} action=dummy actor=admin status=created"]
    before = aborted_count()
    app.post(f"/test-abort-then-maybe-fail/{uuid}?fail=1", status=500)
    assert status(backend, uuid) == "created"
    assert lines.about(uuid) == [f"job {uuid} action=dummy actor=admin status=created"]
    assert aborted_count() == before


def test_a_committed_request_logs_and_counts_after_its_commit(backend, app, lines):
    uuid = app.submit({"action": "dummy"})["uuid"]
    before = aborted_count()
    answer = app.post(f"/test-abort-then-maybe-fail/{uuid}").json
    # The view saw the created line only: the abort's came with the commit.
    assert answer == {"logged_before_commit": 1}
    assert status(backend, uuid) == "aborted"
    assert lines.about(uuid)[1:] == [f"job {uuid} action=dummy actor=admin status=aborted"]
    assert aborted_count() == before + 1


class RollBack(Exception):
    """Leaves a transaction (or savepoint) block by rolling it back."""


def create(conn) -> str:
    job = lifecycle.create(
        conn, action="dummy", params={"action": "dummy"}, actor="admin", title="", description=""
    )
    return job["uuid"]


def test_a_savepoint_that_rolls_back_takes_its_lines_along(backend, lines):
    reset_database(backend.engine)
    with Session(backend.engine) as session:
        with contextlib.suppress(RollBack), session.begin_nested():
            dropped = create(session)
            raise RollBack
        with session.begin_nested():
            kept = create(session)
        assert lines.lines == []  # nothing before the commit
        session.commit()
    assert lines.about(dropped) == []
    assert lines.about(kept) == [f"job {kept} action=dummy actor=admin status=created"]


def test_core_connections_log_at_commit_never_at_rollback(backend, lines):
    reset_database(backend.engine)
    dropped: list[str] = []
    with contextlib.suppress(RollBack), transaction(backend.engine) as conn:
        dropped.append(create(conn))
        raise RollBack
    with contextlib.suppress(RollBack), transaction(backend.engine) as conn:
        # A savepoint that rolls back drops what was logged for it; the rest stays.
        with contextlib.suppress(RollBack), savepoint(conn):
            dropped.append(create(conn))
            raise RollBack
        outer = create(conn)
        raise RollBack
    with transaction(backend.engine) as conn:
        with contextlib.suppress(RollBack), savepoint(conn):
            dropped.append(create(conn))
            raise RollBack
        kept_too = create(conn)
        assert lines.about(kept_too) == []
    assert len(lines.about(kept_too)) == 1
    assert lines.about(outer) == []
    with transaction(backend.engine) as conn:
        kept = create(conn)
        assert lines.about(kept) == []
    assert [lines.about(uuid) for uuid in dropped] == [[], [], []]
    assert len(lines.about(kept)) == 1
    with backend.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        now = create(conn)
        # Autocommit: the change is committed already, and so logged.
        assert len(lines.about(now)) == 1
    # A transaction nothing watches could commit without its effects: refused.
    with (
        pytest.raises(RuntimeError, match="nothing watches"),
        backend.engine.begin() as conn,
    ):
        create(conn)
