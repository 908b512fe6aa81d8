"""A graceful stop of an API process on SIGTERM.

What a deploy or ``systemctl stop`` expects: the process stops taking work, finishes what
it has, and tells stream clients to reconnect elsewhere, instead of dropping everything
mid-response. On SIGTERM:

1. every new request but ``/healthz`` gets ``503`` with ``Retry-After`` (so
   ``/healthz/ready`` fails and load balancers route elsewhere);
2. every open stream gets ``close`` with ``reason: shutdown, reconnect: true``;
3. requests already running finish, up to ``nick_jobs.shutdown_grace`` seconds;
4. the embedded worker (development) stops, handing back the jobs it can't finish;
5. the server stops, as on Ctrl-C.

A second SIGTERM stops at once. The handler is installed only in the main thread of a
process, and only over the default action: a process that already handles SIGTERM (the
``nick-jobs worker``, ``sweep`` and ``scheduler`` commands, which build the app without
serving HTTP, or a host server such as gunicorn) keeps its own handler.
``nick_jobs.graceful_shutdown = false`` leaves signals alone altogether (for a host
application that handles them itself).

A server with a SIGTERM handler of its own that stops once its connections are done
(gunicorn's workers) drains the app through :func:`begin_drain`, called from that
server's own stop: ``deploy/gunicorn.conf.py`` does it in gunicorn's documented
``post_worker_init`` and ``worker_exit`` hooks. Steps 1 to 4 run as above; the server
stops itself.
"""

from __future__ import annotations

import _thread
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from nick_jobs.settings import registry_settings
from nick_jobs.web.errors import Error, api_error

if TYPE_CHECKING:
    from pyramid.config import Configurator
    from pyramid.events import ApplicationCreated
    from pyramid.request import Request
    from pyramid.response import Response

log = logging.getLogger(__name__)

# Liveness stays up while draining: the process is healthy, just leaving.
ALWAYS_ANSWERED = ("/healthz",)


class Drain:
    """Counts the requests in flight and knows whether the process is draining."""

    def __init__(self) -> None:
        self.draining = False
        self.drained = False
        self._inflight = 0
        self._lock = threading.Lock()
        self._started: threading.Thread | None = None
        self._done = threading.Event()

    def enter(self) -> None:
        with self._lock:
            self._inflight += 1

    def leave(self) -> None:
        with self._lock:
            self._inflight -= 1

    @property
    def inflight(self) -> int:
        return self._inflight

    def wait_idle(self, registry: Mapping[str, Any], deadline: float) -> bool:
        """Wait until no request runs and no stream is open; False at the deadline."""
        limits = registry["nick_jobs.stream_limits"]
        while self._inflight > 0 or limits.open > 0:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def wait(self, timeout_s: float) -> bool:
        """Wait for a drain that has started to be done (steps 1 to 4); True at once when
        none has started, False at the deadline."""
        with self._lock:
            started = self._started is not None
        return not started or self._done.wait(timeout_s)

    def start(
        self,
        registry: Mapping[str, Any],
        grace_s: float,
        stop_server: Callable[[], None] | None = None,
    ) -> None:
        """Begin draining (once) on a thread of its own; the signal handler returns.
        ``stop_server`` runs once drained; None for a server that stops by itself."""
        with self._lock:
            if self._started is not None:
                return
            self.draining = True
            self._started = threading.Thread(
                target=self._drain,
                args=(registry, grace_s, stop_server),
                name="nick-jobs-drain",
                daemon=True,
            )
        self._started.start()

    def _drain(
        self,
        registry: Mapping[str, Any],
        grace_s: float,
        stop_server: Callable[[], None] | None,
    ) -> None:
        deadline = time.monotonic() + grace_s
        registry["nick_jobs.stream_hub"].shutdown()
        if not self.wait_idle(registry, deadline):
            log.warning(
                "shutdown: %d requests still running after %g s; stopping anyway",
                self._inflight,
                grace_s,
            )
        remaining_ms = max(int((deadline - time.monotonic()) * 1000), 1000)
        registry["nick_jobs.queue"].stop_embedded_worker(timeout_ms=remaining_ms)
        log.info("shutdown: drained, stopping the server")
        self.drained = True
        self._done.set()
        if stop_server is not None:
            stop_server()


