"""Actions for the operations tests (``nick_jobs.includes = ... tests.ops_actions``).

``tracked`` keeps count of its completions in the table ``ops_completions``, in the job's
own transaction: the row commits with the job's transition to ``completed``, or not at
all, so two rows for one job would mean it was completed twice. Its first attempt can be
made to run long (``first_attempt_sleep``), long enough for a test to kill its worker.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from marshmallow import Schema, fields

from nick_jobs.web.permissions import Permission

TABLE = "ops_completions"
CREATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} "
    "(id SERIAL PRIMARY KEY, job_uuid VARCHAR(36) NOT NULL, attempt INTEGER NOT NULL)"
)


class TrackedParams(Schema):
    first_attempt_sleep = fields.Float(load_default=0.0)


def tracked(params: dict[str, Any], ctx) -> dict[str, Any]:
    if ctx.attempt == 1 and params["first_attempt_sleep"]:
        ctx.sleep(params["first_attempt_sleep"])
    ctx.dbsession.execute(
        sa.text(f"INSERT INTO {TABLE} (job_uuid, attempt) VALUES (:uuid, :attempt)"),  # noqa: S608
        {"uuid": ctx.uuid, "attempt": ctx.attempt},
    )
    return {"attempt": ctx.attempt}


def includeme(config) -> None:
    config.add_job_action(
        "tracked",
        tracked,
        title="Tracked",
        schema=TrackedParams,
        permission=Permission.ADD_JOBS.value,
        max_retries=1,
    )
