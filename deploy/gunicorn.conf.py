"""gunicorn serving nick-jobs from several processes
(docs/deployment.md#several-processes-gunicorn):

    gunicorn --paste production.ini -c deploy/gunicorn.conf.py

``--paste`` loads the ``[app:main]`` of the ini file and its logging sections; gunicorn
reads no ``[server:main]``: what waitress takes from there is set here instead, and
``NICK_JOBS_LISTEN`` and ``NICK_JOBS_THREADS`` set ``bind`` and ``threads`` as they set
waitress's ``listen`` and ``threads``. Anything on the command line (``-w 4``,
``-b 127.0.0.1:8081``) wins over this file.

Every worker is a whole API process: its own interpreter, database pools, event streams
and limits (``nick_jobs.stream_max_per_process``, ``nick_jobs.max_active_requests``).

On SIGTERM the master stops accepting, passes SIGTERM to each worker and waits for them
up to ``graceful_timeout``. The hooks below make each worker drain the app as ``pserve``
does (nick_jobs/ops/shutdown.py): new requests get ``503``, open event streams a ``close``
with ``reason: shutdown``, running requests finish, the embedded worker stops; then
gunicorn's own stop goes on. SIGINT or SIGQUIT to the master stops at once.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any


def _from_environment() -> dict[str, str]:
    """NICK_JOBS_LISTEN and NICK_JOBS_THREADS, as ``pserve production.ini`` takes them
    (nick_jobs/ops/serve.py), over this file's bind and threads; a bad value stops the
    start with one line naming the variable."""
    from nick_jobs.ops.serve import server_settings
    from nick_jobs.settings import ConfigurationError

    try:
        return server_settings({"listen": "0.0.0.0:8080", "threads": "256"})
    except ConfigurationError as exc:
        print(f"nick-jobs: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


_server = _from_environment()
# As production.ini's listen: a proxy on this host or a load balancer connects to it,
# never clients themselves (docs/deployment.md#behind-a-proxy). NICK_JOBS_LISTEN's
# addresses instead when it is set; its `*` (every interface) is IPv4's 0.0.0.0 here.
bind = [address.replace("*:", "0.0.0.0:", 1) for address in _server["listen"].split()]
# One per core: one Python process runs Python on one core at a time (its GIL).
workers = 2
# Threads, not processes, per worker: each open event stream holds a thread for its whole
# life, and most of a request's time is spent waiting on PostgreSQL.
worker_class = "gthread"
# 256 leave plenty for plain requests beside the 100 streams of
# nick_jobs.stream_max_per_process; nick_jobs.max_active_requests bounds the requests
# that use the database at once. Idle threads cost little memory. NICK_JOBS_THREADS
# instead when it is set.
threads = int(_server["threads"])
# Connections a worker holds at once, kept-alive and streams included; past it, the
# worker stops accepting until one closes (waitress's connection_limit).
worker_connections = 512
# Seconds an idle kept-alive connection stays open: above nginx's upstream
# keepalive_timeout (60 s), so the proxy closes its idle connections first, never
# gunicorn under a request the proxy is sending.
keepalive = 75
# The app is loaded in each worker, after the fork: database pools, broker connections
# and threads (the stream hub's, the embedded worker's) never cross a fork.
preload_app = False
# A worker whose main loop is stuck this long is killed and replaced. A gthread worker's
# loop runs beside its request threads, so long requests and streams don't count.
timeout = 30
# How long the master waits for its workers after SIGTERM before it kills them: more
# than nick_jobs.shutdown_grace (20 s), which the drain gives running requests.
graceful_timeout = 30
# Header lines up to nginx's large_client_header_buffers (16k): a token up to
# nick_jobs.max_authorization_header (8192) with room to spare.
limit_request_field_size = 16384
limit_request_line = 8190
# The proxy's address: only its X-Forwarded-Proto makes a URL https. Only that header:
# gunicorn also believes X-Forwarded-Ssl and X-Forwarded-Protocol by default, which
# nginx passes on from the client as they come.
forwarded_allow_ips = "127.0.0.1,::1"
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}
# No gunicornc control socket (gunicorn 25.1 and later): its default path is one per
# user, which a second gunicorn of the same user (a second service, a test run) shares.
control_socket_disable = True

log = logging.getLogger("nick_jobs.gunicorn")


def _registry(worker: Any) -> Any:
    """The registry of the Pyramid app the worker serves; None if it is wrapped."""
    return getattr(worker.wsgi, "registry", None)


def post_worker_init(worker: Any) -> None:
    """SIGTERM to this worker drains the app first, then runs gunicorn's own stop."""
    from nick_jobs.ops import shutdown

    registry = _registry(worker)
    if registry is None or "nick_jobs.drain" not in registry:
        log.warning("SIGTERM stops this worker without draining: its app is not nick-jobs'")
        return
    settings = registry["nick_jobs.settings"]
    if settings.embedded_broker and worker.cfg.workers > 1:
        log.warning(
            "%d workers with the embedded queue (stub://): each queues and runs only the "
            "jobs submitted to it, and a stream sees only its own worker's",
            worker.cfg.workers,
        )
    if not settings.graceful_shutdown:
        return
    stop_worker = signal.getsignal(signal.SIGTERM)

    def drain_then_stop(signum: int, frame: Any) -> None:
        shutdown.begin_drain(registry)
        if callable(stop_worker):
            stop_worker(signum, frame)

    signal.signal(signal.SIGTERM, drain_then_stop)
    # As gunicorn sets it for its own handler: SIGTERM does not interrupt system calls.
    signal.siginterrupt(signal.SIGTERM, False)


def worker_exit(server: Any, worker: Any) -> None:
    """Once gunicorn's connections are closed, let the drain finish (the embedded worker
    hands back its jobs) before the process exits."""
    from nick_jobs.ops import shutdown

    registry = _registry(worker) if hasattr(worker, "wsgi") else None
    if registry is not None and "nick_jobs.drain" in registry:
        shutdown.wait_drained(registry)
