"""The OpenAPI 3.1 document of the API, generated from what the application registers.

* **Paths and methods** come from the registered views (Pyramid's introspector): every
  view made with :func:`nick_jobs.web.views.api_view`, its resource type giving the URL
  template (:data:`PATH_TEMPLATES`) and its view name the last segment. A view added
  later appears on its own; one that :data:`OPERATIONS` does not describe makes
  :func:`generate` fail, so nothing is served undocumented.
* **Query parameters** are the names each view declares (``api_view(query=...)``), typed
  by the view's marshmallow query schema where it has one.
* **Bodies** are converted from the marshmallow schemas by apispec's MarshmallowPlugin:
  the schemas of what clients send (:mod:`nick_jobs.jobs.schemas`, the scheduled jobs'),
  and those below of what the API answers.
* **``POST /@jobs``'s params** are a ``oneOf`` of every registered action's params,
  discriminated by ``action``: each is the JSON Schema ``GET /@job-actions`` publishes,
  so a host's own actions appear.
* **Event streams** describe one event each (``*StreamEvent``), its ``data`` JSON of the
  kind's schema; **links** lead from a created job (or scheduled job) to what may be done
  with it next, for clients and tools that chain requests.

What a registration can't tell (a summary, the success statuses, the errors a view
raises itself) is in :data:`OPERATIONS`, one entry per ``(method, path template)``.
The errors every view shares are added by what the view is: any view may answer 400
(its query string), 500 and 503; a view that needs a permission 401 and 403; a view of
one job or one scheduled job 404; a view that reads a JSON body 413 and 415.

``python -m nick_jobs.web.openapi > docs/openapi.json`` writes the document of a
default installation.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import marshmallow
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema, fields, validate
from pyramid.security import NO_PERMISSION_REQUIRED

from nick_jobs.jobs.actions import get_registry, json_schema
from nick_jobs.jobs.model import JobStatus
from nick_jobs.jobs.remote_actions import KIND_PYTHON, KIND_REMOTE, NAME, DefinitionSchema
from nick_jobs.jobs.schemas import ActionsQuerySchema, JobCreateSchema, ListQuerySchema, LoginSchema
from nick_jobs.jobs.submission import MAX_BULK, MAX_IDEMPOTENCY_KEY
from nick_jobs.scheduling.model import SLUG
from nick_jobs.scheduling.scheduled_jobs import (
    PreviewQuerySchema,
    ScheduledJobCreateSchema,
    ScheduledJobPatchSchema,
)
from nick_jobs.web.errors import Error
from nick_jobs.web.resources import (
    ActionContainer,
    ActionResource,
    JobContainer,
    JobResource,
    Root,
    ScheduledJobContainer,
    ScheduledJobResource,
)
from nick_jobs.web.strict import QUERY_OPTION, SUBPATH_OPTION
from nick_jobs.web.views.consumers import (
    MAX_COMPLETE,
    CheckinSchema,
    ClaimSchema,
    CompleteItemSchema,
    CompleteSchema,
    FailSchema,
    LeaseRequestSchema,
    StoppedSchema,
)
from nick_jobs.web.views.job_details import LogQuerySchema
from nick_jobs.web.views.stats import StatsQuerySchema
from nick_jobs.worker.reporting import LEVEL_NAMES

OPENAPI_VERSION = "3.1.0"
BEARER = "bearerAuth"
#: A stream ticket in the query string, for the views that declare ``ticket``.
TICKET = "streamTicket"
#: Where the document is kept in the registry once made: (text, ETag).
REGISTRY_KEY = "nick_jobs.openapi"

#: The URL template of each resource type's views, from the API's root.
PATH_TEMPLATES: dict[type, str] = {
    Root: "",
    JobContainer: "/@jobs",
    JobResource: "/@jobs/{uuid}",
    ScheduledJobContainer: "/@scheduled-jobs",
    ScheduledJobResource: "/@scheduled-jobs/{id}",
    ActionContainer: "/@job-actions",
    ActionResource: "/@job-actions/{name}",
}
_PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "name": {
        "name": "name",
        "in": "path",
        "required": True,
        "description": "The action's name.",
        "schema": {"type": "string", "pattern": NAME},
    },
    "uuid": {
        "name": "uuid",
        "in": "path",
        "required": True,
        "description": "The job's uuid.",
        "schema": {"type": "string", "format": "uuid"},
    },
    "id": {
        "name": "id",
        "in": "path",
        "required": True,
        "description": "The scheduled job's id.",
        "schema": {"type": "string", "pattern": SLUG.pattern},
    },
}
# Resources whose URL names one thing that may not exist (or not be the caller's): 404.
_ONE_OF_MANY = (JobResource, ScheduledJobResource, ActionResource)

# Query parameters several views take that no query schema holds.
_SHARED_QUERY: dict[str, dict[str, Any]] = {
    "follow": {
        "description": "`true` answers with the event stream instead (`text/event-stream`); "
        "`true`/`false`, `1`/`0` or `yes`/`no`.",
        "schema": {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no"]},
    },
    "ticket": {
        "description": "A stream ticket (`POST /@stream-tickets`), for a client that can't "
        "send an `Authorization` header (a browser's EventSource).",
        "schema": {"type": "string"},
    },
    "last_event_id": {
        "description": "Resume after this event id, as the `Last-Event-ID` header does (the "
        "header wins when both are sent).",
        "schema": {"type": "string"},
    },
}


# --- what the API answers, as marshmallow schemas ---------------------------------------


def _url(description: str = "", **kwargs: Any) -> fields.String:
    """A URL the API writes (``fields.URL`` would say ``format: url``, not JSON Schema's)."""
    metadata: dict[str, Any] = {"format": "uri"}
    if description:
        metadata["description"] = description
    return fields.String(metadata=metadata, **kwargs)


class ErrorDetailSchema(Schema):
    class Meta:
        # Some errors carry more: ``fields`` (a validation error), ``status`` (a 409).
        unknown = marshmallow.INCLUDE

    type = fields.String(
        required=True,
        validate=validate.OneOf([error.type for error in Error]),
        metadata={"description": "What went wrong, one of the catalogue's types."},
    )
    message = fields.String(required=True, metadata={"description": "For people to read."})


class ErrorSchema(Schema):
    """Every error: ``{"error": {"type", "message"}}``."""

    error = fields.Nested(ErrorDetailSchema, required=True)


class ProgressStepSchema(Schema):
    name = fields.String(required=True)
    done = fields.Float(allow_none=True)
    total = fields.Float(allow_none=True)
    status = fields.String(validate=validate.OneOf(["pending", "running", "done"]))


class ProgressSchema(Schema):
    """What the running handler last reported."""

    percent = fields.Float(allow_none=True, validate=validate.Range(min=0, max=100))
    message = fields.String(allow_none=True)
    steps = fields.List(fields.Nested(ProgressStepSchema))


class JobErrorSchema(Schema):
    type = fields.String(required=True)
    message = fields.String(required=True)


class JobSchema(Schema):
    """A job (``nick_jobs.jobs.serialize.FIELDS``, after ``@id``; ``error`` when failed)."""

    id = _url("The job's URL.", data_key="@id", required=True)
    uuid = fields.UUID(required=True)
    title = fields.String(required=True)
    description = fields.String(required=True)
    params = fields.Dict(
        required=True, metadata={"description": "As submitted, with `action` among them."}
    )
    actor = fields.String(required=True, metadata={"description": "Who submitted it."})
    created = fields.DateTime(required=True)
    started = fields.DateTime(required=True, allow_none=True)
    finished = fields.DateTime(required=True, allow_none=True)
    status = fields.String(required=True, validate=validate.OneOf([s.value for s in JobStatus]))
    result = fields.Dict(required=True, metadata={"description": "`{}` until completed."})
    attempt = fields.Integer(required=True, validate=validate.Range(min=1))
    progress = fields.Nested(ProgressSchema, allow_none=True)
    parent = fields.UUID(
        allow_none=True, metadata={"description": "The job this one was restarted from."}
    )
    next_run = fields.DateTime(allow_none=True)
    checkin_data = fields.Raw(
        metadata={
            "description": "What a remote job's consumer sent with its last check-in "
            "(docs/remote-workers.md); absent when it sent none."
        }
    )
    error = fields.Nested(JobErrorSchema, metadata={"description": "A failed job's error."})


class LogLineSchema(Schema):
    time = fields.DateTime(required=True)
    level = fields.String(required=True, validate=validate.OneOf(LEVEL_NAMES))
    message = fields.String(required=True)
    attempt = fields.Integer(required=True)


class HistoryEventSchema(Schema):
    class Meta:
        unknown = marshmallow.INCLUDE  # an event's own data: error, result, previous_attempt…

    time = fields.DateTime(required=True)
    event = fields.String(required=True)
    by = fields.String(required=True, metadata={"description": "A login, `worker` or `system`."})
    attempt = fields.Integer(required=True, allow_none=True)


class JobActionSchema(Schema):
    name = fields.String(required=True)
    title = fields.String(required=True)
    description = fields.String(required=True)
    permission = fields.String(required=True)
    resumable = fields.Boolean(required=True)
    params = fields.Dict(
        required=True, metadata={"description": "A JSON Schema of the action's params."}
    )
    kind = fields.String(
        required=True,
        validate=validate.OneOf([KIND_PYTHON, KIND_REMOTE]),
        metadata={
            "description": "`python`: run by the service's workers; `remote`: declared as "
            "data, run by consumers over HTTP."
        },
    )
    # A remote action's: the rest of its definition (docs/remote-workers.md).
    version = fields.Integer(metadata={"description": "A remote action's current version."})
    result = fields.Dict(allow_none=True, metadata={"description": "Its result's JSON Schema."})
    labels = fields.Dict(keys=fields.String(), values=fields.String())
    max_retries = fields.Integer()
    min_backoff = fields.Float()
    max_backoff = fields.Float()
    lease = fields.Integer()
    claim_window = fields.Integer()


class JobActionVersionSchema(JobActionSchema):
    created = fields.DateTime(required=True, metadata={"description": "When it was made."})
    created_by = fields.String(required=True, metadata={"description": "Who made it."})


class LeaseSchema(Schema):
    id = fields.String(required=True, metadata={"description": "Present it with each report."})
    expires = fields.DateTime(
        required=True, metadata={"description": "Unless the consumer checks in before."}
    )


class ClaimedJobSchema(JobSchema):
    """A job a claim gave the consumer: the job, its lease, and a resumed job's checkpoint."""

    lease = fields.Nested(LeaseSchema, required=True)
    checkpoint = fields.Raw(metadata={"description": "A resumed job's: where to go on from."})


class CompleteOutcomeSchema(Schema):
    """What became of one job of a batch complete: ``completed``, or the ``error`` its
    single complete would have answered (a refused lease, a result the schema refuses)."""

    uuid = fields.UUID(required=True, metadata={"description": "The job's uuid."})
    completed = fields.Boolean(
        validate=validate.Equal(True), metadata={"description": "The job is completed."}
    )
    error = fields.Nested(
        ErrorDetailSchema,
        metadata={
            "description": "Why the job was not completed: `Lease refused` (with the job's "
            "`status`) or `Validation error` (with the `fields` at fault)."
        },
    )


class CheckinReplySchema(Schema):
    lease = fields.Nested(
        LeaseSchema,
        required=True,
        allow_none=True,
        metadata={"description": "Renewed; null when the job was aborted."},
    )
    abort = fields.Boolean(required=True, metadata={"description": "Stop now: it was aborted."})
    stop = fields.Boolean(
        required=True,
        metadata={"description": "Asked to stop: save a checkpoint and report `stopped`."},
    )


class TokenSchema(Schema):
    token = fields.String(required=True, metadata={"description": "A JWT: send it as a bearer."})


class TicketRequestSchema(Schema):
    stream = fields.String(
        required=True,
        metadata={
            "description": "The stream to open: `/@jobs/<uuid>/stream`, `/@jobs/stream` or "
            "`/@jobs/<uuid>/log?follow=true`."
        },
    )


class TicketSchema(Schema):
    ticket = fields.String(required=True)
    expires = fields.DateTime(required=True)
    url = _url("The stream's URL, with the ticket in it.", required=True)


class OldestWaitingSchema(Schema):
    id = _url(data_key="@id", required=True)
    uuid = fields.UUID(required=True)
    action = fields.String(required=True)
    actor = fields.String(required=True)
    attempt = fields.Integer(required=True)
    created = fields.DateTime(required=True)
    waiting_since = fields.DateTime(required=True)
    age = fields.Float(required=True, metadata={"description": "Seconds."})


class FinishedMinuteSchema(Schema):
    minute = fields.DateTime(required=True)
    completed = fields.Integer(required=True)
    failed = fields.Integer(required=True)
    aborted = fields.Integer(required=True)


class StatsSchema(Schema):
    id = _url(data_key="@id", required=True)
    generated = fields.DateTime(required=True)
    window = fields.Integer(required=True, metadata={"description": "Minutes."})
    total = fields.Integer(required=True)
    counts = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    by_action = fields.Dict(
        keys=fields.String(), values=fields.Dict(values=fields.Integer()), required=True
    )
    oldest_waiting = fields.Nested(OldestWaitingSchema, required=True, allow_none=True)
    finished_per_minute = fields.List(fields.Nested(FinishedMinuteSchema), required=True)


class SkippedSchema(Schema):
    slot = fields.DateTime(allow_none=True)
    at = fields.DateTime(allow_none=True)
    reason = fields.String()
    message = fields.String(allow_none=True)


class ScheduledJobSchema(Schema):
    id_url = _url(data_key="@id", required=True)
    id = fields.String(required=True)
    title = fields.String(required=True, allow_none=True)
    description = fields.String(required=True, allow_none=True)
    action = fields.String(required=True)
    params = fields.Dict(required=True)
    schedule = fields.String(required=True)
    enabled = fields.Boolean(required=True)
    timezone = fields.String(required=True)
    last_run = fields.DateTime(required=True, allow_none=True)
    next_run = fields.DateTime(required=True, allow_none=True)
    declared = fields.Boolean(
        required=True, metadata={"description": "Declared in the configuration: read-only."}
    )
    skipped = fields.Nested(SkippedSchema, required=True, allow_none=True)


class PreviewSchema(Schema):
    schedule = fields.String(required=True)
    timezone = fields.String(required=True)
    next = fields.List(fields.DateTime(), required=True)


class CheckSchema(Schema):
    class Meta:
        unknown = marshmallow.INCLUDE  # a check's own details

    status = fields.String(required=True, validate=validate.OneOf(["ok", "down", "unavailable"]))
    message = fields.String()
    duration_ms = fields.Float()
    required = fields.Boolean()


class ReadinessSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ok", "unavailable"]))
    checks = fields.Dict(keys=fields.String(), values=fields.Nested(CheckSchema), required=True)
    error = fields.Nested(
        ErrorDetailSchema, metadata={"description": "When not ready: which checks failed."}
    )


class ProgressEventSchema(Schema):
    id = _url(data_key="@id", required=True)
    uuid = fields.UUID(required=True)
    attempt = fields.Integer(required=True)
    progress = fields.Nested(ProgressSchema, required=True, allow_none=True)


class LogEventSchema(Schema):
    uuid = fields.UUID(required=True)
    attempt = fields.Integer(required=True)
    time = fields.DateTime(required=True)
    level = fields.String(required=True, validate=validate.OneOf(LEVEL_NAMES))
    message = fields.String(required=True)


class CloseEventSchema(Schema):
    reason = fields.String(
        required=True,
        validate=validate.OneOf(
            ["finished", "stopped", "deleted", "lifetime", "shutdown", "overflow"]
        ),
    )
    reconnect = fields.Boolean(required=True)


#: Each schema of a body, by the component name the document gives it.
COMPONENTS: dict[str, type[Schema]] = {
    "Error": ErrorSchema,
    "Job": JobSchema,
    "LogLine": LogLineSchema,
    "HistoryEvent": HistoryEventSchema,
    "JobAction": JobActionSchema,
    "JobActionVersion": JobActionVersionSchema,
    "RemoteActionDefinition": DefinitionSchema,
    "Claim": ClaimSchema,
    "ClaimedJob": ClaimedJobSchema,
    "Checkin": CheckinSchema,
    "CheckinReply": CheckinReplySchema,
    "Complete": CompleteSchema,
    "CompleteItem": CompleteItemSchema,
    "CompleteOutcome": CompleteOutcomeSchema,
    "Fail": FailSchema,
    "Stopped": StoppedSchema,
    "Release": LeaseRequestSchema,
    "Login": LoginSchema,
    "Token": TokenSchema,
    "TicketRequest": TicketRequestSchema,
    "Ticket": TicketSchema,
    "Stats": StatsSchema,
    "ScheduledJob": ScheduledJobSchema,
    "ScheduledJobCreate": ScheduledJobCreateSchema,
    "ScheduledJobPatch": ScheduledJobPatchSchema,
    "SchedulePreview": PreviewSchema,
    "Readiness": ReadinessSchema,
    "ProgressEvent": ProgressEventSchema,
    "LogEvent": LogEventSchema,
    "CloseEvent": CloseEventSchema,
}

# --- what the registrations can't tell, per operation -----------------------------------

JSON = "application/json"
EVENT_STREAM = "text/event-stream"
TEXT = "text/plain"
PROMETHEUS = "text/plain; version=0.0.4"


@dataclass(frozen=True)
class Reply:
    """A success response: its bodies by media type (a component name, a JSON Schema,
    or None for none) and the headers it carries."""

    description: str
    content: Mapping[str, str | dict[str, Any] | None] = field(default_factory=dict)
    headers: tuple[str, ...] = ()
    #: OpenAPI links: what a client may do next with what this response answered, by
    #: name: ``(method, path template)`` of the operation, and each path parameter's
    #: runtime expression.
    links: Mapping[str, tuple[str, str, Mapping[str, str]]] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    summary: str
    tag: str
    replies: Mapping[int, Reply]
    #: Errors the view raises itself, besides those every view of its kind may answer.
    errors: tuple[Error, ...] = ()
    description: str = ""
    #: The JSON body it reads: a component's name, or a schema.
    body: str | dict[str, Any] | None = None
    #: The marshmallow schema that types its query parameters.
    query: type[Schema] | None = None
    #: For a view open to anyone that still reads a token when there is one.
    token_optional: bool = False
    #: Request headers it reads (:data:`_HEADER_PARAMETERS`).
    headers: tuple[str, ...] = ()
    #: Paths below the view's own it answers (a view with ``subpath=True``).
    subpaths: Mapping[str, Operation] = field(default_factory=dict)


def _many(name: str) -> dict[str, Any]:
    return {"type": "array", "items": _ref(name)}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


JOB_SUBMISSION = "JobSubmission"
_BULK_SUBMISSION = {
    "type": "array",
    "items": _ref(JOB_SUBMISSION),
    "minItems": 1,
    "maxItems": MAX_BULK,
}
_STREAM_EVENTS = (
    "An event stream (`text/event-stream`, see docs/streams.md). Each event has an `id` "
    "to resume after (`Last-Event-ID`) and JSON `data`, by its kind:\n\n"
    "* `status`: the job, as `GET /@jobs/{uuid}` answers it (`Job`);\n"
    "* `progress`: what the handler reported (`ProgressEvent`);\n"
    "* `log`: one line the handler wrote (`LogEvent`);\n"
    "* `close`: why the stream ends and whether to reconnect (`CloseEvent`); the server "
    "ends the response right after it.\n\n"
    "An idle stream sends a comment line now and then, so proxies keep it open."
)


#: The schema of one event of each kind of stream, by component name (``*Event``).
STREAM_EVENTS: dict[str, dict[str, Any]] = {}


def _stream(name: str, kinds: Iterable[str]) -> dict[str, Any]:
    """The ``text/event-stream`` media type of a stream sending events of ``kinds``.

    Its ``schema`` is one event's (the component ``name``), as OpenAPI 3.1 tools read
    the ``schema`` of an event stream (3.2 names it ``itemSchema``): an event as a client
    parses it, ``event``, ``id``, ``retry`` and ``data``, whose JSON is the kind's schema
    (``contentSchema``). ``x-events`` maps each kind to that schema too.
    """
    kinds = tuple(kinds)
    schemas = {"status": "Job", "progress": "ProgressEvent", "log": "LogEvent"}
    schemas["close"] = "CloseEvent"
    STREAM_EVENTS[name] = {
        "type": "object",
        "description": "One server-sent event: its kind, its id (to resume after with "
        "`Last-Event-ID`) and its JSON `data`, of the kind's schema.",
        "properties": {
            "event": {"type": "string", "enum": list(kinds)},
            "id": {"type": "string"},
            "retry": {"type": "integer", "minimum": 0},
            "data": {"type": "string", "contentMediaType": JSON},
        },
        "required": ["event", "data"],
        "oneOf": [
            {
                "properties": {
                    "event": {"const": kind},
                    "data": {"contentMediaType": JSON, "contentSchema": _ref(schemas[kind])},
                }
            }
            for kind in kinds
        ],
    }
    return {"schema": _ref(name), "x-events": {kind: _ref(schemas[kind]) for kind in kinds}}


_JOB_STREAM = _stream("JobStreamEvent", ("status", "progress", "log", "close"))
_NO_CONTENT = Reply("Done; no body.")
# What a client does next with a job it created: its uuid names it in every job URL.
_JOB_UUID = {"uuid": "$response.body#/uuid"}
_JOB_LINKS = {
    name: (method, path, _JOB_UUID)
    for name, method, path in (
        ("GetJob", "GET", "/@jobs/{uuid}"),
        ("AbortJob", "POST", "/@jobs/{uuid}/abort"),
        ("RetryJob", "POST", "/@jobs/{uuid}/retry"),
        ("StopJob", "POST", "/@jobs/{uuid}/stop"),
        ("ResumeJob", "POST", "/@jobs/{uuid}/resume"),
        ("RestartJob", "POST", "/@jobs/{uuid}/restart"),
        ("ReadJobLog", "GET", "/@jobs/{uuid}/log"),
        ("ReadJobHistory", "GET", "/@jobs/{uuid}/history"),
        ("WatchJob", "GET", "/@jobs/{uuid}/stream"),
        ("DeleteJob", "DELETE", "/@jobs/{uuid}"),
    )
}
_SCHEDULED_JOB_ID = {"id": "$response.body#/id"}
_SCHEDULED_JOB_LINKS = {
    name: (method, "/@scheduled-jobs/{id}", _SCHEDULED_JOB_ID)
    for name, method in (
        ("GetScheduledJob", "GET"),
        ("ChangeScheduledJob", "PATCH"),
        ("DeleteScheduledJob", "DELETE"),
    )
}

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("POST", "/@login"): Operation(
        "Log in",
        "Authentication",
        {200: Reply("A token for the user.", {JSON: "Token"})},
        (Error.MISSING_CREDENTIALS, Error.INVALID_CREDENTIALS, Error.TOO_MANY_REQUESTS),
        "Trades a login and password for a JWT to send as `Authorization: Bearer <token>`.",
        body="Login",
    ),
    ("POST", "/@login-renew"): Operation(
        "Renew a token",
        "Authentication",
        {200: Reply("A fresh token for the same user.", {JSON: "Token"})},
        (Error.INVALID_SESSION,),
        token_optional=True,
    ),
    ("POST", "/@logout"): Operation(
        "Log out",
        "Authentication",
        {204: _NO_CONTENT},
        description="Revokes the token sent; without a valid one, a harmless no-op.",
        token_optional=True,
    ),
    ("GET", "/@jobs"): Operation(
        "List jobs",
        "Jobs",
        {
            200: Reply(
                "A page of jobs, newest first unless `sort=oldest`.",
                {JSON: _many("Job")},
                ("Link", "X-Total-Count"),
            )
        },
        (Error.INVALID_CURSOR,),
        "The caller's own jobs; an Administrator's list holds everyone's.",
        query=ListQuerySchema,
    ),
    ("POST", "/@jobs"): Operation(
        "Submit a job",
        "Jobs",
        {
            201: Reply(
                "The job, created (the jobs, for an array).",
                {JSON: {"oneOf": [_ref("Job"), _many("Job")]}, EVENT_STREAM: _JOB_STREAM},
                ("Location",),
                _JOB_LINKS,
            ),
            200: Reply(
                "The job (the jobs) an earlier request with the same `Idempotency-Key` created.",
                {JSON: {"oneOf": [_ref("Job"), _many("Job")]}, EVENT_STREAM: _JOB_STREAM},
                ("Location",),
                _JOB_LINKS,
            ),
        },
        (Error.INVALID_HEADER, Error.CONFLICT, Error.TOO_MANY_STREAMS),
        "The params are checked against the action's schema now: a bad submit is a 400, "
        "never a failed job. With `?follow=true` the answer is the new job's event stream.\n\n"
        f"An array of 1 to {MAX_BULK} submissions is a bulk submit: all are created, in one "
        "transaction, or none (a 400 lists the errors under each body's index, a 403 names "
        "the first job the caller may not submit). The answer is the array of jobs, in the "
        "order sent. With an `Idempotency-Key`, job i is stored under `<key>#<i>`; a key "
        "used before for another number of jobs is a 409.",
        body={"oneOf": [_ref(JOB_SUBMISSION), _BULK_SUBMISSION]},
        headers=("Idempotency-Key",),
    ),
    ("GET", "/@jobs/{uuid}"): Operation(
        "Get a job", "Jobs", {200: Reply("The job.", {JSON: "Job"})}
    ),
    ("DELETE", "/@jobs/{uuid}"): Operation(
        "Delete a job",
        "Jobs",
        {204: _NO_CONTENT},
        (Error.INVALID_STATE,),
        "A job that is running is refused (409): abort it first.",
    ),
    ("POST", "/@jobs/{uuid}/abort"): Operation(
        "Abort a job", "Jobs", {204: _NO_CONTENT}, (Error.INVALID_STATE,)
    ),
    ("POST", "/@jobs/@claim"): Operation(
        "Claim jobs to run",
        "Consumers",
        {
            200: Reply(
                "The claimed jobs, oldest first, each with its lease; `[]` when none came "
                "within `wait`.",
                {JSON: _many("ClaimedJob")},
            )
        },
        (Error.SERVICE_UNAVAILABLE,),
        "For consumers of remote actions (docs/remote-workers.md), permission `Run Jobs`. "
        "Each job claimed moves from created to running, held by the caller until its "
        "lease runs out; concurrent claims never get the same job. With `wait`, an empty "
        "answer waits that long for a job (a 503 when too many claims wait already).",
        body="Claim",
    ),
    ("POST", "/@jobs/{uuid}/checkin"): Operation(
        "Check in on a claimed job",
        "Consumers",
        {200: Reply("The renewed lease, and whether to abort or stop.", {JSON: "CheckinReply"})},
        (Error.LEASE_REFUSED,),
        "Renews the lease, records progress and log lines (the streams show them) and "
        "stores `data` on the job.",
        body="Checkin",
    ),
    ("POST", "/@jobs/{uuid}/complete"): Operation(
        "Complete a claimed job",
        "Consumers",
        {204: _NO_CONTENT},
        (Error.LEASE_REFUSED,),
        "A result the action's result schema refuses is a 400; the job keeps running.",
        body="Complete",
    ),
    ("POST", "/@jobs/@complete"): Operation(
        "Complete claimed jobs",
        "Consumers",
        {
            200: Reply(
                "One outcome a job, in the order sent: completed, or the error its single "
                "complete would have answered.",
                {JSON: _many("CompleteOutcome")},
            )
        },
        description="Up to 100 claimed jobs, each as `POST /@jobs/{uuid}/complete` would "
        "complete it, in one transaction. A job whose lease is refused, or whose result "
        "the action's result schema refuses (it keeps running), does not keep the others "
        "from completing. An invalid body is a 400 with the errors under each item's index.",
        body={
            "type": "array",
            "items": _ref("CompleteItem"),
            "minItems": 1,
            "maxItems": MAX_COMPLETE,
        },
    ),
    ("POST", "/@jobs/{uuid}/fail"): Operation(
        "Fail a claimed job",
        "Consumers",
        {204: _NO_CONTENT},
        (Error.LEASE_REFUSED,),
        "Retried automatically, with backoff, as the action's `max_retries` allows.",
        body="Fail",
    ),
    ("POST", "/@jobs/{uuid}/stopped"): Operation(
        "Report a claimed job stopped",
        "Consumers",
        {204: _NO_CONTENT},
        (Error.LEASE_REFUSED, Error.NOT_RESUMABLE),
        "After a stop request, for a resumable action: the checkpoint is where a resume "
        "goes on from.",
        body="Stopped",
    ),
    ("POST", "/@jobs/{uuid}/release"): Operation(
        "Hand a claimed job back",
        "Consumers",
        {204: _NO_CONTENT},
        (Error.LEASE_REFUSED,),
        "The job is created again, as a new attempt, for another consumer to claim.",
        body="Release",
    ),
    ("POST", "/@jobs/{uuid}/retry"): Operation(
        "Retry a job",
        "Jobs",
        {204: _NO_CONTENT},
        (Error.INVALID_STATE,),
        "Runs a failed or aborted job again, as its next attempt.",
    ),
    ("POST", "/@jobs/{uuid}/stop"): Operation(
        "Stop a job",
        "Jobs",
        {204: _NO_CONTENT},
        (Error.NOT_RESUMABLE, Error.INVALID_STATE),
        "Asks a running job of a resumable action to stop at its next checkpoint.",
    ),
    ("POST", "/@jobs/{uuid}/resume"): Operation(
        "Resume a job",
        "Jobs",
        {204: _NO_CONTENT},
        (Error.NOT_RESUMABLE, Error.INVALID_STATE),
        "Runs a stopped (or failed, resumable) job again from its checkpoint.",
    ),
    ("POST", "/@jobs/{uuid}/restart"): Operation(
        "Restart a job",
        "Jobs",
        {
            201: Reply(
                "The new job, with the same params; its `parent` is this one.",
                {JSON: "Job", EVENT_STREAM: _JOB_STREAM},
                ("Location",),
                _JOB_LINKS,
            )
        },
        (Error.UNKNOWN_ACTION, Error.INVALID_STATE, Error.TOO_MANY_STREAMS),
    ),
    ("GET", "/@jobs/{uuid}/log"): Operation(
        "Read a job's log",
        "Jobs",
        {
            200: Reply(
                "A page of the lines the job wrote, oldest first; with `?follow=true`, "
                "the stream of its lines (`log`, then `close` once the job has ended).",
                {JSON: _many("LogLine"), EVENT_STREAM: _stream("LogStreamEvent", ("log", "close"))},
                ("Link",),
            )
        },
        (Error.INVALID_CURSOR, Error.TOO_MANY_STREAMS),
        query=LogQuerySchema,
        headers=("Last-Event-ID",),
    ),
    ("GET", "/@jobs/{uuid}/history"): Operation(
        "Read a job's history",
        "Jobs",
        {200: Reply("What happened to the job, oldest first.", {JSON: _many("HistoryEvent")})},
    ),
    ("GET", "/@jobs/@stats"): Operation(
        "Statistics",
        "Jobs",
        {200: Reply("Figures over the jobs the caller may see.", {JSON: "Stats"})},
        query=StatsQuerySchema,
    ),
    ("GET", "/@jobs/{uuid}/stream"): Operation(
        "Watch a job",
        "Streams",
        {200: Reply(_STREAM_EVENTS, {EVENT_STREAM: _JOB_STREAM})},
        (Error.TOO_MANY_STREAMS,),
        headers=("Last-Event-ID",),
        description="The job's current status first, then its changes, progress and log lines, "
        "then `close` once it has finished.",
    ),
    ("GET", "/@jobs/stream"): Operation(
        "Watch every job",
        "Streams",
        {
            200: Reply(
                _STREAM_EVENTS, {EVENT_STREAM: _stream("JobsStreamEvent", ("status", "close"))}
            )
        },
        (Error.TOO_MANY_STREAMS,),
        headers=("Last-Event-ID",),
        description="A `status` event for each change of a job the caller may see.",
    ),
    ("POST", "/@stream-tickets"): Operation(
        "Get a stream ticket",
        "Streams",
        {201: Reply("A short-lived ticket that opens the one stream.", {JSON: "Ticket"})},
        description="For a browser's EventSource, which can't send `Authorization`.",
        body="TicketRequest",
    ),
    ("GET", "/@job-actions"): Operation(
        "List job actions",
        "Job actions",
        {
            200: Reply(
                "The actions the caller may submit, by name, with their params' JSON Schema.",
                {JSON: _many("JobAction")},
                ("Link",),
            )
        },
        (Error.INVALID_CURSOR,),
        query=ActionsQuerySchema,
    ),
    ("GET", "/@job-actions/{name}"): Operation(
        "Get a job action",
        "Job actions",
        {200: Reply("The action, Python or remote.", {JSON: "JobAction"})},
        description="An action the caller may not submit is a 404, as the list leaves it out.",
    ),
    ("PUT", "/@job-actions/{name}"): Operation(
        "Declare a remote action",
        "Job actions",
        {
            201: Reply("The remote action, made (version 1).", {JSON: "JobAction"}, ("Location",)),
            200: Reply(
                "The remote action: a new version when the change altered it, the same "
                "version when it did not.",
                {JSON: "JobAction"},
            ),
        },
        (Error.CONFLICT,),
        "Makes or changes a remote action (docs/remote-workers.md). What the body leaves "
        "out takes its default. With `version`, the change is refused (409) unless the "
        "action is at that version, so that two editors don't overwrite each other. A "
        "Python action's name is a 409.",
        body="RemoteActionDefinition",
    ),
    ("DELETE", "/@job-actions/{name}"): Operation(
        "Delete a remote action",
        "Job actions",
        {204: _NO_CONTENT},
        (Error.CONFLICT,),
        "Its versions are kept, as its jobs name them. A Python action is a 409.",
    ),
    ("GET", "/@job-actions/{name}/versions"): Operation(
        "List a remote action's versions",
        "Job actions",
        {
            200: Reply(
                "Every version, newest first (the current one included); none for a Python action.",
                {JSON: _many("JobActionVersion")},
            )
        },
    ),
    ("GET", "/@scheduled-job-actions"): Operation(
        "List actions to schedule",
        "Scheduled jobs",
        {200: Reply("Every action, by name.", {JSON: _many("JobAction")})},
    ),
    ("GET", "/@scheduled-jobs"): Operation(
        "List scheduled jobs",
        "Scheduled jobs",
        {200: Reply("Every scheduled job, by id.", {JSON: _many("ScheduledJob")})},
    ),
    ("POST", "/@scheduled-jobs"): Operation(
        "Add a scheduled job",
        "Scheduled jobs",
        {
            201: Reply(
                "The scheduled job, created.",
                {JSON: "ScheduledJob"},
                ("Location",),
                _SCHEDULED_JOB_LINKS,
            )
        },
        (Error.CONFLICT,),
        body="ScheduledJobCreate",
    ),
    ("GET", "/@scheduled-jobs/@preview"): Operation(
        "Preview a schedule",
        "Scheduled jobs",
        {200: Reply("The next firings of the rule.", {JSON: "SchedulePreview"})},
        query=PreviewQuerySchema,
    ),
    ("GET", "/@scheduled-jobs/{id}"): Operation(
        "Get a scheduled job",
        "Scheduled jobs",
        {200: Reply("The scheduled job.", {JSON: "ScheduledJob"})},
    ),
    ("PATCH", "/@scheduled-jobs/{id}"): Operation(
        "Change a scheduled job",
        "Scheduled jobs",
        {
            204: _NO_CONTENT,
            200: Reply(
                "The scheduled job, changed (`Prefer: return=representation`).",
                {JSON: "ScheduledJob"},
            ),
        },
        (Error.DECLARED_SCHEDULED_JOB,),
        body="ScheduledJobPatch",
        headers=("Prefer",),
    ),
    ("DELETE", "/@scheduled-jobs/{id}"): Operation(
        "Delete a scheduled job",
        "Scheduled jobs",
        {204: _NO_CONTENT},
        (Error.DECLARED_SCHEDULED_JOB,),
    ),
    ("GET", "/healthz"): Operation(
        "Liveness",
        "Operations",
        {200: Reply("The process answers.", {TEXT: {"type": "string", "const": "ok"}})},
        subpaths={
            "/ready": Operation(
                "Readiness",
                "Operations",
                {
                    200: Reply("Every required check is ok.", {JSON: "Readiness"}),
                    503: Reply(
                        "A required check failed: the report, with the error.",
                        {JSON: "Readiness"},
                    ),
                },
                description="Checks the database, the broker and the scheduler at once.",
            )
        },
    ),
    ("GET", "/metrics"): Operation(
        "Metrics",
        "Operations",
        {200: Reply("Prometheus text.", {PROMETHEUS: {"type": "string"}})},
        (Error.UNAUTHORIZED, Error.FORBIDDEN),
        description="Open, or for `Manage Site` (`nick_jobs.metrics_access = manage`).",
        token_optional=True,
    ),
    ("GET", "/@openapi"): Operation(
        "This document",
        "API",
        {
            200: Reply(
                "The OpenAPI document of the API.",
                {JSON: {"type": "object"}},
                ("ETag", "Cache-Control"),
            ),
            304: Reply("The client's copy (`If-None-Match`) is the current one."),
        },
        description="Made from the registered views, the marshmallow schemas and the "
        "registered actions: a host's own actions are in the submission's `oneOf`.",
    ),
}

