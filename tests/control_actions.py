"""Actions for the control tests (``nick_jobs.includes = ... tests.control_actions``).

A real worker process knows them only when its ini names this module too: the control
tests start such a worker on the PostgreSQL backends (see ``tests/jobs/test_control.py``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from marshmallow import Schema, fields

from nick_jobs.web.permissions import Permission
from nick_jobs.worker.runner import JobAborted, JobFailed

# Automatic retries of ``flaky``: 2 more attempts, waiting 0.3-0.6 s, then 0.6-1.0 s.
FLAKY = {"max_retries": 2, "min_backoff": 0.3, "max_backoff": 1.0}
OBLIVIOUS_GRACE = 0.5
CHECKER_GRACE = 30.0


class FlakyParams(Schema):
    succeed_on = fields.Integer(load_default=0)


def flaky(params: dict[str, Any], ctx) -> dict[str, Any]:
    """Fails, unless this is attempt ``succeed_on``."""
    if ctx.attempt != params["succeed_on"]:
        raise JobFailed(f"attempt {ctx.attempt} failed")
    return {"attempt": ctx.attempt}


class MarkerParams(Schema):
    marker = fields.String(required=True)


def _mark(path: str, text: str) -> None:
    Path(path).write_text(f"{text} {time.time()!r}")


def oblivious(params: dict[str, Any], ctx) -> None:
    """Never checks for abort (no ctx calls at all): only an interruption stops it.

    What stopped it goes to the marker file, for the test to see.
    """
    _mark(params["marker"], "running")
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            time.sleep(0.01)
    except JobAborted as exc:
        _mark(params["marker"], type(exc).__name__)
        raise


def checker(params: dict[str, Any], ctx) -> None:
    """Checks for abort in a loop; its grace is long, so it stops only by checking."""
    _mark(params["marker"], "running")
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ctx.check()
            time.sleep(0.01)
    except JobAborted as exc:
        _mark(params["marker"], type(exc).__name__)
        raise


def includeme(config) -> None:
    anyone = Permission.ADD_JOBS.value
    config.add_job_action(
        "flaky", flaky, schema=FlakyParams, title="Flaky", permission=anyone, **FLAKY
    )
    config.add_job_action(
        "oblivious",
        oblivious,
        schema=MarkerParams,
        title="Oblivious",
        permission=anyone,
        abort_grace=OBLIVIOUS_GRACE,
    )
    config.add_job_action(
        "checker",
        checker,
        schema=MarkerParams,
        title="Checker",
        permission=anyone,
        abort_grace=CHECKER_GRACE,
    )
