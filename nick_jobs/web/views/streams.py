"""``GET /@jobs/{uuid}/stream``, ``GET /@jobs/stream`` and ``POST /@stream-tickets``, and
the streams other views answer with: a new job's (``?follow=true`` of a submit or a
restart) and a job's log lines (``GET /@jobs/{uuid}/log?follow=true``).

A stream is an open response (``text/event-stream``) fed by the process's
:class:`~nick_jobs.streams.hub.StreamHub`; its view only checks access, takes a slot
from the stream limits and hands the hub a cursor. Events are framed on the stream's own
thread, which holds no database connection.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import sqlalchemy as sa
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response

from nick_jobs.db.meta import utcnow
from nick_jobs.jobs.model import FINISHED_STATUSES, Job, JobLog
from nick_jobs.jobs.serialize import isoformat, job_json
from nick_jobs.settings import registry_settings
from nick_jobs.streams import sse, tickets
from nick_jobs.streams.hub import StreamHub, Subscription
from nick_jobs.streams.limits import StreamLimits
from nick_jobs.web import urls
from nick_jobs.web.body import json_body
from nick_jobs.web.errors import Error, api_error, authenticated_login
from nick_jobs.web.permissions import Permission
from nick_jobs.web.resources import JobContainer, JobResource, Root
from nick_jobs.web.views import api_view
from nick_jobs.worker.reporting import level_name

_NEWEST_LINE = sa.select(sa.func.max(JobLog.id)).where(JobLog.job_uuid == sa.bindparam("b_uuid"))


_NEWEST_CHANGE = sa.select(sa.func.max(Job.changed))

# The query parameters every stream takes besides its own: a ticket, and the event to
# resume after for a reader that can't send Last-Event-ID (an EventSource opened anew with
# a fresh ticket).
STREAM_QUERY = ("ticket", "last_event_id")

# How often an idle stream asks the server whether its client is still there: a gone
# client's slot is free again within about this (docs/streams.md#gone-clients).
CLIENT_CHECK_S = 1.0


class StreamBody:
    """The response body: events from a subscription until a close or the lifetime ends.

    A class, not a generator, so the slot and the subscription are given back by
    ``close()`` even when the server never starts iterating (a client gone at once).
    The subscription is made on the first iteration, after the request's transaction
    has committed: a job submitted with ``?follow=true`` is visible to the hub by then.
    """

    def __init__(
        self,
        request: Request,
        render: Callable[[str, Any, str | None], bytes],
        subscribe: Callable[[], Subscription],
        first: list[bytes],
        login: str,
    ) -> None:
        self.settings = registry_settings(request.registry).streams
        self.hub = _hub(request)
        self.limits = _limits(request)
        self.render = render
        self.subscribe = subscribe
        self.first = first
        self.login = login
        self.subscription: Subscription | None = None
        self.released = False
        # Whether the client has closed its connection, from servers that can tell
        # (waitress: docs/streams.md#gone-clients); elsewhere a gone client is noticed
        # only when a write to it fails.
        gone = request.environ.get("waitress.client_disconnected")
        self.client_gone: Callable[[], bool] | None = gone if callable(gone) else None

    def __iter__(self) -> Iterator[bytes]:
        return self._events()

    def _events(self) -> Iterator[bytes]:
        yield sse.retry(self.settings.retry_ms) + b"".join(self.first)
        if self.first and self.first[-1].startswith(b"event: close"):
            return
        self.subscription = self.subscribe()
        now = time.monotonic()
        deadline = now + self.settings.max_lifetime_s
        keepalive_at = now + self.settings.keepalive_s
        while True:
            if self.client_gone is not None and self.client_gone():
                # Its slot goes back now (close()), not at the next write that fails.
                return
            now = time.monotonic()
            if now >= deadline:
                yield sse.frame("close", {"reason": "lifetime", "reconnect": True})
                return
            if now >= keepalive_at:
                # Proxies cut a connection that is silent for long; a comment isn't.
                yield sse.KEEPALIVE
                keepalive_at = time.monotonic() + self.settings.keepalive_s
                continue
            wait = min(keepalive_at, deadline) - now
            if self.client_gone is not None:
                wait = min(wait, CLIENT_CHECK_S)
            event = self.subscription.get(wait)
            if event is None:
                continue
            name, payload, event_id = event
            yield self.render(name, payload, event_id)
            if name == "close":
                return
            keepalive_at = time.monotonic() + self.settings.keepalive_s

    def close(self) -> None:
        if self.released:
            return
        self.released = True
        if self.subscription is not None:
            self.hub.unsubscribe(self.subscription)
        self.limits.release(self.login)


def event_stream(body: StreamBody, status: int = 200) -> Response:
    response = Response(status=status, content_type="text/event-stream", charset="utf-8")
    response.app_iter = body
    # Nothing between the server and the client may buffer or cache the stream.
    response.headers["Cache-Control"] = "no-cache, no-store"
    response.headers["X-Accel-Buffering"] = "no"
    return response


def _hub(request: Request) -> StreamHub:
    hub: StreamHub = request.registry["nick_jobs.stream_hub"]
    return hub


def _limits(request: Request) -> StreamLimits:
    limits: StreamLimits = request.registry["nick_jobs.stream_limits"]
    return limits


@contextlib.contextmanager
def stream_slot(request: Request) -> Iterator[str]:
    """A stream slot for the caller (their login), or the 503 that says to come back later.

    The slot passes to the :class:`StreamBody` made inside the block, which gives it back
    when the stream ends; an error before that gives it back here.
    """
    login = authenticated_login(request)
    limits = _limits(request)
    refused = limits.acquire(login)
    if refused is not None:
        error = api_error(Error.TOO_MANY_STREAMS, refused + "; try again shortly.")
        error.headers["Retry-After"] = "5"
        raise error
    try:
        yield login
    except BaseException:
        limits.release(login)
        raise


def _last_event_id(request: Request, parse: Callable[[str], Any]) -> Any:
    # The header wins: an EventSource opened with ?last_event_id= sends the header, with
    # the later id it has reached, when it reconnects by itself to the same URL.
    name, value = "Last-Event-ID", request.headers.get("Last-Event-ID")
    if not value:
        name, value = "last_event_id", request.GET.get("last_event_id")
    if not value:
        return None
    try:
        return parse(value)
    except sse.BadEventId:
        raise api_error(
            Error.BAD_REQUEST, f"{name} is not an event id this service wrote."
        ) from None


def job_renderer(job_url: str) -> Callable[[str, Any, str | None], bytes]:
    def render(name: str, payload: Any, event_id: str | None) -> bytes:
        if name == "status":
            data = job_json(payload, job_url)
        elif name == "progress":
            data = progress_json(payload, job_url)
        elif name == "log":
            data = log_json(payload)
        else:
            data = payload
        return sse.frame(name, data, event_id)

    return render


def log_json(line: Any) -> dict[str, Any]:
    """A ``log`` event's data: one ``job_logs`` row."""
    return {
        "uuid": line.job_uuid,
        "attempt": line.attempt,
        "time": isoformat(line.time),
        "level": level_name(line.level),
        "message": line.message,
    }