_HEADERS: dict[str, dict[str, Any]] = {
    "Location": {"description": "The URL of what was created.", "schema": {"type": "string"}},
    "Link": {
        "description": 'The next page: `<url>; rel="next"`; absent on the last page.',
        "schema": {"type": "string"},
    },
    "X-Total-Count": {
        "description": "How many jobs match, with `count=true`.",
        "schema": {"type": "integer"},
    },
    "ETag": {"description": "The document's version.", "schema": {"type": "string"}},
    "Cache-Control": {
        "description": "How long a client may keep it before it asks again.",
        "schema": {"type": "string"},
    },
    "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}},
    "WWW-Authenticate": {
        "description": 'A bearer challenge: `Bearer realm="nick-jobs"`.',
        "schema": {"type": "string"},
    },
}
_HEADER_PARAMETERS: dict[str, dict[str, Any]] = {
    "Idempotency-Key": {
        "description": "A key of the client's: the same key again answers the job it "
        "created (200) instead of creating another.",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY},
    },
    "Last-Event-ID": {
        "description": "Resume the stream after this event id.",
        "schema": {"type": "string"},
    },
    "Prefer": {
        "description": "`return=representation` answers with the changed scheduled job.",
        "schema": {"type": "string"},
    },
}
_RETRY_AFTER = {Error.TOO_MANY_REQUESTS.status, Error.SERVICE_UNAVAILABLE.status}


