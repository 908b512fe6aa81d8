"""``config.include("nick_jobs")`` leaves its host application as it found it: the host's
request factory, its router, the interpreter's GIL switch interval and Dramatiq's global
broker are the host's."""

from __future__ import annotations

import logging
import sys

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from pyramid.config import Configurator
from pyramid.interfaces import IRequestFactory
from pyramid.request import Request
from pyramid.router import Router
from webtest import TestApp

from nick_jobs import includeme
from tests.conftest import Client


class HostRequest(Request):
    """A host application's own request class."""


def host_view(request) -> dict:
    return {
        "class": type(request).__qualname__,
        "bases": [b.__name__ for b in type(request).__mro__],
    }


def make_host(settings: dict, request_factory=None) -> Router:
    with Configurator(settings=settings) as config:
        if request_factory is not None:
            config.set_request_factory(request_factory)
        config.include(includeme)
        config.add_route("host", "/host")
        config.add_view(host_view, route_name="host", renderer="json")
        return config.make_wsgi_app()


def close(app: Router) -> None:
    app.registry["nick_jobs.queue"].stop_embedded_worker()
    app.registry["nick_jobs.engine"].dispose()
    app.registry["nick_jobs.read_engine"].dispose()


@pytest.mark.parametrize("factory", [None, HostRequest], ids=["pyramid's", "the host's"])
def test_the_hosts_request_factory_and_router_are_left_alone(app_without_worker: Client, factory):
    interval = sys.getswitchinterval()
    # A host with Dramatiq actors of its own has set its broker already.
    hosts_broker = StubBroker()
    dramatiq.set_broker(hosts_broker)
    app = make_host(app_without_worker.backend.settings, factory)
    try:
        registered = app.registry.queryUtility(IRequestFactory)
        assert registered is factory  # None: Pyramid's own default, as before the include
        # The router makes its requests as Pyramid does: nothing set on the instance.
        assert "request_context" not in vars(app)
        assert type(app).request_context is Router.request_context
        answer = TestApp(app, extra_environ={"HTTP_HOST": "localhost"}).get("/host").json
        assert (factory or Request).__name__ in answer["bases"]
        assert sys.getswitchinterval() == interval
        assert dramatiq.get_broker() is hosts_broker
        assert app.registry["nick_jobs.queue"].broker is not hosts_broker
    finally:
        close(app)


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("nick_jobs.switch_interval", "0.00025", "switch interval"),
        ("nick_jobs.worker_processes", "4", "process manager"),
    ],
)
def test_a_removed_setting_is_told_not_refused(
    app_without_worker: Client, caplog, name: str, value: str, why: str
):
    interval = sys.getswitchinterval()
    settings = {**app_without_worker.backend.settings, name: value}
    with caplog.at_level(logging.WARNING, logger="nick_jobs.settings"):
        app = make_host(settings)
    try:
        assert sys.getswitchinterval() == interval
        told = [r.getMessage() for r in caplog.records if name in r.getMessage()]
        assert len(told) == 1
        assert "no longer read" in told[0]
        assert why in told[0]
        assert not hasattr(app.registry["nick_jobs.settings"], name.split(".", 1)[1])
    finally:
        close(app)
