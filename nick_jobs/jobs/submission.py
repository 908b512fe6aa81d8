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
from nick_jobs.jobs.actions import ActionRegistry
from nick_jobs.jobs.model import Job
from nick_jobs.jobs.remote_actions import Action, Actions, RemoteJobAction
from nick_jobs.jobs.schemas import JobCreateSchema

# Schemas are stateless once built; building one per request costs more than loading.
_CREATE_SCHEMA = JobCreateSchema()

MAX_IDEMPOTENCY_KEY = 200
#: The most jobs one bulk submit takes.
MAX_BULK = 1000
# A bulk submit's job i is stored with the key "<key>#<i>" (the column holds 200).
MAX_BULK_IDEMPOTENCY_KEY = MAX_IDEMPOTENCY_KEY - len(f"#{MAX_BULK - 1}")


class KeyReused(Exception):
    """An Idempotency-Key already used for a different bulk submit."""


@dataclass(frozen=True)
class Submission:
    """A job as submitted, checked against its action and not stored yet."""

    action: Action
    params: dict[str, Any]  # as stored: the params sent, with "action"
    title: str
    description: str

    @property
    def action_version(self) -> int | None:
        """The remote action's version it is submitted under; None for a Python action."""
        return self.action.version if isinstance(self.action, RemoteJobAction) else None


def prepare(actions: ActionRegistry | Actions, data: Any) -> Submission:
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
    # A remote job's claims (beside action, not the action's params): who may claim it
    # during its action's claim window.
    envelope = {"action": name}
    if isinstance(action, RemoteJobAction) and "claims" in params:
        envelope["claims"] = _claims(params.pop("claims"))
    try:
        action.load_params(params)
    except marshmallow.ValidationError as exc:
        # Reported where the client sent them: {"params": {"steps": [...]}}.
        raise marshmallow.ValidationError({"params": exc.messages}) from None
    return Submission(
        action,
        {**envelope, **params},
        loaded.get("title") or action.title or name,
        loaded.get("description") or action.description,
    )


def _claims(value: Any) -> Any:
    valid = isinstance(value, dict) and all(
        isinstance(key, str) and isinstance(item, str) and len(key) <= 100 and len(item) <= 200
        for key, item in value.items()
    )
    if not valid or len(value) > 50:
        raise marshmallow.ValidationError(
            {"params": {"claims": ["Claims are an object of up to 50 strings."]}}
        )
    return value


def prepare_many(actions: ActionRegistry | Actions, data: list[Any]) -> list[Submission]:
    """Check every body of a bulk submit; raises ``marshmallow.ValidationError`` with
    the errors of each faulty body under its index (``{"3": {"params": …}}``)."""
    if not 0 < len(data) <= MAX_BULK:
        raise marshmallow.ValidationError(
            [f"A bulk submit takes 1 to {MAX_BULK} jobs; this one has {len(data)}."]
        )
    prepared: list[Submission] = []
    errors: dict[int, Any] = {}
    for index, body in enumerate(data):
        try:
            prepared.append(prepare(actions, body))
        except marshmallow.ValidationError as exc:
            errors[index] = exc.messages
    if errors:
        raise marshmallow.ValidationError(errors)
    return prepared


def submit_many(
    conn: Session | sa.Connection,
    submissions: list[Submission],
    actor: str,
    *,
    idempotency_key: str | None = None,
    send: lifecycle.Send | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """Store every job of a bulk submit in the caller's transaction; return
    ``(jobs, created)`` in the order submitted.

    With an ``idempotency_key`` (job i is stored with ``<key>#<i>``), a repeated bulk
    submit by the same actor returns the jobs of the first (``created`` is False).
    """
    keys: list[str | None] = [None] * len(submissions)
    if idempotency_key is not None:
        keys = [f"{idempotency_key}#{index}" for index in range(len(submissions))]
        existing = _existing_many(conn, actor, keys)
        if existing is not None:
            return existing, False
    new_jobs = [
        {
            "action": item.action.name,
            "params": item.params,
            "title": item.title,
            "description": item.description,
            "idempotency_key": key,
            "action_version": item.action_version,
        }
        for item, key in zip(submissions, keys, strict=True)
    ]
    if idempotency_key is None:
        return lifecycle.create_many(conn, new_jobs, actor=actor, send=send), True
    try:
        with _savepoint(conn):
            created = lifecycle.create_many(conn, new_jobs, actor=actor, send=send)
    except IntegrityError:
        # The same bulk submit, racing: the first one's jobs are the answer.
        existing = _existing_many(conn, actor, keys)
        if existing is None:
            raise
        return existing, False
    return created, True


def _existing_many(
    conn: Session | sa.Connection, actor: str, keys: list[str | None]
) -> list[dict[str, Any]] | None:
    """The jobs stored under ``keys`` in their order, or None when there are none."""
    rows = (
        conn.execute(sa.select(table(Job)).where(Job.actor == actor, Job.idempotency_key.in_(keys)))
        .mappings()
        .all()
    )
    if not rows:
        return None
    by_key = {row["idempotency_key"]: dict(row) for row in rows}
    if len(by_key) != len(keys):
        raise KeyReused(
            f"This Idempotency-Key was used for a bulk submit of another number of jobs "
            f"({len(by_key)} of these {len(keys)} match)."
        )
    return [by_key[key] for key in keys]


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
        "action_version": submission.action_version,
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
