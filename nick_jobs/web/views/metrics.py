"""``GET /metrics``: Prometheus text, open or for ``Manage Site`` (``nick_jobs.metrics_access``).

The answer joins the deployment-wide figures read from the database now with this
process's own counters (see :mod:`nick_jobs.ops.metrics`).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPForbidden
from pyramid.request import Request
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED

from nick_jobs.ops.metrics import ACCESS_MANAGE, DatabaseCollector
from nick_jobs.streams.limits import OpenStreamsCollector
from nick_jobs.web.permissions import Permission
from nick_jobs.web.resources import Root
from nick_jobs.web.views import api_view

DATABASE_REGISTRY = "nick_jobs.metrics_registry"


@api_view(
    context=Root,
    name="metrics",
    request_method=("GET", "HEAD"),
    # Checked below: the setting decides, and an open endpoint must not ask for a login.
    permission=NO_PERMISSION_REQUIRED,
)
def metrics_view(context: Root, request: Request) -> Response:
    if request.registry["nick_jobs.ops.metrics"].access == ACCESS_MANAGE and not (
        request.has_permission(Permission.MANAGE_SITE.value, context)
    ):
        # The forbidden view answers 401 or 403 with the JSON error body.
        raise HTTPForbidden()
    text = generate_latest(request.registry[DATABASE_REGISTRY]) + generate_latest(REGISTRY)
    return Response(body=text, content_type=CONTENT_TYPE_LATEST, cache_control="no-store")


def includeme(config: Configurator) -> None:
    # One registry per app for the database figures: several apps in one process (tests,
    # a host app) each read their own database; the process counters are shared.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(config.registry["nick_jobs.read_engine"]))
    limits = config.registry.get("nick_jobs.stream_limits")
    if limits is not None:
        registry.register(OpenStreamsCollector(limits))
    config.registry[DATABASE_REGISTRY] = registry
    config.scan(__name__)
