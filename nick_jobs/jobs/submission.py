"""Submitting a job: check it against its action, store it, send it.

It takes a connection and an actor, never a request: who may submit what is for the
security policy to answer before (:mod:`nick_jobs.web.views.jobs`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import marshmallow
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nick_jobs.db.after_commit import savepoint
from nick_jobs.db.meta import table
from nick_jobs.jobs import lifecycle
from nick_jobs.jobs.actions import ActionRegistry, JobAction
from nick_jobs.jobs.model import Job
from nick_jobs.jobs.schemas import JobCreateSchema

# Schemas are stateless once built; building one per request costs more than loading.
_CREATE_SCHEMA = JobCreateSchema()

MAX_IDEMPOTENCY_KEY = 200


@dataclass(frozen=True)
class Submission:
    """A job as submitted, checked against its action and not stored yet."""

    action: JobAction
    params: dict[str, Any]  # as stored: the params sent, with "action"
    title: str
    description: str


def prepare(actions: ActionRegistry, data: Any) -> Submission:
    """Check a submitted body (``{"params": {"action": …}, "title"?, "description"?}``)
    against its action; raises ``marshmallow.ValidationError`` with the fields at fault.

    Its params are checked now so that a bad submit is a 400 and never a failed job;
    they are stored as sent (JSON) and loaded again by the worker.
    """
    loaded = _CREATE_SCHEMA.load(data)
    params = dict(loaded["params"])
    name = params.pop("action")
    action = actions.get(name)
    if action is None:
        raise marshmallow.ValidationError({"params": {"action": [f"Unknown action {name!r}."]}})
    try:
        action.load_params(params)
    except marshmallow.ValidationError as exc:
        # Reported where the client sent them: {"params": {"steps": [...]}}.
        raise marshmallow.ValidationError({"params": exc.messages}) from None
    return Submission(
        action,
        {"action": name, **params},
        loaded.get("title") or action.title or name,
        loaded.get("description") or action.description,
    )


def submit(
    conn: Session | sa.Connection,
    submission: Submission,
    actor: str,
    *,
    idempotency_key: str | None = None,
    guard: dict[str, Any] | None = None,
    send: lifecycle.Send | None = None,
) -> tuple[dict[str, Any], bool]:
    """Store the job (its message goes out through ``send`` once committed); return
    ``(job, created)``.

    With an ``idempotency_key``, a repeated submit by the same actor returns the first
    job (``created`` is False) instead of making a second. ``guard``: see
    :func:`nick_jobs.jobs.lifecycle.create`.
    """
    values: dict[str, Any] = {
        "action": submission.action.name,
        "params": submission.params,
        "actor": actor,
        "title": submission.title,
        "description": submission.description,
        "idempotency_key": idempotency_key,
    }
    if idempotency_key is None:
        return lifecycle.create(conn, **values, guard=guard, send=send), True
    existing = _existing(conn, actor, idempotency_key)
    if existing:
        return existing, False
    # Two racing submits with one key: the unique index lets one in; the other rolls
    # back to this savepoint and returns the winner's job.
    try:
        with _savepoint(conn):
            job = lifecycle.create(conn, **values, guard=guard, send=send)
    except IntegrityError:
        existing = _existing(conn, actor, idempotency_key)
        if existing is None:
            raise
        return existing, False
    return job, True


def _savepoint(conn: Session | sa.Connection) -> contextlib.AbstractContextManager[Any]:
    return conn.begin_nested() if isinstance(conn, Session) else savepoint(conn)


def _existing(conn: Session | sa.Connection, actor: str, key: str) -> dict[str, Any] | None:
    row = (
        conn.execute(sa.select(table(Job)).where(Job.actor == actor, Job.idempotency_key == key))
        .mappings()
        .one_or_none()
    )
    return dict(row) if row else None
