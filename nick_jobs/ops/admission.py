"""How many requests of one API process run their view and transaction at once.

Waitress keeps a thread per open event stream, so ``production.ini`` gives it hundreds
of threads; without a bound, a burst of plain requests ran on all of them at once. On one
GIL that adds latency, not throughput, and each of them held database connections: a
burst of 256 submits emptied the pools (30 connections each), and the requests that
waited 5 s for one got 503s. Past ``nick_jobs.max_active_requests``, a request waits
here, holding nothing, for up to ``nick_jobs.request_queue_timeout`` seconds, then gets a
503 with ``Retry-After``. An open stream counts only while its view runs, not while it
streams; ``/healthz`` is always answered.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from nick_jobs.settings import registry_settings
from nick_jobs.web.errors import Error, api_error

if TYPE_CHECKING:
    from pyramid.config import Configurator
    from pyramid.request import Request
    from pyramid.response import Response

ALWAYS_ADMITTED = frozenset({"/healthz"})


def admission_tween_factory(
    handler: Callable[[Request], Response], registry: Mapping[str, Any]
) -> Callable[[Request], Response]:
    settings = registry_settings(registry)
    if not settings.max_active_requests:
        return handler
    slots = threading.BoundedSemaphore(settings.max_active_requests)
    timeout = settings.request_queue_timeout_s

    def admission_tween(request: Request) -> Response:
        if request.path_info in ALWAYS_ADMITTED:
            return handler(request)
        if not slots.acquire(timeout=timeout):
            error = api_error(Error.SERVICE_UNAVAILABLE, "This server is busy; try again shortly.")
            error.headers["Retry-After"] = "1"
            return error
        try:
            return handler(request)
        finally:
            slots.release()

    return admission_tween


def includeme(config: Configurator) -> None:
    config.add_tween(
        "nick_jobs.ops.admission.admission_tween_factory",
        under="nick_jobs.ops.shutdown.drain_tween_factory",
        over="pyramid_tm.tm_tween_factory",
    )
