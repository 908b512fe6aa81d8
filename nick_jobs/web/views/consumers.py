"""The consumer API: processes in any language run remote actions' jobs over HTTP.

A consumer claims jobs (``POST /@jobs/@claim``), checks in while it works, and completes,
fails, stops or releases each; every one of these presents the lease its claim gave.
The state changes are the job lifecycle's (:mod:`nick_jobs.jobs.lifecycle`), as a
Python worker's are.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import marshmallow
import sqlalchemy as sa
from marshmallow import fields, validate
from pyramid.httpexceptions import HTTPNoContent
from pyramid.request import Request
from pyramid.response import Response

from nick_jobs.db.after_commit import transaction
from nick_jobs.jobs import lifecycle
from nick_jobs.jobs.remote_actions import RemoteJobAction
from nick_jobs.jobs.serialize import isoformat, job_json
from nick_jobs.settings import registry_settings
from nick_jobs.web.body import json_body, json_value
from nick_jobs.web.claim_bell import REGISTRY_KEY as CLAIM_BELL
from nick_jobs.web.claim_bell import ClaimBell, claim_bell, ring_after_commit
from nick_jobs.web.errors import (
    INVALID_FIELDS,
    Error,
    api_error,
    authenticated_login,
    error_body,
)
from nick_jobs.web.permissions import Permission
from nick_jobs.web.resources import JobContainer, JobResource
from nick_jobs.web.strict import dumps
from nick_jobs.web.views import api_view
from nick_jobs.web.views.jobs import job_url
from nick_jobs.web.views.submit import known_actions
from nick_jobs.worker.reporting import LEVEL_NAMES, LEVELS, MAX_TEXT

log = logging.getLogger(__name__)

MAX_WAIT_S = 30
MAX_CLAIM = 100
#: The most jobs one batch complete (``POST /@jobs/@complete``) reports.
MAX_COMPLETE = 100
DEFAULT_LEASE_S = 60


class _Strict(marshmallow.Schema):
    class Meta:
        unknown = marshmallow.RAISE


class ClaimSchema(_Strict):
    actions = fields.List(
        fields.String(validate=validate.Length(min=1, max=100)),
        required=True,
        validate=validate.Length(min=1, max=50),
        metadata={"description": "The remote actions this consumer runs."},
    )
    labels = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        load_default=dict,
        metadata={"description": "Only actions whose labels include all of these."},
    )
    claims = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        load_default=dict,
        metadata={"description": "What this consumer offers a job's claims (claim windows)."},
    )
    limit = fields.Integer(
        strict=True, load_default=1, validate=validate.Range(min=1, max=MAX_CLAIM)
    )
    wait = fields.Float(
        load_default=0.0,
        validate=validate.Range(min=0, max=MAX_WAIT_S),
        metadata={"description": "Seconds to wait for a job when there is none (long polling)."},
    )


class _ProgressSchema(_Strict):
    percent = fields.Float(allow_none=True, validate=validate.Range(min=0, max=100))
    message = fields.String(allow_none=True, validate=validate.Length(max=MAX_TEXT))


class _LineSchema(_Strict):
    level = fields.String(load_default="info", validate=validate.OneOf(LEVEL_NAMES))
    message = fields.String(required=True, validate=validate.Length(max=MAX_TEXT))


class LeaseRequestSchema(_Strict):
    lease = fields.String(required=True, validate=validate.Length(min=1, max=64))


class CheckinSchema(LeaseRequestSchema):
    progress = fields.Nested(_ProgressSchema)
    log = fields.List(fields.Nested(_LineSchema), validate=validate.Length(max=1000))
    data = fields.Dict(allow_none=True, metadata={"description": "Shown as checkin_data."})


class CompleteSchema(LeaseRequestSchema):
    result = fields.Dict(load_default=dict)


class CompleteItemSchema(CompleteSchema):
    """One job of a batch complete: the single complete's body, with the job's uuid."""

    uuid = fields.UUID(required=True, metadata={"description": "The job's uuid."})


class _ErrorSchema(_Strict):
    type = fields.String(load_default="Error", validate=validate.Length(min=1, max=100))
    message = fields.String(required=True, validate=validate.Length(max=MAX_TEXT))


class FailSchema(LeaseRequestSchema):
    error = fields.Nested(_ErrorSchema, required=True)


class StoppedSchema(LeaseRequestSchema):
    checkpoint = fields.Raw(required=True, allow_none=True)


CLAIM, CHECKIN = ClaimSchema(), CheckinSchema()
COMPLETE, FAIL, STOPPED = CompleteSchema(), FailSchema(), StoppedSchema()
COMPLETE_ITEM = CompleteItemSchema()
RELEASE = LeaseRequestSchema()


# --- claim ------------------------------------------------------------------------------


def _claimable(request: Request, body: dict[str, Any]) -> list[lifecycle.RemoteAction]:
    """The remote actions a claim names, with the labels it asks for; a 400 for a name
    that is not a remote action's."""
    actions = known_actions(request)
    wanted: dict[str, str] = body["labels"]
    found: list[lifecycle.RemoteAction] = []
    errors: dict[int, list[str]] = {}
    for index, name in enumerate(body["actions"]):
        action = actions.get(name)
        if not isinstance(action, RemoteJobAction):
            what = "a Python action, run by the service's workers" if action else "no action"
            errors[index] = [f"{name!r} is {what}: claim remote actions only."]
            continue
        if all(action.labels.get(key) == value for key, value in wanted.items()):
            found.append(lifecycle.RemoteAction(name, action.lease, action.claim_window))
    if errors:
        raise marshmallow.ValidationError({"actions": errors})
    return found


