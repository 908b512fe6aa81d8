"""Submitting a job: validate against its action, check who may run it, store, send."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import marshmallow
import sqlalchemy as sa
from pyramid_tm import is_tm_active
from sqlalchemy.exc import IntegrityError

from nick_jobs.jobs import lifecycle
from nick_jobs.jobs.actions import get_registry
from nick_jobs.jobs.model import Job
from nick_jobs.jobs.schemas import JobCreateSchema
from nick_jobs.web import security
from nick_jobs.web.errors import Error, api_error

# Schemas are stateless once built; building one per request costs more than loading.
_CREATE_SCHEMA = JobCreateSchema()

MAX_IDEMPOTENCY_KEY = 200


def JobRow(values: dict[str, Any]) -> SimpleNamespace:
    """Attribute access over a job dict, for the serialiser."""
    return SimpleNamespace(**values)


def _existing(dbsession, actor: str, key: str) -> dict[str, Any] | None:
    row = (
        dbsession.execute(
            sa.select(Job.__table__).where(Job.actor == actor, Job.idempotency_key == key)
        )
        .mappings()
        .one_or_none()
    )
    return dict(row) if row else None


def submit(
    request, context, data: dict[str, Any], idempotency_key: str | None = None
) -> tuple[dict[str, Any], bool]:
    """Create the job described by ``data``; return ``(job, created)``.

    With an ``Idempotency-Key``, a repeated submit by the same user returns the first
    job (``created`` is False) instead of creating a second.
    """
    loaded = _CREATE_SCHEMA.load(data)
    params = dict(loaded["params"])
    name = params.pop("action")
    action = get_registry(request.registry).get(name)
    if action is None:
        raise marshmallow.ValidationError({"params": {"action": [f"Unknown action {name!r}."]}})
    if not request.has_permission(action.permission, context):
        raise api_error(Error.FORBIDDEN, f"You are not allowed to submit {name!r} jobs.")
    # Validated now so a bad submit is a 400 and never a failed job; the params are
    # stored as sent (JSON) and loaded again by the worker.
    try:
        action.load_params(params)
    except marshmallow.ValidationError as exc:
        # Reported where the client sent them: {"params": {"steps": [...]}}.
        raise marshmallow.ValidationError({"params": exc.messages}) from None
    actor = request.authenticated_userid
    if idempotency_key is not None:
        if not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
            raise api_error(
                Error.INVALID_HEADER,
                f"Idempotency-Key takes 1 to {MAX_IDEMPOTENCY_KEY} characters.",
            )
        existing = _existing(request.dbsession, actor, idempotency_key)
        if existing:
            return existing, False
    values = {
        "action": name,
        "params": {"action": name, **params},
        "actor": actor,
        "title": loaded.get("title") or action.title or name,
        "description": loaded.get("description") or action.description,
        "idempotency_key": idempotency_key,
    }
    queue = request.registry["nick_jobs.queue"]
    if idempotency_key is None and _on_its_own(request):
        # No transaction to join, so the job is its own: one autocommitted statement on
        # the request's connection, sent at once. A caller allowed on a provisional
        # identity is checked in that same statement.
        guard = security.guard(request)
        try:
            job = lifecycle.create(request.dbconn, **values, guard=guard)
        except lifecycle.GuardFailed:
            security.confirm(request)  # raises, as who the caller was no longer holds
            # The guard failed, yet the identity holds again by now (removed and added
            # back in between): nothing was written; the client sends it again.
            raise security.identity_changed() from None
        security.confirmed(request)
        queue.send_committed(job["uuid"], name)
        return job, True
    if idempotency_key is None:
        job = lifecycle.create(request.dbsession, **values)
    else:
        # Two racing submits with one key: the unique index lets one in; the other
        # rolls back to this savepoint and returns the winner's job.
        try:
            with request.dbsession.begin_nested():
                job = lifecycle.create(request.dbsession, **values)
        except IntegrityError:
            existing = _existing(request.dbsession, actor, idempotency_key)
            if existing is None:
                raise
            return existing, False
    queue.send_after_commit(request, job["uuid"], name)
    return job, True


def _on_its_own(request) -> bool:
    """Whether the job is stored on its own (one autocommitted statement) rather than in
    the request's transaction: PostgreSQL, and the request runs in none (pyramid_tm's
    activation hook, :func:`nick_jobs.db.needs_transaction`, begins none for such a
    submit), so nothing can roll back under the job.

    What the request does after the insert can't undo it, as a response lost on the way
    can't: a client that must not submit twice sends an Idempotency-Key, which takes the
    transactional path.
    """
    return not is_tm_active(request) and request.dbconn.dialect.name == "postgresql"
