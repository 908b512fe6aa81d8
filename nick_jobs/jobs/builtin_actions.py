"""Actions every installation has: ``dummy`` (demos and tests) and ``prune`` (retention)."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from marshmallow import Schema, fields, validate
from sqlalchemy.dialects.postgresql import ARRAY

from nick_jobs.db.meta import table, utcnow
from nick_jobs.jobs.actions import JobAction
from nick_jobs.jobs.model import FINISHED_STATUSES, Job, JobHistory, JobLog, JobStatus
from nick_jobs.jobs.schemas import StrictFloat, StrictInteger
from nick_jobs.web.permissions import Permission
from nick_jobs.worker.runner import JobContext, JobFailed

jobs, history, logs = table(Job), table(JobHistory), table(JobLog)


class DummyParams(Schema):
    sleep = StrictFloat(
        load_default=0.0,
        validate=validate.Range(min=0, max=86_400),
        metadata={"description": "Total seconds to run, spread over the steps."},
    )
    steps = StrictInteger(
        load_default=1,
        validate=validate.Range(min=0, max=1_000_000),
        metadata={
            "description": "How many steps to report; abort is checked between steps. "
            "0: report nothing (a job that only sleeps, or a no-op)."
        },
    )
    fail = fields.String(
        validate=validate.Length(min=1, max=2000),
        metadata={"description": "When given, the job fails with this message."},
    )
    result = fields.Dict(metadata={"description": "The object the job returns as its result."})


# Up to this many steps, dummy reports each as a step of its own; beyond, one counted step.
DUMMY_NAMED_STEPS = 100


def _run_steps(steps: int, sleep: float, ctx: JobContext) -> None:
    pause = sleep / steps
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


def dummy(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    if params["steps"]:
        _run_steps(params["steps"], params["sleep"], ctx)
    elif params["sleep"]:
        # No steps, message or log line: the job costs only its transitions (and its sleep).
        ctx.sleep(params["sleep"])
    if "fail" in params:
        raise JobFailed(params["fail"])
    result: dict[str, Any] = params.get("result", {})
    return result


# The finished statuses, in the order the params and the result list them.
PRUNED_STATUSES: tuple[str, ...] = tuple(s.value for s in JobStatus if s in FINISHED_STATUSES)
MAX_RETENTION_DAYS = 36_500


def _status_days(status: str) -> fields.Integer:
    # No load_default: a status without its own retention follows ``days``, so that
    # ``{"days": 30}`` alone means what it always meant. Strict, as the published schema
    # says "integer": 1.5 or "7" is a 400, not silently 1 or 7 (``days`` stays lenient
    # for the clients that already send it).
    return fields.Integer(
        strict=True,
        validate=validate.Range(min=0, max=MAX_RETENTION_DAYS),
        metadata={
            "description": f"Delete {status} jobs that finished more than this many days ago; "
            "defaults to days."
        },
    )


class PruneParams(Schema):
    days = fields.Integer(
        load_default=30,
        validate=validate.Range(min=0, max=MAX_RETENTION_DAYS),
        metadata={
            "description": "Delete finished jobs that finished more than this many days ago; "
            "the default of completed_days, failed_days and aborted_days."
        },
    )
    completed_days = _status_days("completed")
    failed_days = _status_days("failed")
    aborted_days = _status_days("aborted")
    batch_size = StrictInteger(
        load_default=1000,
        validate=validate.Range(min=1, max=100_000),
        metadata={
            "description": "Rows deleted per transaction, so the table is never locked long."
        },
    )


def retention_days(params: dict[str, Any]) -> dict[str, int]:
    """Days to keep each finished status: its own ``<status>_days``, or else ``days``."""
    return {status: params.get(f"{status}_days", params["days"]) for status in PRUNED_STATUSES}


def _one_of(
    column: sa.ColumnElement[Any], values: Sequence[Any], dialect: str
) -> sa.ColumnElement[bool]:
    """``column IN values``; on PostgreSQL as ``= ANY(array)``, one parameter instead of
    one per value: rendering and binding a thousand of them cost a batch more CPU than
    its deletes."""
    if dialect == "postgresql":
        return column == sa.any_(sa.bindparam(None, values, type_=ARRAY(column.type)))
    return column.in_(values)


def prune(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Delete finished jobs older than their status's retention, with their history and logs.

    Batches of ``batch_size`` jobs, each its own short transaction, so that writers are
    never held up for long. The batches walk the table by id (``id > last``) instead of
    starting from its beginning each time: a batch reads about ``batch_size`` rows however
    many were deleted before it, and not the dead rows of the batches before it.
    """
    now = utcnow()
    days = retention_days(params)
    cutoffs = {status: now - dt.timedelta(days=n) for status, n in days.items()}
    # Statuses that share a cutoff share one condition, so ``days`` alone (or three equal
    # retentions) gives the one ``status IN (...) AND finished < cutoff`` it always did.
    by_cutoff: dict[dt.datetime, list[str]] = {}
    for status, cutoff in cutoffs.items():
        by_cutoff.setdefault(cutoff, []).append(status)
    session = ctx.dbsession
    dialect = session.get_bind().dialect.name
    # Checked again by the DELETE: a job retried (or deleted) between the SELECT and the
    # DELETE is no longer finished, and an unfinished job is never touched.
    past_retention = (
        sa.or_(
            *(
                sa.and_(jobs.c.status.in_(statuses), jobs.c.finished < cutoff)
                for cutoff, statuses in by_cutoff.items()
            )
        ),
        jobs.c.uuid != ctx.uuid,
    )
    deleted: Counter[str] = Counter()
    batches = 0
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
        # The status each job had when deleted, for the counts per status.
        gone = session.execute(
            jobs.delete()
            .where(_one_of(jobs.c.id, ids, dialect), *past_retention)
            .returning(jobs.c.uuid, jobs.c.status)
        ).all()
        uuids = [uuid for uuid, _ in gone]
        if uuids:
            for table in (history, logs):
                session.execute(table.delete().where(_one_of(table.c.job_uuid, uuids, dialect)))
        session.commit()
        longest = max(longest, time.perf_counter() - started)
        batches += 1
        deleted.update(str(status) for _, status in gone)
        ctx.message(f"{deleted.total()} jobs deleted")
    return {
        "deleted": deleted.total(),
        # The cutoff of ``days``, as before per-status retention: what older clients read.
        "cutoff": (now - dt.timedelta(days=params["days"])).isoformat(),
        "by_status": {
            status: {
                "days": days[status],
                "cutoff": cutoffs[status].isoformat(),
                "deleted": deleted[status],
            }
            for status in PRUNED_STATUSES
        },
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
