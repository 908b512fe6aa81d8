"""Actions every installation has: ``dummy`` (demos and tests) and ``prune`` (retention)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from marshmallow import Schema, fields, validate

from .actions import JobAction
from .models import FINISHED_STATUSES, Job, JobHistory, JobLog, utcnow
from .permissions import Permission
from .runner import JobContext, JobFailed


class DummyParams(Schema):
    sleep = fields.Float(
        load_default=0.0,
        validate=validate.Range(min=0, max=86_400),
        metadata={"description": "Total seconds to run, spread over the steps."},
    )
    steps = fields.Integer(
        load_default=1,
        validate=validate.Range(min=1, max=1_000_000),
        metadata={"description": "How many steps to report; abort is checked between steps."},
    )
    fail = fields.String(
        validate=validate.Length(min=1, max=2000),
        metadata={"description": "When given, the job fails with this message."},
    )
    result = fields.Dict(metadata={"description": "The object the job returns as its result."})


# Up to this many steps, dummy reports each as a step of its own; beyond, one counted step.
DUMMY_NAMED_STEPS = 100


def dummy(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    steps = params["steps"]
    pause = params["sleep"] / steps
    named = steps <= DUMMY_NAMED_STEPS
    # Resumable: the checkpoint is the number of steps done; a resumed job goes on from it.
    done = min(int(ctx.saved_checkpoint or 0), steps)
    if named:
        ctx.steps([f"step {step}" for step in range(1, steps + 1)])
        for step in range(1, done + 1):
            ctx.step(f"step {step}", done=1, total=1)
    for step in range(done + 1, steps + 1):
        if named:
            ctx.step(f"step {step}")
        if pause:
            ctx.sleep(pause)
        ctx.checkpoint(step)
        if named:
            ctx.step(f"step {step}", done=1, total=1)
        else:
            ctx.step("steps", done=step, total=steps)
        ctx.message(f"step {step} of {steps}")
        ctx.info(f"step {step} of {steps} done")
    if "fail" in params:
        raise JobFailed(params["fail"])
    return params.get("result", {})


class PruneParams(Schema):
    days = fields.Integer(
        load_default=30,
        validate=validate.Range(min=0, max=36_500),
        metadata={
            "description": "Delete finished jobs that finished more than this many days ago."
        },
    )
    batch_size = fields.Integer(
        load_default=1000,
        validate=validate.Range(min=1, max=100_000),
        metadata={
            "description": "Rows deleted per transaction, so the table is never locked long."
        },
    )


def prune(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    cutoff = utcnow() - dt.timedelta(days=params["days"])
    session = ctx.dbsession
    deleted = 0
    finished = [s.value for s in FINISHED_STATUSES]
    while True:
        ctx.check()
        batch = (
            sa.select(Job.id, Job.uuid)
            .where(Job.status.in_(finished), Job.finished < cutoff, Job.uuid != ctx.uuid)
            .order_by(Job.id)
            .limit(params["batch_size"])
        )
        rows = session.execute(batch).all()
        if not rows:
            break
        uuids = [r.uuid for r in rows]
        session.execute(sa.delete(JobHistory).where(JobHistory.job_uuid.in_(uuids)))
        session.execute(sa.delete(JobLog).where(JobLog.job_uuid.in_(uuids)))
        session.execute(sa.delete(Job).where(Job.id.in_([r.id for r in rows])))
        session.commit()
        deleted += len(rows)
    return {"deleted": deleted, "cutoff": cutoff.isoformat()}


dummy_action = JobAction(
    name="dummy",
    handler=dummy,
    schema=DummyParams,
    title="Dummy job",
    description="Sleeps, reports steps, and completes or fails as asked: for demos and tests.",
    permission=Permission.MANAGE_SITE.value,
    resumable=True,
)

prune_action = JobAction(
    name="prune",
    handler=prune,
    schema=PruneParams,
    title="Prune finished jobs",
    description="Deletes finished jobs (with their history) older than a number of days.",
    permission=Permission.MANAGE_SITE.value,
)