class WaitingClaim:
    """The body of a claim that found nothing and waits: it looks again every
    ``nick_jobs.claim_poll_interval`` (at once when a job is submitted through this
    process) until a job comes, its wait is over or the process drains, then writes
    the array.

    The wait happens here, after the view and its transaction have returned, so a
    waiting consumer holds neither an admission slot (nick_jobs.ops.admission) nor a
    database connection; only a server thread, and one of the process's
    ``nick_jobs.claim_max_waiting``, given back when the body is closed.
    """

    def __init__(
        self,
        look: Callable[[], list[dict[str, Any]]],
        write: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
        deadline: float,
        draining: Callable[[], bool],
        slots: threading.BoundedSemaphore,
        bell: tuple[ClaimBell, int],
        poll_s: float,
        client_gone: Callable[[], bool] | None = None,
    ) -> None:
        self.look, self.write, self.deadline = look, write, deadline
        # The bell, and its count before the view's own look: a job submitted since
        # then wakes the claim at once, however soon it came.
        self.bell, self.seen = bell
        self.poll_s = poll_s
        self.draining = draining
        self._slots: threading.BoundedSemaphore | None = slots
        # A consumer that hung up (its own shutdown) must not be given jobs nobody will
        # run until their lease runs out: a server that can tell (waitress, with
        # channel_request_lookahead, as streams need too) stops looking for it.
        self.client_gone = client_gone or (lambda: False)

    def __iter__(self) -> Iterator[bytes]:
        claimed: list[dict[str, Any]] = []
        seen = self.seen
        while not claimed and not self.draining():
            left = self.deadline - time.monotonic()
            if left <= 0:
                break
            if self.client_gone():
                return
            # Woken by a job submitted through this process; else a look every poll
            # interval finds what came through another.
            seen = self.bell.wait(seen, min(self.poll_s, left))
            if self.client_gone():
                return
            try:
                claimed = self.look()
            except (sa.exc.DBAPIError, sa.exc.TimeoutError):
                # The status is sent: an empty answer, and the consumer claims again.
                log.warning("a waiting claim could not reach the database", exc_info=True)
                break
        yield dumps(self.write(claimed)).encode()

    def close(self) -> None:
        if self._slots is not None:
            self._slots.release()
            self._slots = None


