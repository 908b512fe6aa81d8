"""``api_view``: ``view_config`` with the API's defaults, refusing a view without a
permission, and attaching the view to the module of the function it decorates."""

from __future__ import annotations

import sys

import pytest
import webtest
from pyramid.config import Configurator
from pyramid.renderers import JSON
from pyramid.security import NO_PERMISSION_REQUIRED
from pyramid.view import view_config

from nick_jobs.web.strict import QUERY_OPTION, RENDERER, SUBPATH_OPTION, request_checks
from nick_jobs.web.views import api_view


@api_view(name="api-view-probe", request_method="GET", permission=NO_PERMISSION_REQUIRED)
def probe_view(context, request):
    return {"probe": True}


def test_a_view_without_permission_is_refused():
    with pytest.raises(TypeError, match="every nick-jobs view must declare its permission="):
        api_view(name="public-by-mistake", request_method="GET")


def test_it_is_a_view_config_with_the_api_defaults():
    decorator = api_view(name="x", permission="view", query=("q", "q"), subpath=True)
    assert isinstance(decorator, view_config)
    assert decorator.renderer == RENDERER
    assert getattr(decorator, QUERY_OPTION) == frozenset({"q"})
    assert getattr(decorator, SUBPATH_OPTION) is True
    assert api_view(permission="view", renderer="string").renderer == "string"
    plain = api_view(permission="view")
    assert getattr(plain, QUERY_OPTION) == frozenset()
    assert getattr(plain, SUBPATH_OPTION) is False


def test_a_scan_of_the_decorating_module_registers_the_view():
    with Configurator() as config:
        config.add_view_deriver(request_checks, name="nick_jobs_request_checks")
        config.add_renderer(RENDERER, JSON())
        config.scan(sys.modules[__name__])
        app = webtest.TestApp(config.make_wsgi_app())
    views = [
        item["introspectable"]
        for item in config.registry.introspector.get_category("views")
        if item["introspectable"]["callable"] is probe_view
    ]
    assert len(views) == 1
    assert app.get("/api-view-probe").json == {"probe": True}
    # The options reached the view deriver: no query parameter, no sub-path.
    assert app.get("/api-view-probe?q=1", status=400).json["error"]["type"] == "Validation error"
    assert app.get("/api-view-probe/below", status=404).json["error"]["type"] == "Not found"
