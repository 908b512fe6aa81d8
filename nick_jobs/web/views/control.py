"""Changing a job: ``DELETE /@jobs/{uuid}`` and its ``abort``, ``retry``, ``stop``,
``resume`` and ``restart``.

Included after ``views/jobs.py``, so that the ``GET`` of a job is the first of its views
Pyramid tries (see there).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPNoContent
from pyramid.request import Request
from pyramid.response import Response

from nick_jobs.jobs import lifecycle
from nick_jobs.jobs.serialize import job_json
from nick_jobs.web.claim_bell import ring_after_commit
from nick_jobs.web.errors import Error, api_error, authenticated_login
from nick_jobs.web.permissions import Permission
from nick_jobs.web.resources import JobResource
from nick_jobs.web.views import api_view, streams
from nick_jobs.web.views.jobs import follow_asked, job_url
from nick_jobs.web.views.submit import known_actions

if TYPE_CHECKING:
    from nick_jobs.worker.queue import JobQueue


@contextlib.contextmanager
def _answering_refusals() -> Iterator[None]:
    """A transition refused in the block is the request's 404 (the job is gone) or 409."""
    try:
        yield
    except lifecycle.TransitionRefused as exc:
        if exc.status is None:
            raise api_error(Error.NOT_FOUND, "The job no longer exists.") from None
        raise api_error(Error.INVALID_STATE, str(exc), status=exc.status) from None


def _send(request: Request) -> lifecycle.Send:
    """How the job's message goes out once the request's change has committed."""
    queue: JobQueue = request.registry["nick_jobs.queue"]
    return queue.send


def _claimable(request: Request, action_version: int | None) -> None:
    """A remote job (it has no message) waits for a claim again: wake the waiting ones."""
    if action_version is not None:
        ring_after_commit(request.registry, request.dbsession)


@api_view(context=JobResource, request_method="DELETE", permission=Permission.MANAGE_JOB)
def delete_view(context: JobResource, request: Request) -> HTTPNoContent:
    with _answering_refusals():
        lifecycle.delete(request.dbsession, context.job.uuid, by=request.authenticated_userid)
    return HTTPNoContent()


@api_view(
    context=JobResource, name="abort", request_method="POST", permission=Permission.MANAGE_JOB
)
def abort_view(context: JobResource, request: Request) -> HTTPNoContent:
    with _answering_refusals():
        lifecycle.abort(request.dbsession, context.job.uuid, by=authenticated_login(request))
    return HTTPNoContent()


@api_view(
    context=JobResource, name="retry", request_method="POST", permission=Permission.MANAGE_JOB
)
def retry_view(context: JobResource, request: Request) -> HTTPNoContent:
    with _answering_refusals():
        lifecycle.retry(
            request.dbsession,
            context.job.uuid,
            by=authenticated_login(request),
            send=_send(request),
        )
    _claimable(request, context.job.action_version)
    return HTTPNoContent()


@api_view(context=JobResource, name="stop", request_method="POST", permission=Permission.MANAGE_JOB)
def stop_view(context: JobResource, request: Request) -> HTTPNoContent:
    job = context.job
    action = known_actions(request).get(job.action)
    if action is None or not action.resumable:
        raise api_error(
            Error.NOT_RESUMABLE,
            f"Jobs of action {job.action!r} can't be stopped and resumed; abort it instead.",
            status=job.status,
        )
    with _answering_refusals():
        lifecycle.request_stop(request.dbsession, job.uuid, by=authenticated_login(request))
    return HTTPNoContent()


@api_view(
    context=JobResource, name="resume", request_method="POST", permission=Permission.MANAGE_JOB
)
def resume_view(context: JobResource, request: Request) -> HTTPNoContent:
    job = context.job
    # A failed job resumes from its checkpoint only if its action can resume at all; a
    # stopped one was stopped because it could.
    action = known_actions(request).get(job.action)
    resumable = action is not None and action.resumable
    if job.status == lifecycle.FAILED and not resumable:
        raise api_error(
            Error.NOT_RESUMABLE,
            f"Jobs of action {job.action!r} can't be resumed; retry it instead.",
            status=job.status,
        )
    with _answering_refusals():
        lifecycle.resume(
            request.dbsession,
            job.uuid,
            by=authenticated_login(request),
            send=_send(request),
            failed=resumable,
        )
    _claimable(request, job.action_version)
    return HTTPNoContent()


@api_view(
    context=JobResource,
    name="restart",
    request_method="POST",
    permission=Permission.MANAGE_JOB,
    query=("follow",),
)
def restart_view(context: JobResource, request: Request) -> Response | dict[str, Any]:
    follow = follow_asked(request)
    old = context.job
    container = context.__parent__
    action = known_actions(request).get(old.action)
    if action is None:
        raise api_error(
            Error.UNKNOWN_ACTION,
            f"The action {old.action!r} of this job is no longer installed.",
            status=old.status,
        )
    # Restarting submits a new job: the action's own permission applies, as to a submit.
    if not request.has_permission(action.permission, container):
        raise api_error(Error.FORBIDDEN, f"You are not allowed to submit {old.action!r} jobs.")
    # The stream's slot is taken before the new job exists, as for a submit with
    # ?follow=true: a refused stream (503) leaves no job behind.
    with streams.stream_slot(request) if follow else contextlib.nullcontext() as login:
        with _answering_refusals():
            job = lifecycle.restart(
                request.dbsession, old.uuid, by=authenticated_login(request), send=_send(request)
            )
            _claimable(request, job["action_version"])
        url = job_url(container, job["uuid"])
        if login is not None:
            # The new job's stream; its first event is the job as stored, once committed.
            body = streams.job_stream(request, container, job["uuid"], None, login)
            response = streams.event_stream(body, status=201)
            response.headers["Location"] = url
            return response
    request.response.status = 201
    request.response.headers["Location"] = url
    return job_json(job, url)


def includeme(config: Configurator) -> None:
    config.scan(__name__)