@api_view(
    context=JobContainer, name="@claim", request_method="POST", permission=Permission.RUN_JOBS
)
def claim_view(context: JobContainer, request: Request) -> Response | list[dict[str, Any]]:
    body = CLAIM.load(json_body(request))
    actions = _claimable(request, body)
    consumer = authenticated_login(request)
    engine = request.registry["nick_jobs.engine"]

    def look() -> list[dict[str, Any]]:
        # A transaction of its own on a connection of its own for each look: none is held
        # between looks.
        with transaction(engine) as conn:
            return lifecycle.claim(conn, actions, consumer, body["claims"], body["limit"])

    def write(claimed: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [_claimed_json(context, job) for job in claimed]

    bell = claim_bell(request.registry)
    rung = bell.rung
    claimed = look()
    wait = min(body["wait"], registry_settings(request.registry).claim_max_wait_s)
    if claimed or not wait:
        return write(claimed)
    settings = registry_settings(request.registry)
    slots: threading.BoundedSemaphore = request.registry["nick_jobs.waiting_claims"]
    if not slots.acquire(blocking=False):
        error = api_error(
            Error.SERVICE_UNAVAILABLE,
            f"{settings.claim_max_waiting} claims wait in this process already; claim again "
            "shortly, or without wait.",
        )
        error.headers["Retry-After"] = "1"
        raise error
    # Other processes' jobs ring it too from now on (PostgreSQL).
    bell.wanted()
    drain = request.registry["nick_jobs.drain"]
    response = Response(content_type="application/json", charset="utf-8")
    gone = request.environ.get("waitress.client_disconnected")
    response.app_iter = WaitingClaim(
        look,
        write,
        time.monotonic() + wait,
        lambda: drain.draining,
        slots,
        (bell, rung),
        settings.claim_poll_interval_s,
        gone if callable(gone) else None,
    )
    return response


def _claimed_json(container: JobContainer, job: dict[str, Any]) -> dict[str, Any]:
    out = job_json(job, job_url(container, job["uuid"]))
    out["lease"] = {"id": job["lease_id"], "expires": isoformat(job["lease_expires"])}
    if job.get("checkpoint") is not None:
        out["checkpoint"] = job["checkpoint"]
    return out


# --- one claimed job --------------------------------------------------------------------


def _leased(context: JobResource, request: Request, lease: str) -> lifecycle.StartedJob:
    try:
        return lifecycle.leased(request.dbsession, context.job.uuid, lease)
    except lifecycle.LeaseRefused as exc:
        raise _lease_refused(exc.status) from None


def _lease_refused(status: str | None) -> Exception:
    return api_error(Error.LEASE_REFUSED, _refusal(status), status=status)


def _refusal(status: str | None) -> str:
    """Why a lease is refused, by the job's status (None: the job is gone)."""
    if status == lifecycle.RUNNING:
        return (
            "This lease does not hold the job: it is wrong, or it ran out and another "
            "claim holds the job now."
        )
    if status is None:
        return "The job no longer exists: this lease no longer holds it."
    return f"The job is {status} now: this lease no longer holds it."


def _remote_action(request: Request, name: str) -> RemoteJobAction | None:
    action = known_actions(request).get(name)
    return action if isinstance(action, RemoteJobAction) else None


@api_view(
    context=JobResource, name="checkin", request_method="POST", permission=Permission.RUN_JOBS
)
def checkin_view(context: JobResource, request: Request) -> dict[str, Any]:
    body = CHECKIN.load(json_body(request))
    job_row = context.job
    try:
        job = lifecycle.leased(request.dbsession, job_row.uuid, body["lease"])
    except lifecycle.LeaseRefused as exc:
        # Aborted while the consumer held it: say so, for the consumer to stop.
        if exc.status == lifecycle.ABORTED and job_row.lease_id == body["lease"]:
            return {"lease": None, "abort": True, "stop": False}
        raise _lease_refused(exc.status) from None
    action = _remote_action(request, job.action)
    now = lifecycle.utcnow()
    lines = [
        {
            "job_uuid": job.uuid,
            "attempt": job.attempt,
            "time": now,
            "level": LEVELS[line["level"]],
            "message": line["message"],
        }
        for line in body.get("log", ())
    ]
    expires = lifecycle.checkin(
        request.dbsession,
        job,
        action.lease if action is not None else DEFAULT_LEASE_S,
        progress=body.get("progress", lifecycle.UNCHANGED),
        lines=lines,
        data=body.get("data", lifecycle.UNCHANGED),
        now=now,
    )
    return {
        "lease": {"id": body["lease"], "expires": isoformat(expires)},
        "abort": False,
        "stop": lifecycle.stop_requested(request.dbsession, job),
    }


@api_view(
    context=JobResource, name="complete", request_method="POST", permission=Permission.RUN_JOBS
)
def complete_view(context: JobResource, request: Request) -> HTTPNoContent:
    body = COMPLETE.load(json_body(request))
    job = _leased(context, request, body["lease"])
    action = _remote_action(request, job.action)
    if action is not None:
        try:
            action.check_result(body["result"])
        except marshmallow.ValidationError as exc:
            # The job keeps running: the consumer may send a result that fits.
            raise marshmallow.ValidationError({"result": exc.messages}) from None
    if not lifecycle.complete(request.dbsession, job, body["result"]):
        raise _lease_refused(lifecycle.RUNNING)
    return HTTPNoContent()


@api_view(
    context=JobContainer, name="@complete", request_method="POST", permission=Permission.RUN_JOBS
)
def complete_many_view(context: JobContainer, request: Request) -> list[dict[str, Any]]:
    """``POST /@jobs/@complete``: up to :data:`MAX_COMPLETE` claimed jobs completed in one
    transaction, each as ``POST /@jobs/{uuid}/complete`` would; one answer a job, in the
    order sent."""
    data = json_value(request)
    if not isinstance(data, list):
        raise api_error(Error.INVALID_JSON, "The body must be a JSON array.")
    items = _complete_items(data)
    conn = request.dbsession
    found = lifecycle.leased_many(conn, [(item["uuid"], item["lease"]) for item in items])
    actions: dict[str, RemoteJobAction | None] = {}
    answers: list[dict[str, Any]] = []
    done: list[lifecycle.Completion] = []
    for item in items:
        uuid = item["uuid"]
        job = found[uuid]
        if isinstance(job, lifecycle.LeaseRefused):
            answers.append(_refused(uuid, job.status))
            continue
        if job.action not in actions:
            actions[job.action] = _remote_action(request, job.action)
        action = actions[job.action]
        if action is not None:
            try:
                action.check_result(item["result"])
            except marshmallow.ValidationError as exc:
                # This job keeps running, as after a single complete's 400.
                refused = {"result": exc.messages}
                error = error_body(Error.VALIDATION, INVALID_FIELDS, fields=refused)
                answers.append({"uuid": uuid, **error})
                continue
        done.append(lifecycle.Completion(job, item["result"]))
        answers.append({"uuid": uuid, "completed": True})
    completed = lifecycle.complete_many(conn, done)
    for answer in answers:
        if answer.get("completed") and answer["uuid"] not in completed:
            # Locked by leased_many, so not expected: the attempt was not the running one.
            answer.pop("completed")
            answer.update(_refused(answer["uuid"], lifecycle.RUNNING))
    return answers


def _complete_items(data: list[Any]) -> list[dict[str, Any]]:
    """The items of a batch complete, checked; a ``ValidationError`` with the errors of
    each faulty item under its index, as a bulk submit's."""
    if not 0 < len(data) <= MAX_COMPLETE:
        raise marshmallow.ValidationError(
            [f"A batch complete takes 1 to {MAX_COMPLETE} jobs; this one has {len(data)}."]
        )
    items: list[dict[str, Any]] = []
    errors: dict[int, Any] = {}
    first: dict[str, int] = {}
    for index, body in enumerate(data):
        try:
            item = COMPLETE_ITEM.load(body)
        except marshmallow.ValidationError as exc:
            errors[index] = exc.messages
            continue
        item["uuid"] = uuid = str(item["uuid"])
        if uuid in first:
            errors[index] = {"uuid": [f"The job of item {first[uuid]} again."]}
            continue
        first[uuid] = index
        items.append(item)
    if errors:
        raise marshmallow.ValidationError(errors)
    return items


def _refused(uuid: str, status: str | None) -> dict[str, Any]:
    return {"uuid": uuid, **error_body(Error.LEASE_REFUSED, _refusal(status), status=status)}


@api_view(context=JobResource, name="fail", request_method="POST", permission=Permission.RUN_JOBS)
def fail_view(context: JobResource, request: Request) -> HTTPNoContent:
    body = FAIL.load(json_body(request))
    job = _leased(context, request, body["lease"])
    error = (body["error"]["type"], body["error"]["message"])
    retry_at = _retry_at(request, job)
    conn = request.dbsession
    if retry_at is not None:
        done = lifecycle.retry_later(conn, job.uuid, job.attempt, job.started, error, retry_at)
    else:
        done = lifecycle.fail(conn, job, *error)
    if not done:
        raise _lease_refused(lifecycle.RUNNING)
    return HTTPNoContent()


def _retry_at(request: Request, job: lifecycle.StartedJob) -> dt.datetime | None:
    """When the failed attempt runs again (its action's retries and backoff), or None."""
    action = _remote_action(request, job.action)
    if action is None:
        return None
    first = functools.partial(lifecycle.series_start, request.dbsession, job.uuid)
    position = lifecycle.retry_number(job.attempt, action.max_retries, first)
    if position is None:
        return None
    return lifecycle.utcnow() + dt.timedelta(seconds=action.backoff(position))


@api_view(
    context=JobResource, name="stopped", request_method="POST", permission=Permission.RUN_JOBS
)
def stopped_view(context: JobResource, request: Request) -> HTTPNoContent:
    body = STOPPED.load(json_body(request))
    job = _leased(context, request, body["lease"])
    action = _remote_action(request, job.action)
    if action is None or not action.resumable:
        raise api_error(
            Error.NOT_RESUMABLE,
            f"Jobs of action {job.action!r} can't be stopped and resumed; complete or fail it.",
            status=lifecycle.RUNNING,
        )
    if not lifecycle.stopped(request.dbsession, job, body["checkpoint"]):
        raise _lease_refused(lifecycle.RUNNING)
    return HTTPNoContent()


@api_view(
    context=JobResource, name="release", request_method="POST", permission=Permission.RUN_JOBS
)
def release_view(context: JobResource, request: Request) -> HTTPNoContent:
    body = RELEASE.load(json_body(request))
    job = _leased(context, request, body["lease"])
    released = lifecycle.hand_back(
        request.dbsession,
        job.uuid,
        job.attempt,
        by=authenticated_login(request),
        started=job.started,
    )
    if not released:
        raise _lease_refused(lifecycle.RUNNING)
    ring_after_commit(request.registry, request.dbsession)  # for another consumer's claim
    return HTTPNoContent()


def includeme(config: Any) -> None:
    waiting = registry_settings(config.registry).claim_max_waiting
    config.registry["nick_jobs.waiting_claims"] = threading.BoundedSemaphore(waiting)
    config.registry[CLAIM_BELL] = ClaimBell(config.registry["nick_jobs.engine"])
    config.scan(__name__)
