"""``@job-actions``: what can be submitted, with each action's params as JSON Schema.

The list is sorted by name and pages as the job list does: a bare array, ``b_size``
actions at most, and a ``Link: rel="next"`` whose cursor holds the last name given, so a
page starts after that name whatever was added or removed in between.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import urlencode

from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPNoContent
from pyramid.request import Request

from nick_jobs.jobs import remote_actions
from nick_jobs.jobs.actions import get_registry
from nick_jobs.jobs.schemas import ActionsQuerySchema
from nick_jobs.jobs.serialize import isoformat
from nick_jobs.settings import registry_settings
from nick_jobs.web import urls
from nick_jobs.web.body import json_body
from nick_jobs.web.errors import Error, api_error, authenticated_login
from nick_jobs.web.permissions import Permission
from nick_jobs.web.resources import ActionContainer, ActionResource
from nick_jobs.web.views import api_view

_ACTIONS_QUERY_SCHEMA = ActionsQuerySchema()

# Distinct from the job list's "v1:": a job list cursor given here is refused, not read
# as a name.
_CURSOR_PREFIX = "a1:"


def encode_action_cursor(last_name: str) -> str:
    """The cursor of the page after the action named ``last_name``."""
    text = _CURSOR_PREFIX + last_name
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_action_cursor(cursor: str) -> str:
    """The action name a cursor of :func:`encode_action_cursor` holds; ``400`` otherwise."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        text = ""
    if not text.startswith(_CURSOR_PREFIX) or len(text) == len(_CURSOR_PREFIX):
        raise api_error(Error.INVALID_CURSOR, "The cursor is not one this server gave out.")
    return text.removeprefix(_CURSOR_PREFIX)


def _matches(action: remote_actions.Action, needle: str) -> bool:
    """Whether ``needle`` (casefolded) is in the action's name, title or description."""
    texts = (action.name, action.title or "", action.description or "")
    return any(needle in text.casefold() for text in texts)


@api_view(
    context=ActionContainer,
    request_method="GET",
    permission=Permission.VIEW_JOBS,
    query=_ACTIONS_QUERY_SCHEMA.fields,
)
def actions_view(context: ActionContainer, request: Request) -> list[dict[str, Any]]:
    settings = registry_settings(request.registry)
    query = _ACTIONS_QUERY_SCHEMA.load(request.GET.mixed())
    size = min(query.get("b_size", settings.default_page_size), settings.max_page_size)
    after = decode_action_cursor(query["cursor"]) if query.get("cursor") else None
    needle = query["q"].casefold() if "q" in query else None
    page: list[dict[str, Any]] = []
    has_next = False
    # Python and remote actions together, sorted by name: the page is the first matches
    # after the cursor.
    for action in context.actions():
        if after is not None and action.name <= after:
            continue
        if not request.has_permission(action.permission, context):
            continue
        if needle is not None and not _matches(action, needle):
            continue
        if len(page) == size:
            has_next = True
            break
        page.append(remote_actions.describe(action))
    if has_next:
        params = {k: v for k, v in request.GET.items() if k != "cursor"}
        params["cursor"] = encode_action_cursor(page[-1]["name"])
        next_url = urls.resource_url(request, context).rstrip("/") + "?" + urlencode(params)
        request.response.headers["Link"] = f'<{next_url}>; rel="next"'
    return page


def _readable(context: ActionResource, request: Request) -> remote_actions.Action:
    """The action, if the caller may submit it; a 404 otherwise, as the list leaves out
    what the caller may not submit."""
    action = context.action
    if action is None or not request.has_permission(action.permission, context):
        raise api_error(Error.NOT_FOUND, f"There is no action named {context.__name__!r}.")
    return action


@api_view(context=ActionResource, request_method="GET", permission=Permission.VIEW_JOBS)
def action_view(context: ActionResource, request: Request) -> dict[str, Any]:
    return remote_actions.describe(_readable(context, request))


@api_view(context=ActionResource, request_method="PUT", permission=Permission.MANAGE_SITE)
def put_action_view(context: ActionResource, request: Request) -> dict[str, Any]:
    name = context.__name__
    definition, from_version = remote_actions.load_definition(json_body(request), name)
    try:
        put = remote_actions.put(
            request.dbsession,
            get_registry(request.registry),
            name,
            definition,
            authenticated_login(request),
            from_version=from_version,
        )
    except remote_actions.NameTaken:
        raise api_error(
            Error.CONFLICT,
            f"{name!r} is a Python action, declared in code: a remote action needs another name.",
        ) from None
    except remote_actions.VersionConflict as exc:
        now = "no longer exists" if exc.current is None else f"is at version {exc.current} now"
        raise api_error(
            Error.CONFLICT,
            f"The action {name!r} {now}, not {from_version}: read it again and send your "
            "change made from that.",
        ) from None
    request.response.status = 201 if put.created else 200
    if put.created:
        request.response.headers["Location"] = urls.resource_url(request, context).rstrip("/")
    return put.action.describe()


@api_view(context=ActionResource, request_method="DELETE", permission=Permission.MANAGE_SITE)
def delete_action_view(context: ActionResource, request: Request) -> HTTPNoContent:
    name = context.__name__
    if context.action is not None and not isinstance(
        context.action, remote_actions.RemoteJobAction
    ):
        raise api_error(
            Error.CONFLICT, f"{name!r} is a Python action, declared in code: it can't be deleted."
        )
    if not remote_actions.delete(request.dbsession, name):
        raise api_error(Error.NOT_FOUND, f"There is no action named {name!r}.")
    return HTTPNoContent()


@api_view(
    context=ActionResource,
    name="versions",
    request_method="GET",
    permission=Permission.VIEW_JOBS,
)
def versions_view(context: ActionResource, request: Request) -> list[dict[str, Any]]:
    action = _readable(context, request)
    if not isinstance(action, remote_actions.RemoteJobAction):
        return []  # a Python action's only version is the code that runs
    return [
        {**version, "created": isoformat(version["created"])}
        for version in remote_actions.versions(request.dbconn, context.__name__)
    ]


def includeme(config: Configurator) -> None:
    config.scan(__name__)
