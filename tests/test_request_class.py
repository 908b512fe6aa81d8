"""The router's requests come from one class with the request methods built in; other
ways of making a request still get them from Pyramid."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.scripting import prepare
from webtest import TestApp

from nick_jobs import includeme, request_class

from .conftest import Client

METHODS = ("dbsession", "dbconn", "tm")

# The class of each request the probe saw, kept so no two can share an id.
SEEN: list[type] = []


def probe(request) -> dict:
    cls = type(request)
    SEEN.append(cls)
    return {
        "class": id(cls),
        "bases": [base.__qualname__ for base in cls.__bases__],
        "on_class": [name for name in METHODS if name in vars(cls)],
        "reified": request.dbsession is request.dbsession and request.tm is request.tm,
    }


def sub(request) -> dict:
    return request.invoke_subrequest(Request.blank("/probe")).json


@contextlib.contextmanager
def host(settings: dict, request_factory=None) -> Iterator[TestApp]:
    """A host application with nick-jobs and two views of its own."""
    with Configurator(settings=settings) as config:
        config.include(includeme)
        if request_factory is not None:
            config.set_request_factory(request_factory)
        config.add_route("probe", "/probe")
        config.add_view(probe, route_name="probe", renderer="json")
        config.add_route("sub", "/sub")
        config.add_view(sub, route_name="sub", renderer="json")
        wsgi = config.make_wsgi_app()
    try:
        yield TestApp(wsgi, extra_environ={"HTTP_HOST": "localhost:8080"})
    finally:
        wsgi.registry["nick_jobs.queue"].stop_embedded_worker()
        wsgi.registry["nick_jobs.engine"].dispose()
        wsgi.registry["nick_jobs.read_engine"].dispose()


def test_every_request_of_the_router_is_of_one_class_holding_the_methods(
    app_without_worker: Client,
) -> None:
    with host(app_without_worker.app.registry.settings) as client:
        first, second = client.get("/probe").json, client.get("/probe").json
    assert first["class"] == second["class"]
    # Made once from the request factory, not a subclass per request on top of it.
    assert first["bases"] == ["Request"]
    assert sorted(first["on_class"]) == sorted(METHODS)
    assert first["reified"]


def test_the_api_works_through_the_one_class(app_without_worker: Client) -> None:
    app = app_without_worker
    job = app.submit({"action": "dummy"})
    assert app.get(f"/@jobs/{job['uuid']}", headers=app.auth()).json["uuid"] == job["uuid"]
    assert [j["uuid"] for j in app.get("/@jobs", headers=app.auth()).json] == [job["uuid"]]


def test_a_subrequest_made_with_request_blank_still_gets_the_methods(
    app_without_worker: Client,
) -> None:
    with host(app_without_worker.app.registry.settings) as client:
        outer = client.get("/probe").json
        inner = client.get("/sub").json
    # Pyramid applied them to the blank request, on a class of its own.
    assert inner["class"] != outer["class"]
    assert sorted(inner["on_class"]) == sorted(METHODS)
    assert inner["reified"]


def test_scripts_still_get_the_methods(app_without_worker: Client) -> None:
    env = prepare(registry=app_without_worker.app.registry)
    try:
        assert env["request"].dbsession is env["request"].dbsession
    finally:
        env["closer"]()


def test_a_request_factory_that_is_not_a_class_keeps_pyramids_way(
    app_without_worker: Client,
) -> None:
    def factory(environ):
        return Request(environ)

    with host(app_without_worker.app.registry.settings, request_factory=factory) as client:
        first, second = client.get("/probe").json, client.get("/probe").json
        assert client.app.request_factory is factory
        assert not request_class.install(client.app)
    # Pyramid's own way: a fresh subclass for each request, methods on it.
    assert first["class"] != second["class"]
    assert sorted(first["on_class"]) == sorted(METHODS)
    assert first["reified"]