# --- the registered views -----------------------------------------------------------------


@dataclass(frozen=True)
class View:
    """A nick-jobs view as registered: where, for which methods, with what."""

    method: str
    path: str
    context: type
    permission: str | None
    query: frozenset[str]
    subpath: bool


def registered_views(registry: Any) -> list[View]:
    """Every view made with ``api_view``, one per method (``HEAD`` goes with ``GET``)."""
    introspector = registry.introspector
    views = []
    for item in introspector.get_category("views"):
        intr = item["introspectable"]
        if intr.get(QUERY_OPTION) is None:
            continue  # not a nick-jobs view: a host's own, an exception view
        context = intr["context"]
        if context not in PATH_TEMPLATES:
            raise LookupError(f"no URL template for the views of {context!r}")
        path = PATH_TEMPLATES[context] + (f"/{intr['name']}" if intr["name"] else "")
        methods = intr["request_methods"]
        methods = (methods,) if isinstance(methods, str) else tuple(methods or ("GET",))
        permission = next(
            (
                related["value"]
                for related in item["related"]
                if related.category_name == "permissions"
            ),
            None,
        )
        for method in methods:
            if method == "HEAD":
                continue  # Pyramid answers HEAD with the GET view
            views.append(
                View(
                    method,
                    path or "/",
                    context,
                    permission,
                    frozenset(intr[QUERY_OPTION]),
                    bool(intr.get(SUBPATH_OPTION)),
                )
            )
    return sorted(views, key=lambda view: (view.path, view.method))


