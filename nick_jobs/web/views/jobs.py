"""``/@jobs``: list, submit and read jobs.

Changing a job (delete, abort, retry, ...) is in ``views/control.py``, included after this
module: Pyramid tries a resource's views for one name in the order they were added, and a
view whose request method does not match costs an exception with a response object, so
the ``GET`` of a job, the most frequent request, is added first.
"""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import urlencode

from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response

from nick_jobs.jobs.listing import list_jobs
from nick_jobs.jobs.schemas import ListQuerySchema
from nick_jobs.jobs.serialize import job_json
from nick_jobs.settings import registry_settings
from nick_jobs.web import security
from nick_jobs.web.body import json_object_or_array
from nick_jobs.web.errors import Error, api_error
from nick_jobs.web.permissions import Permission
from nick_jobs.web.resources import JobContainer, JobResource
from nick_jobs.web.views import api_view, streams
from nick_jobs.web.views.submit import submit_job, submit_jobs

# Schemas are stateless once built; building one per request costs more than loading.
_LIST_QUERY_SCHEMA = ListQuerySchema()


def job_url(container: JobContainer, uuid: str) -> str:
    # The container's URL is kept (JobContainer.url) and a uuid needs no quoting in a
    # path: what resource_url would give, without its traversal of the lineage.
    return f"{container.url()}/{uuid}"


@api_view(
    context=JobContainer,
    request_method="GET",
    permission=Permission.VIEW_JOBS,
    query=_LIST_QUERY_SCHEMA.fields,
)
def list_view(context: JobContainer, request: Request) -> Response | list[dict[str, Any]]:
    settings = registry_settings(request.registry)
    query = _LIST_QUERY_SCHEMA.load(request.GET.mixed())
    size = min(query.get("b_size", settings.default_page_size), settings.max_page_size)
    actor = query.get("actor")
    if not context.sees_all():
        if actor and actor != request.authenticated_userid:
            return []
        actor = request.authenticated_userid
    # One URL computation for the page: its jobs and its next link.
    base = context.url()
    page = list_jobs(
        request.dbconn,
        base_url=base,
        size=size,
        cursor=query.get("cursor"),
        start=query.get("b_start", 0),
        sort=query.get("sort", "newest"),
        status=query.get("status"),
        actor=actor,
        action=query.get("action"),
        q=query.get("q"),
        parent=str(query["parent"]) if "parent" in query else None,
        want_total=query.get("count", False),
        guard=security.guard(request),
    )
    if page.guard_held:
        security.confirmed(request)
    headers: list[tuple[str, str]] = []
    if page.next_cursor:
        params = {k: v for k, v in request.GET.items() if k not in ("cursor", "b_start")}
        params["cursor"] = page.next_cursor
        next_url = base + "?" + urlencode(params)
        headers.append(("Link", f'<{next_url}>; rel="next"'))
    if page.total is not None:
        headers.append(("X-Total-Count", str(page.total)))
    if page.json_rows:
        return _json_text("[" + ",".join(row.json for row in page.rows) + "]", headers)
    request.response.headers.extend(headers)
    # By the row's mapping: a row's attributes cost more, and a page is 50 rows.
    return [job_json(row._mapping, f"{base}/{row.uuid}") for row in page.rows]


def _json_text(text: str, headers: list[tuple[str, str]] | None = None) -> Response:
    """The response for JSON the database wrote: sent as it is, no renderer, with
    ``headers`` besides its type and length.

    A response made with its headers costs a fifth of setting the type and body on the
    request's (``request.response``).
    """
    body = text.encode()
    headerlist = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    if headers:
        headerlist.extend(headers)
    return Response(body=body, headerlist=headerlist)


def follow_asked(request: Request) -> bool:
    """The request's ``follow``: ``true`` or ``false`` (or 1/0, yes/no); else a 400."""
    value = request.GET.get("follow", "false").strip().lower()
    if value not in _FOLLOW_VALUES:
        raise api_error(Error.BAD_REQUEST, "follow takes true or false.")
    return _FOLLOW_VALUES[value]


_FOLLOW_VALUES = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@api_view(
    context=JobContainer, request_method="POST", permission=Permission.ADD_JOBS, query=("follow",)
)
def create_view(
    context: JobContainer, request: Request
) -> Response | dict[str, Any] | list[dict[str, Any]]:
    follow = follow_asked(request)
    data = json_object_or_array(request)
    # The URL before the job: a Host that can't be written in it is refused with nothing made.
    base = context.url()
    if isinstance(data, list):
        if follow:
            raise api_error(Error.BAD_REQUEST, "follow=true takes one job, not an array.")
        jobs, created = submit_jobs(request, context, data)
        request.response.status = 201 if created else 200
        return [job_json(job, f"{base}/{job['uuid']}") for job in jobs]
    # The stream's slot is taken before the job exists: a refused stream (503) must not
    # leave behind a job the client doesn't know it created.
    with streams.stream_slot(request) if follow else contextlib.nullcontext() as login:
        job, created = submit_job(request, context, data)
        url = f"{base}/{job['uuid']}"
        if login is not None:
            # ?follow=true: the answer is the new job's stream (its first event is the
            # job as stored, sent once the submit has committed).
            body = streams.job_stream(request, context, job["uuid"], None, login)
            response = streams.event_stream(body, status=201 if created else 200)
            response.headers["Location"] = url
            return response
    request.response.status = 201 if created else 200
    request.response.headers["Location"] = url
    return job_json(job, url)


@api_view(context=JobResource, request_method="GET", permission=Permission.VIEW_JOB)
def get_view(context: JobResource, request: Request) -> Response | dict[str, Any]:
    # On PostgreSQL the job was read as its JSON (resources.JobContainer's lookup).
    written = getattr(context.job, "job_json", None)
    if written is not None:
        return _json_text(written)
    return job_json(context.job, job_url(context.__parent__, context.job.uuid))


def includeme(config: Configurator) -> None:
    config.scan(__name__)
