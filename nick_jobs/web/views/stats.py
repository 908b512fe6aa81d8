"""``GET /@jobs/@stats``: figures over the jobs the caller may see, for a dashboard.

The name starts with ``@``, which no job's uuid does: the container's traversal takes it
for a view name without looking a job up (``resources.JobContainer.__getitem__``).
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate
from pyramid.config import Configurator
from pyramid.request import Request

from nick_jobs.jobs import stats
from nick_jobs.web.permissions import Permission
from nick_jobs.web.resources import JobContainer
from nick_jobs.web.views import api_view


class StatsQuerySchema(Schema):
    """``GET /@jobs/@stats`` query parameters."""

    minutes = fields.Integer(validate=validate.Range(min=stats.MIN_WINDOW, max=stats.MAX_WINDOW))


_STATS_QUERY_SCHEMA = StatsQuerySchema()


@api_view(
    context=JobContainer,
    name="@stats",
    request_method="GET",
    permission=Permission.VIEW_JOBS,
    query=_STATS_QUERY_SCHEMA.fields,
)
def stats_view(context: JobContainer, request: Request) -> dict[str, Any]:
    query = _STATS_QUERY_SCHEMA.load(request.GET.mixed())
    # As the list: an administrator's figures are over every job, anyone else's over
    # their own.
    actor = None if context.sees_all() else request.authenticated_userid
    figures = stats.job_stats(
        request.dbconn, actor=actor, window=query.get("minutes", stats.DEFAULT_WINDOW)
    )
    return stats.stats_json(figures, context.url())


def includeme(config: Configurator) -> None:
    config.scan(__name__)