def undocumented(registry: Any) -> list[tuple[str, str]]:
    """The ``(method, path)`` of each registered view :data:`OPERATIONS` lacks."""
    return [
        (view.method, view.path)
        for view in registered_views(registry)
        if (view.method, view.path) not in OPERATIONS
    ]


# --- the document ---------------------------------------------------------------------------


def _action_component(name: str) -> str:
    return "JobParams." + re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _openapi_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``json_schema``'s output in OpenAPI 3.1's words: ``nullable`` as a ``null`` type."""
    schema = copy.deepcopy(schema)

    def fix(node: Any) -> None:
        if isinstance(node, dict):
            if node.pop("nullable", False) and "type" in node:
                node["type"] = [node["type"], "null"]
            for value in node.values():
                fix(value)
        elif isinstance(node, list):
            for value in node:
                fix(value)

    fix(schema)
    return schema


def _action_params(registry: Any) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Each registered action's params (with ``action``) as a component, and the mapping
    of the discriminator: action name → component."""
    components: dict[str, dict[str, Any]] = {}
    mapping: dict[str, str] = {}
    for action in get_registry(registry):
        params = _openapi_json_schema(json_schema(action.schema))
        params["properties"] = {"action": {"const": action.name}, **params["properties"]}
        params["required"] = ["action", *params.get("required", [])]
        params["title"] = action.title or action.name
        if action.description:
            params["description"] = action.description
        params["x-permission"] = action.permission
        component = _action_component(action.name)
        components[component] = params
        mapping[action.name] = f"#/components/schemas/{component}"
    return components, mapping