def render_log(name: str, payload: Any, event_id: str | None) -> bytes:
    return sse.frame(name, log_json(payload) if name == "log" else payload, event_id)


def progress_json(job: Any, job_url: str) -> dict[str, Any]:
    return {"@id": job_url, "uuid": job.uuid, "attempt": job.attempt, "progress": job.progress}


def job_stream(
    request: Request, container: JobContainer, uuid: str, job: Any | None, login: str
) -> StreamBody:
    """The stream of one job; ``job`` is its row when known now (GET), None right after
    a submit (the hub sends its first status once the transaction has committed)."""
    hub = _hub(request)
    render = job_renderer(f"{container.url()}/{uuid}")
    cursor = _last_event_id(request, sse.JobCursor.parse) if job is not None else None
    first: list[bytes] = []
    if cursor is None:
        # Right after a submit every line of the job is new: from the first one.
        cursor = sse.JobCursor(log_id=0 if job is None else None)
        if job is not None:
            # A fresh stream starts with where the job stands, without waiting for a poll,
            # and shows the lines written from now on (older ones: GET .../log).
            cursor.log_id = request.dbconn.execute(_NEWEST_LINE, {"b_uuid": uuid}).scalar() or 0
            cursor.changed = job.changed
            first.append(render("status", job, cursor.event_id()))
            if job.progress is not None:
                cursor.progress = sse.progress_checksum(job.progress)
                first.append(render("progress", job, cursor.event_id()))
            if job.status in FINISHED_STATUSES:
                first.append(sse.frame("close", {"reason": "finished", "reconnect": False}))
    return StreamBody(request, render, lambda: hub.subscribe_job(uuid, cursor), first, login)


