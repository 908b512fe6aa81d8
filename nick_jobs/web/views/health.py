"""Health checks for load balancers and orchestrators, without authentication.

* ``GET /healthz``: liveness. The process answers ``ok``; it touches nothing else.
* ``GET /healthz/ready``: readiness. The database, the broker and the scheduler are
  checked at once, each bounded by ``nick_jobs.health_timeout``; 200 when every required
  check is ok, else 503. The scheduler is reported (``ok`` or ``down``) but required only
  with ``nick_jobs.ready_requires_scheduler = true``: it is one process for the whole
  deployment, and taking every API node out of the load balancer because it stopped
  would turn a late scheduled job into an outage.

Add-ons add their own checks with ``config.add_health_check(name, check)``: ``check``
takes the registry and raises when its dependency is unavailable; it may return a dict
of details for the report, or raise :class:`Down` to say the dependency answered and is
down. ``required=False`` (or a function of the registry) reports a check without letting
it make the answer 503.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPNotFound
from pyramid.registry import Registry
from pyramid.request import Request
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED

from nick_jobs.db.meta import utcnow
from nick_jobs.jobs.serialize import isoformat
from nick_jobs.scheduling import scheduler
from nick_jobs.settings import registry_settings
from nick_jobs.web.errors import Error, error_body
from nick_jobs.web.resources import Root
from nick_jobs.web.views import api_view

log = logging.getLogger(__name__)

Check = Callable[[Any, float], dict[str, Any] | None]
CHECKS = "nick_jobs.health_checks"
# name -> bool, or a function of the registry: whether the check can make ready 503.
REQUIRED = "nick_jobs.health_checks.required"


class Down(Exception):
    """Raised by a check whose dependency answered and is down; ``details`` are reported."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


def check_database(registry: Registry, timeout: float) -> None:
    with registry["nick_jobs.read_engine"].connect() as conn:
        conn.execute(sa.text("SELECT 1")).scalar_one()


def check_broker(registry: Registry, timeout: float) -> None:
    url = registry_settings(registry).broker_url
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


def check_scheduler(registry: Registry, timeout: float) -> dict[str, Any]:
    """Did any scheduler tick within ``nick_jobs.scheduler.stale_after`` seconds?

    Read from the database, so every API node gives the same answer wherever the
    scheduler runs (a thread of an API process, or ``nick-jobs scheduler``).
    """
    stale_after = scheduler.get_settings(registry).stale_after_s
    with registry["nick_jobs.read_engine"].connect() as conn:
        liveness = scheduler.last_tick(conn)
    if liveness is None:
        raise Down("No scheduler has ticked yet.", last_tick=None)
    # Clocks of two hosts a little apart can put a fresh tick a little in the future.
    age = max((utcnow() - liveness.last_tick).total_seconds(), 0.0)
    details = {"last_tick": isoformat(liveness.last_tick), "age_s": round(age, 1)}
    if age > stale_after:
        raise Down(f"No scheduler ticked in the last {stale_after:g} s.", **details)
    return details


def requires_scheduler(registry: Registry) -> bool:
    """``nick_jobs.ready_requires_scheduler``: may a scheduler that is down make ready 503?"""
    return scheduler.get_settings(registry).ready_requires


