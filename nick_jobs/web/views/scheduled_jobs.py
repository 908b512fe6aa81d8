"""``/@scheduled-jobs`` and ``/@scheduled-job-actions``: cron rules that create jobs.

Every view needs ``Manage Site``, as Nick guards its site administration.
"""

from __future__ import annotations

from typing import Any

from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPException, HTTPNoContent
from pyramid.request import Request

from nick_jobs.jobs.actions import get_registry
from nick_jobs.jobs.remote_actions import Actions
from nick_jobs.scheduling import scheduled_jobs
from nick_jobs.scheduling.model import ScheduledJob
from nick_jobs.scheduling.scheduled_jobs import (
    PreviewQuerySchema,
    ScheduledJobCreateSchema,
    ScheduledJobPatchSchema,
    scheduled_job_json,
)
from nick_jobs.web import urls
from nick_jobs.web.body import json_body
from nick_jobs.web.errors import Error, api_error, authenticated_login
from nick_jobs.web.permissions import Permission
from nick_jobs.web.resources import Root, ScheduledJobContainer, ScheduledJobResource
from nick_jobs.web.views import api_view

MANAGE = Permission.MANAGE_SITE


def _url(request: Request, container: ScheduledJobContainer, id_: str) -> str:
    return urls.resource_url(request, container, id_)


def _declared(row: ScheduledJob) -> HTTPException:
    return api_error(
        Error.DECLARED_SCHEDULED_JOB,
        f"The scheduled job {row.id!r} is declared in the configuration; change it there.",
    )


@api_view(context=ScheduledJobContainer, request_method="GET", permission=MANAGE)
def list_view(context: ScheduledJobContainer, request: Request) -> list[dict[str, Any]]:
    rows = request.dbsession.query(ScheduledJob).order_by(ScheduledJob.id).all()
    return [scheduled_job_json(row, _url(request, context, row.id)) for row in rows]


@api_view(context=ScheduledJobContainer, request_method="POST", permission=MANAGE)
def create_view(context: ScheduledJobContainer, request: Request) -> dict[str, Any]:
    data = ScheduledJobCreateSchema().load(json_body(request))
    try:
        row = scheduled_jobs.create(
            request.dbsession, request.registry, data, actor=authenticated_login(request)
        )
    except scheduled_jobs.AlreadyExists:
        raise api_error(
            Error.CONFLICT, f"A scheduled job with the id {data['id']!r} already exists."
        ) from None
    url = _url(request, context, row.id)
    request.response.status = 201
    request.response.headers["Location"] = url
    return scheduled_job_json(row, url)


@api_view(context=ScheduledJobResource, request_method="GET", permission=MANAGE)
def get_view(context: ScheduledJobResource, request: Request) -> dict[str, Any]:
    return scheduled_job_json(context.row, _url(request, context.__parent__, context.row.id))


@api_view(context=ScheduledJobResource, request_method="PATCH", permission=MANAGE)
def patch_view(context: ScheduledJobResource, request: Request) -> dict[str, Any] | HTTPNoContent:
    data = ScheduledJobPatchSchema().load(json_body(request))
    if context.row.declared:
        raise _declared(context.row)
    row = scheduled_jobs.update(request.registry, context.row, data, request.dbsession)
    request.dbsession.flush()
    if "return=representation" in request.headers.get("Prefer", ""):
        return scheduled_job_json(row, _url(request, context.__parent__, row.id))
    return HTTPNoContent()


@api_view(context=ScheduledJobResource, request_method="DELETE", permission=MANAGE)
def delete_view(context: ScheduledJobResource, request: Request) -> HTTPNoContent:
    if context.row.declared:
        raise _declared(context.row)
    scheduled_jobs.delete(request.dbsession, context.row)
    return HTTPNoContent()


_PREVIEW_QUERY_SCHEMA = PreviewQuerySchema()


@api_view(
    context=ScheduledJobContainer,
    name="@preview",
    request_method="GET",
    permission=MANAGE,
    query=_PREVIEW_QUERY_SCHEMA.fields,
)
def preview_view(context: ScheduledJobContainer, request: Request) -> dict[str, Any]:
    """The next firings of a cron rule, computed as the scheduler computes them, so a
    form can show what a schedule means before it is saved."""
    query = _PREVIEW_QUERY_SCHEMA.load(request.GET.mixed())
    request.response.cache_control = "no-store"
    return scheduled_jobs.preview(query["schedule"], query["timezone"], query["count"])


@api_view(context=Root, name="@scheduled-job-actions", request_method="GET", permission=MANAGE)
def actions_view(context: Root, request: Request) -> list[dict[str, Any]]:
    # Remote actions too: a schedule may create their jobs, for consumers to claim.
    return [action.describe() for action in Actions(get_registry(request.registry), request.dbconn)]


def includeme(config: Configurator) -> None:
    config.scan(__name__)
