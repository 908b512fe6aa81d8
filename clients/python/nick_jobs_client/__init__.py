"""nick-jobs-client: the Python client of the nick-jobs HTTP API and the ``nick-jobs``
command line, on the standard library alone.

>>> from nick_jobs_client import Client
>>> client = Client("http://localhost:8080")
>>> client.login("admin", "admin")                     # doctest: +SKIP
>>> job = client.submit_job("dummy", {"sleep": 1})     # doctest: +SKIP

:mod:`nick_jobs_client.client` documents the client; :mod:`nick_jobs_client.cli` is the
command line.
"""

from __future__ import annotations

from nick_jobs_client.client import (
    DEFAULT_URL,
    JOB_STATUSES,
    LOG_LEVELS,
    Client,
    ClientError,
    Event,
    EventStream,
    LogPage,
    Page,
    Response,
    ServerUnavailable,
    SSEParser,
    token_expiry,
)
from nick_jobs_client.consumer import Consumer, JobAborted, JobContext, JobFailed, JobStopped

__all__ = [
    "DEFAULT_URL",
    "JOB_STATUSES",
    "LOG_LEVELS",
    "Client",
    "ClientError",
    "Consumer",
    "Event",
    "EventStream",
    "JobAborted",
    "JobContext",
    "JobFailed",
    "JobStopped",
    "LogPage",
    "Page",
    "Response",
    "SSEParser",
    "ServerUnavailable",
    "__version__",
    "token_expiry",
]

# The distributions that install this package: its own, or the server's, which carries it.
_DISTRIBUTIONS = ("nick-jobs-client", "nick-jobs")


def __getattr__(name: str) -> str:
    # ``__version__`` is read from the installed distribution's metadata, on first use:
    # looking it up costs more than importing the client.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        found = "0+unknown"  # imported from a source tree that was never installed
        for distribution in _DISTRIBUTIONS:
            try:
                found = version(distribution)
            except PackageNotFoundError:
                continue
            break
        globals()["__version__"] = found
        return found
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