def _stop_pserve() -> None:
    # Runs the SIGTERM handler in the main thread once more, which now stops the server.
    # SIGINT would do (waitress stops on Ctrl-C) unless it is ignored, as in a process
    # started in the background by a shell.
    _thread.interrupt_main(signal.SIGTERM)


def drain_tween_factory(
    handler: Callable[[Request], Response], registry: Mapping[str, Any]
) -> Callable[[Request], Response]:
    drain: Drain = registry["nick_jobs.drain"]

    def drain_tween(request: Request) -> Response:
        if drain.draining and request.path_info not in ALWAYS_ANSWERED:
            error = api_error(Error.SERVICE_UNAVAILABLE, "This server is shutting down.")
            error.headers["Retry-After"] = "1"
            error.headers["Connection"] = "close"
            return error
        drain.enter()
        try:
            return handler(request)
        finally:
            drain.leave()

    return drain_tween


def install_signal_handler(registry: Mapping[str, Any], grace_s: float) -> bool:
    """SIGTERM drains this app; False when not possible here (not the main thread) or
    when the process handles SIGTERM already (its handler is not this module's)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    current = signal.getsignal(signal.SIGTERM)
    if current is not signal.SIG_DFL and not getattr(current, "nick_jobs_drain", False):
        # Taking it over would leave the process's own stop undone: a `nick-jobs worker`
        # process, for one, would exit without handing back its running jobs.
        log.debug("shutdown: SIGTERM has a handler in this process already; leaving it")
        return False
    drain: Drain = registry["nick_jobs.drain"]

    def on_sigterm(signum: int, frame: Any) -> None:
        if drain.drained:
            # Waitress's loop stops on SystemExit, closes its sockets, and pserve exits 0.
            raise SystemExit(0)
        if drain.draining:
            log.warning("shutdown: second SIGTERM, stopping now")
            os._exit(1)
        log.info("shutdown: SIGTERM, draining for up to %g s", grace_s)
        drain.start(registry, grace_s, stop_server=_stop_pserve)

    # Marked, so that an app built again in this process (tests) takes its place.
    on_sigterm.nick_jobs_drain = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGTERM, on_sigterm)
    return True


def begin_drain(registry: Mapping[str, Any]) -> bool:
    """Start draining the app of ``registry`` now, as SIGTERM does under ``pserve``, but
    leave stopping the server to the server: for one whose own SIGTERM handler stops it
    once its requests are done (gunicorn; see ``deploy/gunicorn.conf.py``).

    Returns at once (the drain runs on a thread of its own), so it may be called from a
    signal handler. Calling it again does nothing more. False when
    ``nick_jobs.graceful_shutdown`` is off: nothing starts.
    """
    settings = registry_settings(registry)
    if not settings.graceful_shutdown:
        return False
    drain: Drain = registry["nick_jobs.drain"]
    if not drain.draining:
        log.info("shutdown: draining for up to %g s", settings.shutdown_grace_s)
    drain.start(registry, settings.shutdown_grace_s)
    return True


def wait_drained(registry: Mapping[str, Any], timeout_s: float | None = None) -> bool:
    """Wait until a drain started by :func:`begin_drain` (or SIGTERM) is done: streams
    closed, requests finished or given up on, the embedded worker stopped. True at once
    when no drain has started; False after ``timeout_s`` seconds (by default the
    ``nick_jobs.shutdown_grace`` and 10 more for the embedded worker's stop)."""
    if timeout_s is None:
        timeout_s = registry_settings(registry).shutdown_grace_s + 10
    drain: Drain = registry["nick_jobs.drain"]
    return drain.wait(timeout_s)


def on_application_created(event: ApplicationCreated) -> None:
    registry = event.app.registry
    settings = registry_settings(registry)
    if settings.graceful_shutdown:
        install_signal_handler(registry, settings.shutdown_grace_s)


def includeme(config: Configurator) -> None:
    from pyramid.events import ApplicationCreated

    config.registry["nick_jobs.drain"] = Drain()
    config.add_tween("nick_jobs.ops.shutdown.drain_tween_factory")
    config.add_subscriber(on_application_created, ApplicationCreated)
