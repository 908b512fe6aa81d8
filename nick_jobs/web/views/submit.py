"""A request's submit, handed to :mod:`nick_jobs.jobs.submission`: the request's
connection, its identity and the answers of the security policy go in as plain values."""

from __future__ import annotations

from typing import Any

from pyramid.request import Request
from pyramid_tm import is_tm_active

from nick_jobs.db.after_commit import transaction
from nick_jobs.jobs import lifecycle, submission
from nick_jobs.jobs.actions import get_registry
from nick_jobs.jobs.remote_actions import Actions
from nick_jobs.web import security
from nick_jobs.web.claim_bell import ring_after_commit
from nick_jobs.web.errors import Error, api_error, authenticated_login


def submit_job(request: Request, context: object, data: Any) -> tuple[dict[str, Any], bool]:
    """Check and store the job ``data`` describes; return ``(job, created)``."""
    prepared = submission.prepare(known_actions(request), data)
    name = prepared.action.name
    if not request.has_permission(prepared.action.permission, context):
        raise api_error(Error.FORBIDDEN, f"You are not allowed to submit {name!r} jobs.")
    key = idempotency_key(request)
    send = request.registry["nick_jobs.queue"].send
    actor = authenticated_login(request)
    remote = prepared.action_version is not None
    if key is not None or not _on_its_own(request):
        stored = submission.submit(
            request.dbsession, prepared, actor, idempotency_key=key, send=send
        )
        if remote:
            # Once the session's transaction, which the submit began, has committed.
            ring_after_commit(request.registry, request.dbsession)
        return stored
    # No transaction to join, so the job is its own: one autocommitted statement on the
    # request's connection, sent at once. A caller allowed on a provisional identity is
    # checked in that same statement.
    try:
        job = submission.submit(
            request.dbconn, prepared, actor, guard=security.guard(request), send=send
        )
    except lifecycle.GuardFailed:
        security.confirm(request)  # raises, as who the caller was no longer holds
        # The guard failed, yet the identity holds again by now (removed and added back
        # in between): nothing was written; the client sends it again.
        raise security.identity_changed() from None
    security.confirmed(request)
    if remote:
        ring_after_commit(request.registry, request.dbconn)  # committed: rings at once
    return job


def submit_jobs(
    request: Request, context: object, data: list[Any]
) -> tuple[list[dict[str, Any]], bool]:
    """Check and store every job of a bulk submit, all or none; return ``(jobs, created)``."""
    prepared = submission.prepare_many(known_actions(request), data)
    for index, item in enumerate(prepared):
        if not request.has_permission(item.action.permission, context):
            raise api_error(
                Error.FORBIDDEN,
                f"You are not allowed to submit {item.action.name!r} jobs (job {index}); "
                "none was submitted.",
            )
    key = idempotency_key(request)
    if key is not None and len(key) > submission.MAX_BULK_IDEMPOTENCY_KEY:
        raise api_error(
            Error.INVALID_HEADER,
            f"A bulk submit's Idempotency-Key takes 1 to {submission.MAX_BULK_IDEMPOTENCY_KEY} "
            "characters.",
        )
    send = request.registry["nick_jobs.queue"].send
    actor = authenticated_login(request)
    remote = any(item.action_version is not None for item in prepared)
    try:
        if is_tm_active(request):
            stored = submission.submit_many(
                request.dbsession, prepared, actor, idempotency_key=key, send=send
            )
            if remote:
                ring_after_commit(request.registry, request.dbsession)
            return stored
        # PostgreSQL runs a plain submit in no transaction (nick_jobs.db.needs_transaction);
        # these jobs need one of their own. A provisional identity is checked first, as
        # a guarded insert of many rows would cost more than the one query.
        security.confirm(request)
        with transaction(request.dbconn) as conn:
            stored = submission.submit_many(conn, prepared, actor, idempotency_key=key, send=send)
            if remote:
                ring_after_commit(request.registry, conn)
        return stored
    except submission.KeyReused as exc:
        raise api_error(Error.CONFLICT, str(exc)) from None


def known_actions(request: Request) -> Actions:
    """The Python actions, then the remote ones (read on the request's own connection,
    and only for a name that is not a Python action's)."""
    return Actions(get_registry(request.registry), request.dbconn)


def idempotency_key(request: Request) -> str | None:
    """The request's ``Idempotency-Key``, checked; None without one."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= submission.MAX_IDEMPOTENCY_KEY:
        raise api_error(
            Error.INVALID_HEADER,
            f"Idempotency-Key takes 1 to {submission.MAX_IDEMPOTENCY_KEY} characters.",
        )
    return key


def _on_its_own(request: Request) -> bool:
    """Whether the job is stored on its own (one autocommitted statement) rather than in
    the request's transaction: PostgreSQL, and the request runs in none (pyramid_tm's
    activation hook, :func:`nick_jobs.db.needs_transaction`, begins none for such a
    submit), so nothing can roll back under the job.

    What the request does after the insert can't undo it, as a response lost on the way
    can't: a client that must not submit twice sends an Idempotency-Key, which takes the
    transactional path.
    """
    return not is_tm_active(request) and request.dbconn.dialect.name == "postgresql"