def _error_response(errors: Iterable[Error], status: int) -> dict[str, Any]:
    types = sorted({error.type for error in errors if error.status == status})
    response: dict[str, Any] = {
        "description": "One of: " + ", ".join(f"`{t}`" for t in types) + ".",
        "content": {JSON: {"schema": _ref("Error")}},
        # For clients (and checks) that match on the type: the types this status carries.
        "x-error-types": types,
    }
    if status in _RETRY_AFTER:
        response["headers"] = {"Retry-After": {"$ref": "#/components/headers/Retry-After"}}
    elif status == Error.UNAUTHORIZED.status:
        response["headers"] = {
            "WWW-Authenticate": {"$ref": "#/components/headers/WWW-Authenticate"}
        }
    return response


def _errors_of(view: View, operation: Operation, path: str) -> list[Error]:
    # A malformed URL, an unknown query parameter, an unexpected failure, the database
    # away or the process draining: any view.
    errors = [Error.BAD_REQUEST, Error.VALIDATION, Error.INTERNAL, Error.SERVICE_UNAVAILABLE]
    if view.permission not in (None, NO_PERMISSION_REQUIRED):
        # No token or a bad one, no right to it, or a user changed while it was served.
        errors += [
            Error.UNAUTHORIZED,
            Error.INVALID_SESSION,
            Error.FORBIDDEN,
            Error.IDENTITY_CHANGED,
        ]
    # One job or scheduled job that may not be there; any sub-path but the known ones.
    if issubclass(view.context, _ONE_OF_MANY) or (view.subpath and path == view.path):
        errors.append(Error.NOT_FOUND)
    if operation.body:
        errors += [
            Error.INVALID_JSON,
            Error.UNSUPPORTED_CHARSET,
            Error.VALIDATION,
            Error.REQUEST_TOO_LARGE,
            Error.UNSUPPORTED_MEDIA_TYPE,
        ]
    return [*errors, *operation.errors]


