"""``/@jobs/{uuid}/log`` and ``/@jobs/{uuid}/history``: what a job wrote, and what happened.

``GET /@jobs/{uuid}/log?follow=true`` answers with the stream of the job's lines instead
(``views/streams.py``)."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from marshmallow import Schema, fields, validate
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response

from nick_jobs.db.meta import table
from nick_jobs.jobs.listing import decode_cursor, encode_cursor
from nick_jobs.jobs.model import JobHistory, JobLog, JobStatus
from nick_jobs.jobs.serialize import isoformat
from nick_jobs.settings import registry_settings
from nick_jobs.web import urls
from nick_jobs.web.errors import Error, api_error
from nick_jobs.web.permissions import Permission
from nick_jobs.web.resources import JobResource
from nick_jobs.web.views import api_view, streams
from nick_jobs.web.views.jobs import follow_asked
from nick_jobs.worker.reporting import LEVEL_NAMES, LEVELS, level_name

_logs = table(JobLog)
_history = table(JobHistory)

# Oldest first, after the cursor, at or above a level: the (job_uuid, id) index serves it.
_LOG_PAGE = (
    sa.select(_logs.c.id, _logs.c.time, _logs.c.level, _logs.c.message, _logs.c.attempt)
    .where(
        _logs.c.job_uuid == sa.bindparam("b_uuid"),
        _logs.c.id > sa.bindparam("b_after"),
        _logs.c.level >= sa.bindparam("b_level"),
    )
    .order_by(_logs.c.id)
    .limit(sa.bindparam("b_limit"))
)
_HISTORY = (
    sa.select(_history.c.time, _history.c.event, _history.c.by, _history.c.attempt, _history.c.data)
    .where(_history.c.job_uuid == sa.bindparam("b_uuid"))
    .order_by(_history.c.time, _history.c.id)
)


class LogQuerySchema(Schema):
    """``GET /@jobs/{uuid}/log`` query parameters."""

    level = fields.String(validate=validate.OneOf(LEVEL_NAMES))
    b_size = fields.Integer(validate=validate.Range(min=1))
    cursor = fields.String(validate=validate.Length(max=200))


_LOG_QUERY_SCHEMA = LogQuerySchema()


@api_view(
    context=JobResource,
    name="log",
    request_method="GET",
    permission=Permission.VIEW_JOB,
    query=(*_LOG_QUERY_SCHEMA.fields, "follow", *streams.STREAM_QUERY),
)
def log_view(context: JobResource, request: Request) -> Response | list[dict[str, Any]]:
    follow = follow_asked(request)
    settings = registry_settings(request.registry)
    given = request.GET.mixed()
    for name in ("follow", *streams.STREAM_QUERY):
        given.pop(name, None)
    query = _LOG_QUERY_SCHEMA.load(given)
    after = decode_cursor(query["cursor"]) if query.get("cursor") else 0
    if follow:
        if "b_size" in query:
            raise api_error(Error.BAD_REQUEST, "A followed log is not paged: leave out b_size.")
        # From the first line (or after the cursor's): the stream alone is the whole log.
        with streams.stream_slot(request) as login:
            level = LEVELS[query.get("level", "debug")]
            body = streams.log_stream(request, context.job.uuid, after, level, login)
        return streams.event_stream(body)
    size = min(query.get("b_size", settings.default_page_size), settings.max_page_size)
    params = {
        "b_uuid": context.job.uuid,
        "b_after": after,
        "b_level": LEVELS[query.get("level", "debug")],
        "b_limit": size + 1,  # one more than the page tells whether a next page exists
    }
    rows = request.dbconn.execute(_LOG_PAGE, params).all()
    if len(rows) > size:
        rows = rows[:size]
        next_params = {k: v for k, v in request.GET.items() if k != "cursor"}
        next_params["cursor"] = encode_cursor(rows[-1].id)
        next_url = urls.resource_url(request, context, "log") + "?" + urlencode(next_params)
        request.response.headers["Link"] = f'<{next_url}>; rel="next"'
    return [
        {
            "time": isoformat(row.time),
            "level": level_name(row.level),
            "message": row.message,
            "attempt": row.attempt,
        }
        for row in rows
    ]


def who(by: str) -> str:
    """The JWT subject of a person; ``worker`` or ``system`` for nick-jobs itself."""
    if by in ("worker", "system"):
        return by
    if by.startswith("nick-jobs:"):
        return "worker" if by == "nick-jobs:worker" else "system"
    return by


def _api_time(value: Any) -> Any:
    """A time stored as Python's ISO string, in the API's format."""
    if not isinstance(value, str):
        return value
    try:
        return isoformat(dt.datetime.fromisoformat(value))
    except ValueError:
        return value


def _data(data: dict[str, Any] | None) -> dict[str, Any]:
    data = dict(data or {})
    previous = data.get("previous_attempt")
    if isinstance(previous, dict):
        previous = dict(previous)
        for key in ("started", "finished"):
            previous[key] = _api_time(previous.get(key))
        data["previous_attempt"] = previous
    if "next_run" in data:
        data["next_run"] = _api_time(data["next_run"])
    # The event's own keys win over anything stored alongside them.
    for key in ("time", "event", "by", "attempt"):
        data.pop(key, None)
    return data


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        return None


def _earlier_attempt(event: str, data: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The start (and, for a manual retry, the end) of the attempt a row replaced."""
    previous = (data or {}).get("previous_attempt")
    if not isinstance(previous, dict):
        return []
    events = []
    attempt = previous.get("attempt")
    started = _parse_time(previous.get("started"))
    if started is not None:
        events.append({"time": started, "event": "started", "by": "worker", "attempt": attempt})
    finished = _parse_time(previous.get("finished"))
    # A resume replaces a stopped attempt, whose stop only the job's row held.
    if event == "resumed" and finished is not None and previous.get("status") == "stopped":
        events.append({"time": finished, "event": "stopped", "by": "worker", "attempt": attempt})
    # A manual retry, or a resume from a failure's checkpoint, replaces an attempt that
    # ended on its own, which nothing recorded.
    replaces_failure = event in ("retried", "resumed") and previous.get("status") == "failed"
    if replaces_failure and finished is not None:
        error = previous.get("error") or {}
        events.append(
            {
                "time": finished,
                "event": "failed",
                "by": "worker",
                "attempt": attempt,
                "error": {"type": error.get("type", ""), "message": error.get("message", "")},
            }
        )
    return events


