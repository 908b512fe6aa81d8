"""Health checks for load balancers and orchestrators, without authentication.

* ``GET /healthz``: liveness. The process answers ``ok``; it touches nothing else.
* ``GET /healthz/ready``: readiness. The database and the broker are checked at once,
  each bounded by ``nick_jobs.health_timeout``; 200 when all are ok, else 503.

Add-ons add their own checks with ``config.add_health_check(name, check)``: ``check``
takes the registry and raises when its dependency is unavailable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from pyramid.httpexceptions import HTTPNotFound
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED

from ..errors import error_body
from ..resources import Root
from . import api_view

log = logging.getLogger(__name__)

Check = Callable[[Any, float], None]
CHECKS = "nick_jobs.health_checks"


def check_database(registry, timeout: float) -> None:
    with registry["nick_jobs.read_engine"].connect() as conn:
        conn.execute(sa.text("SELECT 1")).scalar_one()


def check_broker(registry, timeout: float) -> None:
    url = registry["nick_jobs.settings"].broker_url
    if url.startswith("stub://"):
        return  # in memory, in this process: up for as long as the process is
    if url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
        return
    import pika

    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.retry_delay = 0
    params.socket_timeout = timeout
    params.stack_timeout = timeout
    params.blocked_connection_timeout = timeout
    pika.BlockingConnection(params).close()


def _run(check: Check, registry, timeout: float) -> dict[str, Any]:
    """Run ``check`` in a daemon thread: a hung socket can't hold the request past ``timeout``."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            check(registry, timeout)
            outcome["status"] = "ok"
        except Exception as exc:
            outcome["status"] = "unavailable"
            outcome["exc"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=target, name="nick-jobs-health", daemon=True)
    thread.start()
    return {"thread": thread, "outcome": outcome, "started": started}


def readiness(registry) -> tuple[bool, dict[str, dict[str, Any]]]:
    """Run every check at once; return (all ok, the report of each)."""
    timeout = registry["nick_jobs.settings"].health_timeout_s
    running = {name: _run(check, registry, timeout) for name, check in registry[CHECKS].items()}
    deadline = time.monotonic() + timeout
    report: dict[str, dict[str, Any]] = {}
    for name, run in running.items():
        run["thread"].join(max(deadline - time.monotonic(), 0))
        outcome = run["outcome"]
        took = round((time.monotonic() - run["started"]) * 1000, 1)
        if run["thread"].is_alive() or "status" not in outcome:
            log.warning("health check %s timed out after %g s", name, timeout)
            report[name] = {"status": "unavailable", "message": f"No answer within {timeout:g} s."}
        elif outcome["status"] == "ok":
            report[name] = {"status": "ok", "duration_ms": took}
        else:
            exc = outcome["exc"]
            # The details (hosts, ports) go to the log; the public answer names the error.
            log.warning("health check %s failed: %s", name, exc)
            report[name] = {
                "status": "unavailable",
                "message": f"{type(exc).__name__}: the {name} is not reachable.",
                "duration_ms": took,
            }
    return all(r["status"] == "ok" for r in report.values()), report


@api_view(
    context=Root,
    name="healthz",
    request_method=("GET", "HEAD"),
    permission=NO_PERMISSION_REQUIRED,
)
def healthz_view(context, request):
    if not request.subpath:
        return Response("ok", content_type="text/plain", cache_control="no-store")
    if tuple(request.subpath) != ("ready",):
        raise HTTPNotFound()
    ok, checks = readiness(request.registry)
    body: dict[str, Any] = {"status": "ok" if ok else "unavailable", "checks": checks}
    if not ok:
        down = ", ".join(name for name, check in checks.items() if check["status"] != "ok")
        body.update(error_body("Service unavailable", f"Not ready: {down} unavailable."))
    request.response.status = 200 if ok else 503
    request.response.cache_control = "no-store"
    return body


def add_health_check(config, name: str, check: Check) -> None:
    """Directive: ``config.add_health_check("scheduler", check)`` adds to ``/healthz/ready``."""

    def register() -> None:
        config.registry[CHECKS][name] = check

    config.action(("nick_jobs.health_check", name), register)


def includeme(config) -> None:
    config.registry[CHECKS] = {"database": check_database, "broker": check_broker}
    config.add_directive("add_health_check", add_health_check)
    config.scan(__name__)