def _converter(plugin: MarshmallowPlugin) -> Any:
    """The plugin's converter, which it has once the spec it was given to is made."""
    if plugin.converter is None:
        raise RuntimeError("the MarshmallowPlugin is not attached to a spec yet")
    return plugin.converter


def _query_parameters(
    view: View, operation: Operation, plugin: MarshmallowPlugin
) -> list[dict[str, Any]]:
    typed = {}
    if operation.query is not None:
        for parameter in _converter(plugin).schema2parameters(operation.query, location="query"):
            typed[parameter["name"]] = parameter
    parameters = []
    for name in sorted(view.query):
        if name in typed:
            parameters.append(typed[name])
        elif name in _SHARED_QUERY:
            parameters.append({"name": name, "in": "query", **_SHARED_QUERY[name]})
        else:
            raise LookupError(
                f"{view.method} {view.path} takes the query parameter {name!r}, which "
                "neither its query schema nor the shared parameters describe"
            )
    return parameters


def _operation(
    view: View, operation: Operation, path: str, plugin: MarshmallowPlugin
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": _operation_id(view.method, path),
        "summary": operation.summary,
        "tags": [operation.tag],
    }
    if operation.description:
        out["description"] = operation.description
    parameters: list[Any] = [_PATH_PARAMETERS[name] for name in re.findall(r"{(\w+)}", path)]
    if path == view.path:  # a sub-path takes no query string of its view's
        parameters += _query_parameters(view, operation, plugin)
    # By name: apispec makes each a $ref to its component.
    parameters += list(operation.headers)
    if parameters:
        out["parameters"] = parameters
    if operation.body:
        out["requestBody"] = {
            "required": True,
            "content": {JSON: _media(operation.body)},
        }
    if view.permission in (None, NO_PERMISSION_REQUIRED):
        out["security"] = [{}, {BEARER: []}] if operation.token_optional else [{}]
    else:
        out["security"] = [{BEARER: []}]
        if "ticket" in view.query:
            out["security"].append({TICKET: []})
        out["x-permission"] = view.permission
    responses: dict[str, Any] = {}
    for status, reply in operation.replies.items():
        response: dict[str, Any] = {"description": reply.description}
        if reply.content:
            response["content"] = {
                media: _media(body) for media, body in reply.content.items() if body is not None
            }
        if reply.headers:
            response["headers"] = {
                name: {"$ref": f"#/components/headers/{name}"} for name in reply.headers
            }
        if reply.links:
            response["links"] = {
                name: {"operationId": _operation_id(method, target), "parameters": dict(values)}
                for name, (method, target, values) in reply.links.items()
            }
        responses[str(status)] = response
    errors = _errors_of(view, operation, path)
    for status in sorted({error.status for error in errors}):
        if str(status) not in responses:
            responses[str(status)] = _error_response(errors, status)
    out["responses"] = dict(sorted(responses.items()))
    return out


