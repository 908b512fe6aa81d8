"""The Python client of the nick-jobs HTTP API, as the server's package names it.

The client is its own distribution, ``nick-jobs-client`` (``clients/python``), whose
package is :mod:`nick_jobs_client`; the server distribution carries it too. These are its
names, for the code that imports them from here:

>>> from nick_jobs.client import Client
>>> Client("http://localhost:8080").url
'http://localhost:8080'
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
    "token_expiry",
]
