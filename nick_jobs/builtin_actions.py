"""Actions every installation has: ``dummy`` (demos and tests) and ``prune`` (retention)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import sqlalchemy as sa
from marshmallow import Schema, fields, validate

from .actions import JobAction
from .models import FINISHED_STATUSES, Job, JobHistory, JobLog, utcnow
from .permissions import Permission
from .runner import JobContext, JobFailed

jobs, history, logs = Job.__table__, JobHistory.__table__, JobLog.__table__


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
    """Delete finished jobs older than the retention, with their history and logs.

    Batches of ``batch_size`` jobs, each its own short transaction, so that writers are
    never held up for long. The batches walk the table by id (``id > last``) instead of
    starting from its beginning each time: a batch reads about ``batch_size`` rows however
    many were deleted before it, and not the dead rows of the batches before it.
    """
    cutoff = utcnow() - dt.timedelta(days=params["days"])
    session = ctx.dbsession
    # Checked again by the DELETE: a job retried (or deleted) between the SELECT and the
    # DELETE is no longer finished, and an unfinished job is never touched.
    past_retention = (
        jobs.c.status.in_([s.value for s in FINISHED_STATUSES]),
        jobs.c.finished < cutoff,
        jobs.c.uuid != ctx.uuid,
    )
    deleted = batches = 0
    longest = 0.0
    last_id = 0
    while True:
        ctx.check()
        started = time.perf_counter()
        ids = (
            session.execute(
                sa.select(jobs.c.id)
                .where(*past_retention, jobs.c.id > last_id)
                .order_by(jobs.c.id)
                .limit(params["batch_size"])
            )
            .scalars()
            .all()
        )
        if not ids:
            break
        last_id = ids[-1]
        uuids = (
            session.execute(
                jobs.delete().where(jobs.c.id.in_(ids), *past_retention).returning(jobs.c.uuid)
            )
            .scalars()
            .all()
        )
        if uuids:
            session.execute(history.delete().where(history.c.job_uuid.in_(uuids)))
            session.execute(logs.delete().where(logs.c.job_uuid.in_(uuids)))
        session.commit()
        longest = max(longest, time.perf_counter() - started)
        batches += 1
        deleted += len(uuids)
        ctx.message(f"{deleted} jobs deleted")
    return {
        "deleted": deleted,
        "cutoff": cutoff.isoformat(),
        "batches": batches,
        "longest_batch_ms": round(longest * 1000, 1),
    }


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