def _media(body: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(body, str):
        return {"schema": _ref(body)}
    if "x-events" in body:
        return body
    return {"schema": body}


def _operation_id(method: str, path: str) -> str:
    words = re.findall(r"[A-Za-z0-9]+", path.replace("{", "by-"))
    return method.lower() + "".join(word[:1].upper() + word[1:] for word in words)


def generate(registry: Any) -> dict[str, Any]:
    """The OpenAPI document of the application whose registry this is.

    Raises ``LookupError`` for a registered view :data:`OPERATIONS` does not describe.
    """
    missing = undocumented(registry)
    if missing:
        raise LookupError(
            "views without an entry in nick_jobs.web.openapi.OPERATIONS: "
            + ", ".join(f"{method} {path}" for method, path in missing)
        )
    from nick_jobs import __version__

    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="nick-jobs",
        version=__version__,
        openapi_version=OPENAPI_VERSION,
        plugins=[plugin],
        info={
            "description": (
                "The `/@jobs` API: submit, list, inspect, abort, retry and delete jobs, "
                "watch them live, and schedule them. Every error is "
                '`{"error": {"type", "message"}}` (`Error`). A `GET` also answers '
                "`HEAD`; another method on a known path is a 405."
            ),
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        servers=[{"url": ".", "description": "The API's root: where this document is."}],
    )
    spec.components.security_scheme(
        BEARER,
        {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "The token `POST /@login` answers.",
        },
    )
    spec.components.security_scheme(
        TICKET,
        {
            "type": "apiKey",
            "in": "query",
            "name": "ticket",
            "description": "A ticket `POST /@stream-tickets` answers: opens the one stream.",
        },
    )
    for name, header in _HEADERS.items():
        spec.components.header(name, header)
    for name, header in _HEADER_PARAMETERS.items():
        spec.components.parameter(name, "header", header)
    for name, schema in COMPONENTS.items():
        spec.components.schema(name, schema=schema)
    for name, event in STREAM_EVENTS.items():
        spec.components.schema(name, copy.deepcopy(event))
    params, mapping = _action_params(registry)
    for name, action_schema in params.items():
        spec.components.schema(name, action_schema)
    submission = _converter(plugin).schema2jsonschema(JobCreateSchema)
    submission["properties"]["params"] = {
        "oneOf": [{"$ref": ref} for ref in mapping.values()],
        "discriminator": {"propertyName": "action", "mapping": mapping},
        "description": "The action to run (`action`) and its params, as the action's "
        "schema takes them (`GET /@job-actions`).",
    }
    spec.components.schema(JOB_SUBMISSION, submission)

    paths: dict[str, dict[str, Any]] = {}
    for view in registered_views(registry):
        operation = OPERATIONS[(view.method, view.path)]
        paths.setdefault(view.path, {})[view.method.lower()] = _operation(
            view, operation, view.path, plugin
        )
        for below, sub in operation.subpaths.items():
            path = view.path + below
            paths.setdefault(path, {})[view.method.lower()] = _operation(view, sub, path, plugin)
    for path in sorted(paths):
        spec.path(path=path, operations=paths[path])
    document = spec.to_dict()
    used = (op["tags"][0] for path in document["paths"].values() for op in path.values())
    document["tags"] = [{"name": tag} for tag in sorted(set(used))]
    return document


def document_text(registry: Any) -> str:
    """The document as the API serves it and ``docs/openapi.json`` holds it."""
    return json.dumps(generate(registry), indent=2, ensure_ascii=False) + "\n"


def served(registry: Any) -> tuple[bytes, str]:
    """The document's bytes and ETag, made once per application (its views and actions
    are fixed once it is configured)."""
    made: tuple[bytes, str] | None = registry.get(REGISTRY_KEY)
    if made is None:
        body = document_text(registry).encode()
        made = (body, hashlib.sha256(body).hexdigest()[:32])
        registry[REGISTRY_KEY] = made
    return made


def default_registry() -> Any:
    """The registry of a default installation (its built-in actions only), configured
    but never started: no database is opened, no worker or scheduler runs."""
    from pyramid.config import Configurator

    settings = {
        "sqlalchemy.url": "sqlite://",
        "nick_jobs.broker_url": "stub://",
        "nick_jobs.jwt_secret": "x" * 64,
        "nick_jobs.embedded_worker_threads": "0",
    }
    config = Configurator(settings=settings)
    config.include("nick_jobs")
    config.commit()
    return config.registry


def main(argv: list[str] | None = None) -> None:
    sys.stdout.write(document_text(default_registry()))


if __name__ == "__main__":
    main()
