"""``@job-actions``: what can be submitted, with each action's params as JSON Schema."""

from __future__ import annotations

from nick_jobs.jobs.actions import get_registry
from nick_jobs.web.permissions import Permission
from nick_jobs.web.resources import Root
from nick_jobs.web.views import api_view


@api_view(context=Root, name="@job-actions", request_method="GET", permission=Permission.VIEW_JOBS)
def actions_view(context, request):
    return [
        action.describe()
        for action in get_registry(request.registry)
        if request.has_permission(action.permission, context)
    ]


def includeme(config) -> None:
    config.scan(__name__)