def _run(check: Check, registry: Registry, timeout: float) -> dict[str, Any]:
    """Run ``check`` in a daemon thread: a hung socket can't hold the request past ``timeout``."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["details"] = check(registry, timeout) or {}
            outcome["status"] = "ok"
        except Down as exc:
            outcome["status"] = "down"
            outcome["exc"] = exc
        except Exception as exc:
            outcome["status"] = "unavailable"
            outcome["exc"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=target, name="nick-jobs-health", daemon=True)
    thread.start()
    return {"thread": thread, "outcome": outcome, "started": started}


def is_required(registry: Registry, name: str) -> bool:
    """Whether the check ``name`` failing makes ``/healthz/ready`` answer 503."""
    required = registry.get(REQUIRED, {}).get(name, True)
    return bool(required(registry) if callable(required) else required)


def readiness(registry: Registry) -> tuple[bool, dict[str, dict[str, Any]]]:
    """Run every check at once; return (every required check ok, the report of each)."""
    timeout = registry_settings(registry).health_timeout_s
    running = {name: _run(check, registry, timeout) for name, check in registry[CHECKS].items()}
    deadline = time.monotonic() + timeout
    report: dict[str, dict[str, Any]] = {}
    ready = True
    for name, run in running.items():
        run["thread"].join(max(deadline - time.monotonic(), 0))
        outcome = run["outcome"]
        took = round((time.monotonic() - run["started"]) * 1000, 1)
        required = is_required(registry, name)
        # A load balancer asks every few seconds: a check that can't fail the answer (a
        # deployment without a scheduler, on purpose) must not fill the log.
        level = logging.WARNING if required else logging.DEBUG
        if run["thread"].is_alive() or "status" not in outcome:
            log.log(level, "health check %s timed out after %g s", name, timeout)
            report[name] = {"status": "unavailable", "message": f"No answer within {timeout:g} s."}
        elif outcome["status"] == "ok":
            report[name] = {"status": "ok", "duration_ms": took, **outcome["details"]}
        elif outcome["status"] == "down":
            exc = outcome["exc"]
            log.log(level, "health check %s: %s", name, exc)
            report[name] = {
                "status": "down",
                "message": str(exc),
                "duration_ms": took,
                **exc.details,
            }
        else:
            exc = outcome["exc"]
            # The details (hosts, ports) go to the log; the public answer names the error.
            log.log(level, "health check %s failed: %s", name, exc)
            report[name] = {
                "status": "unavailable",
                "message": f"{type(exc).__name__}: the {name} is not reachable.",
                "duration_ms": took,
            }
        if not required:
            # Reported, so monitoring sees it, but it never takes the node out.
            report[name]["required"] = False
        elif report[name]["status"] != "ok":
            ready = False
    return ready, report


def _not_ready_message(checks: dict[str, dict[str, Any]]) -> str:
    """``Not ready: database, broker unavailable; scheduler down.``: required failures."""
    by_status: dict[str, list[str]] = {}
    for name, check in checks.items():
        if check["status"] != "ok" and check.get("required", True):
            by_status.setdefault(check["status"], []).append(name)
    parts = [f"{', '.join(names)} {status}" for status, names in by_status.items()]
    return f"Not ready: {'; '.join(parts)}."


@api_view(
    context=Root,
    name="healthz",
    request_method=("GET", "HEAD"),
    permission=NO_PERMISSION_REQUIRED,
    subpath=True,  # /healthz/ready
)
def healthz_view(context: Root, request: Request) -> Response | dict[str, Any]:
    if not request.subpath:
        return Response("ok", content_type="text/plain", cache_control="no-store")
    if tuple(request.subpath) != ("ready",):
        raise HTTPNotFound()
    ok, checks = readiness(request.registry)
    body: dict[str, Any] = {"status": "ok" if ok else "unavailable", "checks": checks}
    if not ok:
        body.update(error_body(Error.SERVICE_UNAVAILABLE, _not_ready_message(checks)))
    request.response.status = 200 if ok else Error.SERVICE_UNAVAILABLE.status
    request.response.cache_control = "no-store"
    return body


def add_health_check(
    config: Configurator, name: str, check: Check, required: bool | Callable[[Any], bool] = True
) -> None:
    """Directive: ``config.add_health_check("search", check)`` adds to ``/healthz/ready``.

    ``required=False`` reports the check without letting it make the answer 503.
    """

    def register() -> None:
        config.registry[CHECKS][name] = check
        config.registry[REQUIRED][name] = required

    config.action(("nick_jobs.health_check", name), register)


def includeme(config: Configurator) -> None:
    config.registry[CHECKS] = {
        "database": check_database,
        "broker": check_broker,
        "scheduler": check_scheduler,
    }
    # Read at each request: the scheduler's settings are parsed after this include.
    config.registry[REQUIRED] = {"scheduler": requires_scheduler}
    config.add_directive("add_health_check", add_health_check)
    config.scan(__name__)
