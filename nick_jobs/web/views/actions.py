"""``@job-actions``: what can be submitted, with each action's params as JSON Schema.

The list is sorted by name and pages as the job list does: a bare array, ``b_size``
actions at most, and a ``Link: rel="next"`` whose cursor holds the last name given, so a
page starts after that name whatever was added or removed in between.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import urlencode

from nick_jobs.jobs.actions import JobAction, get_registry
from nick_jobs.jobs.schemas import ActionsQuerySchema
from nick_jobs.web import urls
from nick_jobs.web.errors import Error, api_error
from nick_jobs.web.permissions import Permission
from nick_jobs.web.resources import Root
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


def _matches(action: JobAction, needle: str) -> bool:
    """Whether ``needle`` (casefolded) is in the action's name, title or description."""
    texts = (action.name, action.title or "", action.description or "")
    return any(needle in text.casefold() for text in texts)


@api_view(
    context=Root,
    name="@job-actions",
    request_method="GET",
    permission=Permission.VIEW_JOBS,
    query=_ACTIONS_QUERY_SCHEMA.fields,
)
def actions_view(context, request):
    settings = request.registry["nick_jobs.settings"]
    query = _ACTIONS_QUERY_SCHEMA.load(request.GET.mixed())
    size = min(query.get("b_size", settings.default_page_size), settings.max_page_size)
    after = decode_action_cursor(query["cursor"]) if query.get("cursor") else None
    needle = query["q"].casefold() if "q" in query else None
    page = []
    has_next = False
    # The registry iterates sorted by name: the page is the first matches after the cursor.
    for action in get_registry(request.registry):
        if after is not None and action.name <= after:
            continue
        if not request.has_permission(action.permission, context):
            continue
        if needle is not None and not _matches(action, needle):
            continue
        if len(page) == size:
            has_next = True
            break
        page.append(action.describe())
    if has_next:
        params = {k: v for k, v in request.GET.items() if k != "cursor"}
        params["cursor"] = encode_action_cursor(page[-1]["name"])
        next_url = urls.resource_url(request, context, "@job-actions") + "?" + urlencode(params)
        request.response.headers["Link"] = f'<{next_url}>; rel="next"'
    return page


def includeme(config) -> None:
    config.scan(__name__)