def log_stream(request: Request, uuid: str, after: int, min_level: int, login: str) -> StreamBody:
    """The stream of one job's log lines after line id ``after`` (``Last-Event-ID`` or
    ``last_event_id``, when sent, instead), at or above ``min_level``; closed once the job
    has ended."""
    hub = _hub(request)
    resumed = _last_event_id(request, sse.parse_line_id)
    if resumed is not None:
        after = resumed
    return StreamBody(
        request, render_log, lambda: hub.subscribe_log(uuid, after, min_level), [], login
    )


@api_view(
    context=JobResource,
    name="stream",
    request_method="GET",
    permission=Permission.VIEW_JOB,
    query=STREAM_QUERY,
)
def job_stream_view(context: JobResource, request: Request) -> Response:
    with stream_slot(request) as login:
        body = job_stream(request, context.__parent__, context.job.uuid, context.job, login)
    return event_stream(body)


@api_view(
    context=JobContainer,
    name="stream",
    request_method="GET",
    permission=Permission.VIEW_JOBS,
    query=STREAM_QUERY,
)
def jobs_stream_view(context: JobContainer, request: Request) -> Response:
    with stream_slot(request) as login:
        after = _last_event_id(request, sse.parse_feed_id)
        if after is None:
            # "From now on" means from this request, not from the hub's next look: a job
            # that changes while the stream is being set up is still sent.
            after = request.dbconn.execute(_NEWEST_CHANGE).scalar() or 0
        base = context.url() + "/"
        sees_all = context.sees_all()

        def allowed(row: Any) -> bool:
            return sees_all or row.actor == login

        def render(name: str, payload: Any, event_id: str | None) -> bytes:
            data = job_json(payload, base + payload.uuid) if name == "status" else payload
            return sse.frame(name, data, event_id)

        hub = _hub(request)
        body = StreamBody(request, render, lambda: hub.subscribe_feed(after, allowed), [], login)
    return event_stream(body)


@api_view(
    context=Root, name="@stream-tickets", request_method="POST", permission=Permission.VIEW_JOBS
)
def ticket_view(context: Root, request: Request) -> dict[str, str | None]:
    identity = request.identity
    if not identity.token:
        raise api_error(Error.FORBIDDEN, "A ticket is asked for with a bearer token.")
    data = json_body(request)
    stream = data.get("stream") if isinstance(data, dict) else None
    path = _ticket_path(request, context, stream)
    settings = registry_settings(request.registry)
    ticket, expires = tickets.issue(
        settings, identity.login, identity.fingerprint, path, utcnow(), identity.issued
    )
    request.response.status = 201
    query = "?follow=true&ticket=" if tickets.is_log(path) else "?ticket="
    return {
        "ticket": ticket,
        "expires": isoformat(expires),
        "url": _ticket_url(request, path) + query + ticket,
    }


def _ticket_path(request: Request, root: Root, stream: Any) -> str:
    """The path, as the server will see it, of the stream a ticket request names."""
    try:
        parts = urlsplit(stream) if isinstance(stream, str) else None
    except ValueError:  # "http://[": not a URL
        parts = None
    path = parts.path if parts is not None else ""
    if path.startswith("/@jobs/"):
        # Named from the API's root, as a client that knows only its base URL names it:
        # the server sees it under the root's own path (a SCRIPT_NAME, a host's folder).
        path = request.resource_path(root).rstrip("/") + path
    query = dict(parse_qsl(parts.query)) if parts is not None else {}
    if not tickets.opens("GET", path, query):
        raise api_error(
            Error.BAD_REQUEST,
            'Give the stream to open as {"stream": "/@jobs/<uuid>/stream"}, '
            '{"stream": "/@jobs/stream"} or {"stream": "/@jobs/<uuid>/log?follow=true"}.',
        )
    return path


def _ticket_url(request: Request, path: str) -> str:
    # The ticket names the path as the server sees it (SCRIPT_NAME included); the public
    # URL stands for the scheme, host and SCRIPT_NAME together.
    script_name = request.script_name
    if script_name and path.startswith(script_name + "/"):
        path = path[len(script_name) :]
    return urls.application_url(request) + path


def includeme(config: Configurator) -> None:
    config.scan(__name__)
