"""The server of ``pserve``: waitress, with its listen address and threads from the
environment when they are set (docs/deployment.md#productionini-and-the-environment).

    [server:main]
    use = egg:nick-jobs#main
    listen = *:8080
    threads = 256

``NICK_JOBS_LISTEN=127.0.0.1:8081 pserve production.ini`` listens there instead of on the
ini's ``listen`` (and ``host``, ``port`` or ``unix_socket``), ``NICK_JOBS_THREADS=64``
runs that many threads; unset or empty, the ini's values hold. Every other key of the
section is waitress's own and goes to ``waitress.serve`` as it is.

PasteDeploy's variables can't give an ini value a default that the environment
overrides: a value in the ini file wins over the ones ``pserve`` passes. So the override
is applied here, by the server factory of the ``paste.server_factory`` entry point
``main``. A factory, not a runner: PasteDeploy calls it when ``pserve`` loads the server,
before the app, so a bad value stops the start before anything else has begun (a
runner is called only once the app is loaded, and ``pserve`` exits 0 when it raises
``SystemExit``).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import waitress

from nick_jobs.settings import ConfigurationError

LISTEN = "NICK_JOBS_LISTEN"
THREADS = "NICK_JOBS_THREADS"
# Where the ini says to listen; NICK_JOBS_LISTEN replaces them all (waitress refuses
# listen beside any of them).
_PLACES = ("listen", "host", "port", "unix_socket")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

log = logging.getLogger(__name__)


def _check_listen(value: str) -> None:
    """Refuse what waitress could not bind: each address is host:port, with a numeric
    port and a host that resolves."""
    usage = (
        f"{LISTEN} takes host:port addresses separated by spaces "
        f"(*:8080, 127.0.0.1:8081, [::1]:8080), not {value!r}"
    )
    for address in value.split():
        host, colon, port = address.rpartition(":")
        if not colon or not host or not port.isdigit() or int(port) > 65535:
            raise ConfigurationError(usage)
        name = None if host == "*" else host.removeprefix("[").removesuffix("]")
        try:
            socket.getaddrinfo(name, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except (OSError, UnicodeError):
            raise ConfigurationError(f"{LISTEN}: no address for the host of {address!r}") from None


def server_settings(
    local_conf: Mapping[str, str], environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Waitress's keyword arguments: the server section's ``local_conf`` with
    ``NICK_JOBS_LISTEN`` and ``NICK_JOBS_THREADS`` applied; :class:`ConfigurationError`
    names the variable of a bad value."""
    environ = os.environ if environ is None else environ
    settings = dict(local_conf)
    listen = environ.get(LISTEN, "").strip()
    if listen:
        _check_listen(listen)
        for key in _PLACES:
            settings.pop(key, None)
        settings["listen"] = listen
    threads = environ.get(THREADS, "").strip()
    if threads:
        if not threads.isdigit() or int(threads) < 1:
            raise ConfigurationError(f"{THREADS} takes a whole number above 0, not {threads!r}")
        settings["threads"] = threads
    return settings


def server_factory(global_conf: Mapping[str, str], **local_conf: str) -> Callable[[WSGIApp], None]:
    """The ``paste.server_factory`` ``main`` (``use = egg:nick-jobs#main``): a server that
    serves its app with waitress and the settings of :func:`server_settings`."""
    try:
        settings = server_settings(local_conf)
    except ConfigurationError as exc:
        # One line, as the nick-jobs commands print a configuration error, and their status.
        print(f"nick-jobs: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    sources = [name for name in (LISTEN, THREADS) if os.environ.get(name, "").strip()]

    def serve(app: WSGIApp) -> None:
        where = settings.get("listen") or settings.get("unix_socket")
        if not where:
            # Waitress's defaults, named in the log line only.
            where = f"{settings.get('host', '0.0.0.0')}:{settings.get('port', '8080')}"  # noqa: S104
        log.info(
            "waitress on %s with %s threads%s",
            where,
            settings.get("threads", "4"),
            f" (from {' and '.join(sources)})" if sources else "",
        )
        # Waitress reads its ini values (all strings) as it reads pserve's: its own
        # adjustments convert them, which its stubs' keyword types don't describe.
        options: dict[str, Any] = dict(settings)
        waitress.serve(app, **options)

    return serve