def _current_attempt(job: Any, recorded: set[tuple[str, int]]) -> list[dict[str, Any]]:
    """The current attempt's start and end, which only the job's row holds."""
    events: list[tuple[Any, str, str, dict[str, Any]]] = []
    # A remote job's consumer is named: the login that claimed the attempt.
    worker = getattr(job, "worker", None) or "worker"
    if job.started is not None:
        events.append((job.started, "started", worker, {}))
    if job.finished is not None and (job.status, job.attempt) not in recorded:
        error = job.error or {}
        data: dict[str, Any] = {}
        by = worker
        if job.status == JobStatus.FAILED:
            data["error"] = {"type": error.get("type", ""), "message": error.get("message", "")}
            if error.get("type") == "WorkerLost":
                by = "system"  # the sweeper gave up on a lost worker
        elif job.status == JobStatus.COMPLETED:
            data["result"] = job.result or {}
        elif job.status != JobStatus.STOPPED:  # stopped at the handler's check: the worker
            by = "system"
        events.append((job.finished, job.status, by, data))
    return [
        {"time": time, "event": event, "by": by, "attempt": job.attempt, **data}
        for time, event, by, data in events
    ]


@api_view(context=JobResource, name="history", request_method="GET", permission=Permission.VIEW_JOB)
def history_view(context: JobResource, request: Request) -> list[dict[str, Any]]:
    job = context.job
    rows = request.dbconn.execute(_HISTORY, {"b_uuid": job.uuid}).all()
    # (time, attempt, rank, order, event): times are kept to the millisecond, so among
    # equal times: the earlier attempt, then creation, start, the rest as written.
    timeline = [
        (
            row.time,
            row.attempt,
            0 if row.event == "created" else 2,
            index,
            {"event": row.event, "by": who(row.by), "attempt": row.attempt, **_data(row.data)},
        )
        for index, row in enumerate(rows)
    ]
    recorded = {(row.event, row.attempt) for row in rows}
    derived = [event for row in rows for event in _earlier_attempt(row.event, row.data)]
    for event in derived + _current_attempt(job, recorded):
        rank = 1 if event["event"] == "started" else 2
        timeline.append((event.pop("time"), event["attempt"] or 0, rank, len(timeline), event))
    timeline.sort(key=lambda item: item[:4])
    return [{"time": isoformat(time), **event} for time, *_, event in timeline]


def includeme(config: Configurator) -> None:
    config.scan(__name__)
