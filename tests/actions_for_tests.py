"""Actions the test suite registers (``nick_jobs.includes = tests.actions_for_tests``).

They load in the API and in real worker processes alike, through the same setting.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from marshmallow import Schema, fields

from nick_jobs.web.permissions import Permission


class EchoParams(Schema):
    message = fields.String(required=True)
    sleep = fields.Float(load_default=0.0)


def echo(params: dict[str, Any], ctx) -> dict[str, Any]:
    """Any authenticated user may submit it: it echoes its message (after a nap)."""
    if params["sleep"]:
        ctx.sleep(params["sleep"])
    return {"message": params["message"], "actor": ctx.actor}


def explode(params: dict[str, Any], ctx) -> None:
    raise RuntimeError("kaboom")


def stubborn(params: dict[str, Any], ctx) -> None:
    """Never checks for abort and never ends on its own: only its time limit stops it."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.01)


class ReportParams(Schema):
    seconds = fields.Float(load_default=3.0)
    every = fields.Float(load_default=0.005)


def report(params: dict[str, Any], ctx) -> None:
    """Reports the wall-clock time as its message every ``every`` seconds, for ``seconds``."""
    deadline = time.monotonic() + params["seconds"]
    while time.monotonic() < deadline:
        ctx.progress(1, 2, message=repr(time.time()), step="clock")
        time.sleep(min(params["every"], max(deadline - time.monotonic(), 0)))


class GatedParams(Schema):
    gate = fields.String(required=True)
    before = fields.Integer(load_default=3)
    after = fields.Integer(load_default=3)


def gated(params: dict[str, Any], ctx) -> dict[str, Any]:
    """Logs ``before`` lines, waits until the file ``gate`` exists, logs ``after`` more.

    Lets a test act while a job is known to be running, without guessing at timings.
    """
    ctx.step("before", done=0, total=params["before"])
    for line in range(1, params["before"] + 1):
        ctx.info(f"before {line}")
        ctx.step("before", done=line, total=params["before"])
    while not Path(params["gate"]).exists():
        ctx.sleep(0.02)
    for line in range(1, params["after"] + 1):
        ctx.info(f"after {line}")
    return {"lines": params["before"] + params["after"]}


def includeme(config) -> None:
    config.add_job_action(
        "gated", gated, schema=GatedParams, title="Gated", permission=Permission.ADD_JOBS.value
    )
    config.add_job_action(
        "report", report, schema=ReportParams, title="Report", permission=Permission.ADD_JOBS.value
    )
    config.add_job_action(
        "echo",
        echo,
        schema=EchoParams,
        title="Echo",
        description="Returns its message.",
        permission=Permission.ADD_JOBS.value,
    )
    config.add_job_action("explode", explode, title="Explode", permission=Permission.ADD_JOBS.value)
    config.add_job_action(
        "stubborn", stubborn, title="Stubborn", permission=Permission.ADD_JOBS.value, time_limit=1.0
    )
