"""A Python client for the nick-jobs HTTP API, using only the standard library.

>>> from nick_jobs_client import Client
>>> client = Client("http://localhost:8080")
>>> client.login("admin", "admin")                     # doctest: +SKIP
>>> job = client.submit_job("dummy", {"sleep": 1})     # doctest: +SKIP
>>> client.get_job(job["uuid"])["status"]              # doctest: +SKIP
'running'

Every method returns the API's JSON (dicts and lists, as in docs/api.md) or ``None`` for
the ``204`` answers. Every failure raises :class:`ClientError`, which carries the HTTP
status and the server's error body; a server that can't be reached (or answers 502, 503 or
504) raises its subclass :class:`ServerUnavailable`.

Idempotent calls (GETs, logout, and a submission with an ``Idempotency-Key``) are retried
on connection errors; the others are sent once, so a lost answer never doubles an abort,
a retry or a submission.

The live endpoints (``/@jobs/{uuid}/stream``, ``/@jobs/stream``, ``POST
/@jobs?follow=true`` and ``/@jobs/{uuid}/log?follow=true``) answer Server-Sent Events:
:class:`SSEParser` reads them, and :meth:`Client.stream_job`, :meth:`Client.stream_jobs`,
:meth:`Client.submit_and_stream` and :meth:`Client.follow_job_log` yield :class:`Event`
objects, resuming with ``Last-Event-ID`` when a connection drops.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.client
import json
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote, urlencode, urlsplit

__all__ = [
    "DEFAULT_URL",
    "JOB_STATUSES",
    "LOG_LEVELS",
    "Client",
    "ClientError",
    "Event",
    "EventStream",
    "LogPage",
    "Page",
    "Response",
    "SSEParser",
    "ServerUnavailable",
    "token_expiry",
]

DEFAULT_URL = "http://localhost:8080"
JOB_STATUSES = ("created", "running", "completed", "failed", "aborted", "stopped")
LOG_LEVELS = ("debug", "info", "warning", "error")
UNAVAILABLE_STATUSES = frozenset({502, 503, 504})
USER_AGENT = "nick-jobs-client/0.1"
# The errors that mean "no answer came back": refused, reset, timed out, closed early.
CONNECTION_ERRORS = (OSError, http.client.HTTPException)


class ClientError(Exception):
    """A request failed. ``status`` is the HTTP status (``None`` when no answer came back)
    and ``body`` the server's JSON error body (``{"error": {...}}``) when it sent one."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: Any = None,
        method: str | None = None,
        url: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body
        self.method = method
        self.url = url
        self.retry_after = retry_after
        """Seconds from the ``Retry-After`` header (``429``, ``503``), when it was sent."""

    @property
    def error(self) -> dict[str, Any]:
        """The ``error`` object of the body, or ``{}``."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return cast("dict[str, Any]", self.body["error"])
        return {}

    @property
    def type(self) -> str | None:
        return self.error.get("type")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status!r})"


class ServerUnavailable(ClientError):
    """The server could not be reached, or answered 502, 503 or 504."""


def token_expiry(token: str) -> dt.datetime | None:
    """When a JWT bearer token expires (its ``exp`` claim, in UTC), or ``None`` when the
    token is not a JWT or carries no usable ``exp``.

    The payload is read without checking the signature: only the server, which holds the
    key, can tell whether the token is genuine. This only lets a client see that a token
    has expired without sending it.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims["exp"]
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            return None
        return dt.datetime.fromtimestamp(exp, dt.UTC)
    except (ValueError, KeyError, TypeError, IndexError, OverflowError, OSError):
        return None


@dataclass(frozen=True)
class Response:
    status: int
    headers: http.client.HTTPMessage
    data: Any
    """The decoded JSON body, or ``None`` when there is none."""


@dataclass(frozen=True)
class Page:
    """One page of ``GET /@jobs``."""

    jobs: list[dict[str, Any]]
    next_url: str | None
    """The ``Link: rel="next"`` URL, or ``None`` on the last page."""
    total: int | None
    """``X-Total-Count`` when the server sent it."""


@dataclass(frozen=True)
class LogPage:
    """One page of ``GET /@jobs/{uuid}/log``."""

    lines: list[dict[str, Any]]
    next_url: str | None
    """The ``Link: rel="next"`` URL, or ``None`` on the last page."""


# --- Server-Sent Events ----------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One Server-Sent Event, as the HTML standard's event-stream parsing dispatches it."""

    event: str
    """The ``event:`` field: ``status``, ``progress``, ``log``, ``close``; ``message``
    when the event named none."""
    data: str
    """The ``data:`` lines, joined with newlines."""
    id: str | None = None
    """This event's own ``id:`` field, or ``None`` when it had none (``close`` events)."""

    @property
    def json(self) -> Any:
        """``data`` decoded as JSON (nick-jobs sends one line of JSON per event)."""
        return json.loads(self.data)


# A line ends with CRLF, LF or CR (the three are allowed, even mixed, in one stream).
_END_OF_LINE = re.compile(rb"\r\n|\r|\n")


class SSEParser:
    r"""An incremental ``text/event-stream`` parser: feed it the bytes as they arrive.

    >>> parser = SSEParser()
    >>> parser.feed(b"retry: 2000\nevent: log\nid: 7\ndata: {\"a\"")
    []
    >>> parser.feed(b": 1}\n\n")
    [Event(event='log', data='{"a": 1}', id='7')]
    >>> parser.retry, parser.last_event_id
    (2000, '7')

    Chunks may split anywhere, inside a line, a UTF-8 character or a CRLF. Comments
    (lines starting with ``:``, the server's keepalives) are counted in ``comments``.
    ``retry`` is the last valid ``retry:`` value in milliseconds and ``last_event_id`` the
    stream's last event ID, as a browser's ``EventSource`` keeps them for reconnecting.
    """

    def __init__(self, last_event_id: str = "") -> None:
        self.last_event_id = last_event_id
        self.retry: int | None = None
        self.comments = 0
        self._buffer = b""
        # The last chunk ended with CR: an LF at the start of the next one belongs to it.
        self._after_cr = False
        self._started = False
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        """Parse ``chunk``; return the events it completed (an event ends at a blank line)."""
        if not chunk:
            return []
        if self._after_cr:
            self._after_cr = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        buffer = self._buffer + chunk
        events: list[Event] = []
        start = 0
        for match in _END_OF_LINE.finditer(buffer):
            if match.end() == len(buffer) and match.group() == b"\r":
                self._after_cr = True
            self._line(buffer[start : match.start()], events)
            start = match.end()
        self._buffer = buffer[start:]
        return events

    def reset(self) -> None:
        """Forget a half-received event: a new connection starts a new stream.

        ``last_event_id`` and ``retry`` stay, for the reconnection.
        """
        self._buffer = b""
        self._after_cr = False
        self._started = False
        self._event, self._data, self._id = "", [], None

    def _line(self, raw: bytes, events: list[Event]) -> None:
        # Line ends are ASCII, so splitting the bytes first never cuts a UTF-8 character.
        line = raw.decode("utf-8", "replace")
        if not self._started:
            self._started = True
            line = line.removeprefix("\ufeff")
        if not line:
            self._dispatch(events)
            return
        if line.startswith(":"):
            self.comments += 1
            return
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        elif field == "id":
            if "\0" not in value:
                self._id = self.last_event_id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        # Any other field is ignored, as the standard says.

    def _dispatch(self, events: list[Event]) -> None:
        if self._data:
            events.append(Event(self._event or "message", "\n".join(self._data), self._id))
        self._event, self._data, self._id = "", [], None


def fields_summary(fields: Any, prefix: str = "") -> list[str]:
    """Flatten ``{"params": {"steps": ["Must be ..."]}}`` into ``["params.steps: Must be ..."]``."""
    if isinstance(fields, dict):
        out: list[str] = []
        for key, value in fields.items():
            out += fields_summary(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(fields, list) and all(isinstance(item, str) for item in fields):
        return [f"{prefix}: {' '.join(fields).rstrip('.')}"]
    return [f"{prefix}: {json.dumps(fields)}"]


def error_message(status: int, reason: str, body: Any) -> str:
    """One line for people: the server's message, with per-field messages when present."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not error.get("message"):
        return f"HTTP {status} {reason}".strip()
    message = str(error["message"])
    if error.get("fields"):
        message += " (" + "; ".join(fields_summary(error["fields"])) + ")"
    return message


def _link_next(header: str | None) -> str | None:
    """The URL of ``rel="next"`` in a ``Link`` header."""
    if not header:
        return None
    for part in header.split(","):
        url, _, params = part.strip().partition(";")
        if 'rel="next"' in params.replace(" ", "") or "rel=next" in params.replace(" ", ""):
            return url.strip().strip("<>")
    return None


class Client:
    """The nick-jobs API at ``url`` (a base URL: ``http://host:8080`` or ``https://host/jobs``).

    ``token`` is the bearer token; :meth:`login` sets it. ``timeout`` is per request in
    seconds. ``retries`` is how many more times an idempotent call is tried after a
    connection error, waiting ``backoff``, then twice that, and so on.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 2,
        backoff: float = 0.2,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str = USER_AGENT,
    ) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self._scheme = parts.scheme
        self._netloc = parts.netloc
        self._host = parts.hostname
        self._port = parts.port
        self._base_path = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.ssl_context = ssl_context
        self.user_agent = user_agent

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # --- the HTTP layer ------------------------------------------------------------------

    def _connection(self, timeout: float | None = None) -> http.client.HTTPConnection:
        timeout = self.timeout if timeout is None else timeout
        if self._scheme == "https":
            return http.client.HTTPSConnection(
                self._host,
                self._port,
                timeout=timeout,
                context=self.ssl_context or ssl.create_default_context(),
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _target(self, path: str, query: Mapping[str, Any] | None) -> str:
        """The request target: the base path + ``path`` (or a full URL of this server)."""
        if "://" in path:
            # A URL the server handed out (Link: rel="next"). Only its path and query are
            # used, so the token is never sent to another host.
            parts = urlsplit(path)
            target = parts.path + (f"?{parts.query}" if parts.query else "")
        else:
            target = self._base_path + path
        if query:
            pairs = [(k, v) for k, v in query.items() if v is not None]
            if pairs:
                target += ("&" if "?" in target else "?") + urlencode(pairs)
        return target

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        auth: bool = True,
        timeout: float | None = None,
    ) -> Response:
        """Send one request and return the decoded :class:`Response`; raise on a non-2xx.

        ``idempotent`` defaults to ``True`` for GET and HEAD: only idempotent requests are
        repeated after a connection error. ``timeout`` replaces the client's for this
        request (a claim that waits for jobs needs longer).
        """
        if idempotent is None:
            idempotent = method in {"GET", "HEAD"}
        target = self._target(path, query)
        url = f"{self._scheme}://{self._netloc}{target}"
        send_headers = {"Accept": "application/json", "User-Agent": self.user_agent}
        if auth and self.token:
            send_headers["Authorization"] = f"Bearer {self.token}"
        payload = None
        if json_body is not None:
            payload = json.dumps(json_body).encode()
            send_headers["Content-Type"] = "application/json"
        send_headers.update(headers or {})
        attempts = 1 + (self.retries if idempotent else 0)
        for attempt in range(attempts):
            conn = self._connection(timeout)
            try:
                conn.request(method, target, body=payload, headers=send_headers)
                raw = conn.getresponse()
                status, reason, resp_headers = raw.status, raw.reason, raw.headers
                content = raw.read()
            except CONNECTION_ERRORS as exc:
                if attempt + 1 < attempts:
                    time.sleep(self.backoff * 2**attempt)
                    continue
                raise ServerUnavailable(
                    f"can't reach {self.url}: {_describe(exc)}", method=method, url=url
                ) from exc
            finally:
                conn.close()
            break
        data = _decode(content, resp_headers.get("Content-Type", ""))
        if status >= 400:
            raise _error(status, reason, resp_headers, data, method, url)
        return Response(status, resp_headers, data)

    # --- authentication ------------------------------------------------------------------

    def login(self, login: str, password: str) -> str:
        """``POST /@login``: keep the new token on the client and return it."""
        data = self.request(
            "POST", "/@login", json_body={"login": login, "password": password}, auth=False
        ).data
        self.token = data["token"]
        return self.token

    def renew(self) -> str:
        """``POST /@login-renew``: swap the token for a fresh one, and return it."""
        self.token = self.request("POST", "/@login-renew").data["token"]
        return self.token

    def logout(self) -> None:
        """``POST /@logout``: revoke the token on the server and forget it here."""
        if self.token:
            self.request("POST", "/@logout", idempotent=True)
        self.token = None

    # --- jobs ----------------------------------------------------------------------------

    def list_page(
        self,
        *,
        status: str | None = None,
        action: str | None = None,
        actor: str | None = None,
        q: str | None = None,
        page_size: int | None = None,
        count: bool = False,
        url: str | None = None,
        parent: str | None = None,
        sort: str | None = None,
    ) -> Page:
        """One page of ``GET /@jobs``; pass a page's ``next_url`` as ``url`` for the next.

        ``sort`` is ``newest`` (the server's default) or ``oldest``."""
        if url is not None:
            response = self.request("GET", url)
        else:
            query: dict[str, Any] = {
                "status": status,
                "action": action,
                "actor": actor,
                "q": q,
                "parent": parent,
            }
            query["sort"] = sort
            query["b_size"] = page_size
            query["count"] = "true" if count else None
            response = self.request("GET", "/@jobs", query=query)
        total = response.headers.get("X-Total-Count")
        return Page(
            jobs=response.data,
            next_url=_link_next(response.headers.get("Link")),
            total=int(total) if total is not None else None,
        )

    def iter_jobs(
        self,
        *,
        status: str | None = None,
        action: str | None = None,
        actor: str | None = None,
        q: str | None = None,
        limit: int | None = None,
        page_size: int | None = None,
        parent: str | None = None,
        sort: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The jobs, newest first (``sort="oldest"``: oldest first), following
        ``Link: rel="next"`` across pages.

        Stops after ``limit`` jobs when given. ``page_size`` is the server's ``b_size``;
        by default it is ``limit`` (up to the server's maximum) or the server's default.
        """
        if limit is not None and limit <= 0:
            return
        if page_size is None and limit is not None:
            page_size = min(limit, 1000)
        page = self.list_page(
            status=status,
            action=action,
            actor=actor,
            q=q,
            parent=parent,
            page_size=page_size,
            sort=sort,
        )
        seen = 0
        while True:
            for job in page.jobs:
                yield job
                seen += 1
                if limit is not None and seen >= limit:
                    return
            if not page.next_url:
                return
            page = self.list_page(url=page.next_url)

    def list_jobs(self, **filters: Any) -> list[dict[str, Any]]:
        """All of :meth:`iter_jobs` as a list; takes the same keyword arguments."""
        return list(self.iter_jobs(**filters))

    def count_jobs(
        self,
        *,
        status: str | None = None,
        action: str | None = None,
        actor: str | None = None,
        q: str | None = None,
        parent: str | None = None,
    ) -> int:
        """How many jobs match the filters (those this user may see).

        One request, ``GET /@jobs?b_size=1&count=true``, read from ``X-Total-Count``; a
        server that sends no count has its pages followed instead.
        """
        filters: dict[str, Any] = {
            "status": status,
            "action": action,
            "actor": actor,
            "q": q,
            "parent": parent,
        }
        total = self.list_page(**filters, page_size=1, count=True).total
        if total is None:
            total = sum(1 for _ in self.iter_jobs(**filters, page_size=1000))
        return total

    def job_counts(self, *, action: str | None = None, actor: str | None = None) -> dict[str, int]:
        """The number of jobs in each status, in :data:`JOB_STATUSES` order: one
        :meth:`count_jobs` request per status."""
        return {
            status: self.count_jobs(status=status, action=action, actor=actor)
            for status in JOB_STATUSES
        }

    def stats(self, minutes: int | None = None) -> dict[str, Any]:
        """``GET /@jobs/@stats``: the jobs this user may see, counted by status and by
        action, the oldest waiting job, and the jobs finished in each of the last
        ``minutes`` minutes (the server's default, 60, when ``None``; 1 to 1440)."""
        return cast(
            "dict[str, Any]", self.request("GET", "/@jobs/@stats", query={"minutes": minutes}).data
        )

    def get_job(self, uuid: str) -> dict[str, Any]:
        """``GET /@jobs/{uuid}``."""
        return cast("dict[str, Any]", self.request("GET", _job_path(uuid)).data)

    def submit_job(
        self,
        action: str,
        params: Mapping[str, Any] | None = None,
        *,
        title: str | None = None,
        description: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """``POST /@jobs``: submit ``action`` with ``params``; return the job.

        With an ``idempotency_key`` the submission is safe to repeat: it is retried on
        connection errors, and a repeat returns the first job instead of a new one.
        """
        body: dict[str, Any] = {"params": {**(params or {}), "action": action}}
        if title is not None:
            body["title"] = title
        if description is not None:
            body["description"] = description
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return cast(
            "dict[str, Any]",
            self.request(
                "POST", "/@jobs", json_body=body, headers=headers, idempotent=bool(idempotency_key)
            ).data,
        )

    def submit_jobs(
        self, jobs: Sequence[Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> list[dict[str, Any]]:
        """``POST /@jobs`` with an array: a bulk submit of 1 to 1,000 jobs, all created or
        none; return them in the order given.

        Each job is a body as the API takes it: ``{"params": {"action": …, …},
        "title"?, "description"?}``. A 400 lists the faulty bodies by index
        (``ClientError.body["error"]["fields"]``). With an ``idempotency_key`` the submit
        is safe to repeat, as :meth:`submit_job`'s.
        """
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return cast(
            "list[dict[str, Any]]",
            self.request(
                "POST",
                "/@jobs",
                json_body=list(jobs),
                headers=headers,
                idempotent=bool(idempotency_key),
            ).data,
        )

    def abort_job(self, uuid: str) -> None:
        """``POST /@jobs/{uuid}/abort``: stop a ``created`` or ``running`` job."""
        self.request("POST", _job_path(uuid, "abort"))

    def retry_job(self, uuid: str) -> None:
        """``POST /@jobs/{uuid}/retry``: run a ``failed`` or ``aborted`` job again."""
        self.request("POST", _job_path(uuid, "retry"))

    def delete_job(self, uuid: str) -> None:
        """``DELETE /@jobs/{uuid}``: remove a job that is not running."""
        self.request("DELETE", _job_path(uuid))

    def stop_job(self, uuid: str) -> None:
        """``POST /@jobs/{uuid}/stop``: ask a ``running`` job of a resumable action to stop.

        The answer comes at once; the job becomes ``stopped`` at the handler's next check.
        """
        self.request("POST", _job_path(uuid, "stop"))

    def resume_job(self, uuid: str) -> None:
        """``POST /@jobs/{uuid}/resume``: run a ``stopped`` job again from its checkpoint."""
        self.request("POST", _job_path(uuid, "resume"))

    def restart_job(self, uuid: str) -> dict[str, Any]:
        """``POST /@jobs/{uuid}/restart``: a new job made from a finished one; return it.

        Its ``parent`` is ``uuid``. Sent once: a repeat would make a second new job.
        """
        return cast("dict[str, Any]", self.request("POST", _job_path(uuid, "restart")).data)

    def job_log_page(
        self,
        uuid: str | None = None,
        *,
        level: str | None = None,
        page_size: int | None = None,
        url: str | None = None,
    ) -> LogPage:
        """One page of ``GET /@jobs/{uuid}/log``; pass a page's ``next_url`` as ``url``."""
        if url is not None:
            response = self.request("GET", url)
        else:
            query = {"level": level, "b_size": page_size}
            response = self.request("GET", _job_path(uuid or "", "log"), query=query)
        return LogPage(lines=response.data, next_url=_link_next(response.headers.get("Link")))

    def iter_job_log(
        self, uuid: str, *, level: str | None = None, page_size: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """The job's log lines, oldest first, across its attempts, following the pages.

        ``level`` keeps lines at that level or above (``debug``, ``info``, ``warning``,
        ``error``). Each line is ``{"time", "level", "message", "attempt"}``.
        """
        page = self.job_log_page(uuid, level=level, page_size=page_size)
        while True:
            yield from page.lines
            if not page.next_url:
                return
            page = self.job_log_page(url=page.next_url)

    def job_log(self, uuid: str, *, level: str | None = None) -> list[dict[str, Any]]:
        """All of :meth:`iter_job_log` as a list."""
        return list(self.iter_job_log(uuid, level=level))

    def job_history(self, uuid: str) -> list[dict[str, Any]]:
        """``GET /@jobs/{uuid}/history``: what happened to the job, in time order."""
        return cast("list[dict[str, Any]]", self.request("GET", _job_path(uuid, "history")).data)

    # --- live jobs: Server-Sent Events ---------------------------------------------------

    def stream_job(
        self, uuid: str, last_event_id: str | None = None, *, reconnects: int = 5
    ) -> EventStream:
        """``GET /@jobs/{uuid}/stream``: the job's ``status``, ``progress``, ``log`` and
        ``close`` events, as they happen.

        A fresh stream starts with the job's current ``status``; with ``last_event_id``
        (an earlier event's ``id``) it starts after that event instead. The stream ends
        after a ``close`` event whose data says ``"reconnect": false`` (the job finished,
        or was deleted). A dropped connection, or a ``close`` that says reconnect, is
        resumed with ``Last-Event-ID``, so no event is lost or repeated; ``reconnects``
        failed attempts in a row raise :class:`ServerUnavailable`.

        Connects at once, so a job that does not exist raises here (``404``).
        """
        path = _job_path(uuid, "stream")
        stream = EventStream(self, path, last_event_id=last_event_id, reconnects=reconnects)
        stream.uuid = uuid
        stream._connect_first(lambda lei: self._open_stream("GET", path, last_event_id=lei))
        return stream

    def follow_job_log(
        self,
        uuid: str,
        *,
        level: str | None = None,
        last_event_id: str | None = None,
        reconnects: int = 5,
    ) -> EventStream:
        """``GET /@jobs/{uuid}/log?follow=true``: the job's log lines alone, from its first
        one, each a ``log`` event (``{"uuid", "attempt", "time", "level", "message"}``),
        then a ``close`` once the job has ended (``finished``, ``stopped`` or ``deleted``).

        ``level`` keeps lines at that level or above. Each event's ``id`` is the line's: a
        dropped connection resumes after the last line had, as :meth:`stream_job` does, and
        ``last_event_id`` starts after that line. Connects at once, so a job that does not
        exist raises here (``404``).
        """
        query = {"follow": "true", "level": level}
        path = _job_path(uuid, "log") + "?" + urlencode(_without_none(**query))
        stream = EventStream(self, path, last_event_id=last_event_id, reconnects=reconnects)
        stream.uuid = uuid
        stream._connect_first(lambda lei: self._open_stream("GET", path, last_event_id=lei))
        return stream

    def stream_jobs(self, last_event_id: str | None = None, *, reconnects: int = 5) -> EventStream:
        """``GET /@jobs/stream``: a ``status`` event for each change of every job this
        user may see, from now on (no snapshot first). Resumes like :meth:`stream_job`;
        it ends only when the caller stops reading (or on ``close`` without reconnect).
        """
        path = "/@jobs/stream"
        stream = EventStream(self, path, last_event_id=last_event_id, reconnects=reconnects)
        stream._connect_first(lambda lei: self._open_stream("GET", path, last_event_id=lei))
        return stream

    def submit_and_stream(
        self,
        action: str,
        params: Mapping[str, Any] | None = None,
        *,
        title: str | None = None,
        description: str | None = None,
        idempotency_key: str | None = None,
        reconnects: int = 5,
    ) -> EventStream:
        """``POST /@jobs?follow=true``: submit a job and follow its events in one request.

        Takes the arguments of :meth:`submit_job`. The submission happens here, so a
        refused one raises at once; the returned stream's ``uuid`` is the new job's, and
        its events are those of :meth:`stream_job`. A connection that drops later resumes
        with ``GET /@jobs/{uuid}/stream``; the submission itself is never repeated, unless
        it has an ``idempotency_key``.
        """
        body: dict[str, Any] = {"params": {**(params or {}), "action": action}}
        if title is not None:
            body["title"] = title
        if description is not None:
            body["description"] = description
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        stream = EventStream(self, None, last_event_id=None, reconnects=reconnects)

        def submit(_last_event_id: str | None) -> tuple[http.client.HTTPConnection, Any]:
            return self._open_stream(
                "POST",
                "/@jobs",
                query={"follow": "true"},
                json_body=body,
                headers=headers,
                idempotent=bool(idempotency_key),
            )

        _, raw = stream._connect_first(submit)
        location = raw.headers.get("Location") or ""
        uuid = urlsplit(location).path.rstrip("/").rpartition("/")[2]
        if not uuid:
            stream.close()
            raise ClientError(
                "the server answered POST /@jobs?follow=true without a Location header",
                status=raw.status,
                method="POST",
                url=self.url + "/@jobs?follow=true",
            )
        stream.uuid = uuid
        stream.path = _job_path(uuid, "stream")
        return stream

    def _open_stream(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        last_event_id: str | None = None,
        idempotent: bool = True,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send a request for an event stream; return the open connection and response.

        A non-2xx answer raises as :meth:`request` does; an answer that is not an event
        stream raises :class:`ClientError`. The caller closes the connection.
        """
        target = self._target(path, query)
        url = f"{self._scheme}://{self._netloc}{target}"
        send_headers = {
            "Accept": "text/event-stream",
            "Cache-Control": "no-cache",
            "User-Agent": self.user_agent,
        }
        if self.token:
            send_headers["Authorization"] = f"Bearer {self.token}"
        if last_event_id:
            send_headers["Last-Event-ID"] = last_event_id
        payload = None
        if json_body is not None:
            payload = json.dumps(json_body).encode()
            send_headers["Content-Type"] = "application/json"
        send_headers.update(headers or {})
        attempts = 1 + (self.retries if idempotent else 0)
        for attempt in range(attempts):
            conn = self._connection()
            try:
                conn.request(method, target, body=payload, headers=send_headers)
                raw = conn.getresponse()
            except CONNECTION_ERRORS as exc:
                conn.close()
                if attempt + 1 < attempts:
                    time.sleep(self.backoff * 2**attempt)
                    continue
                raise ServerUnavailable(
                    f"can't reach {self.url}: {_describe(exc)}", method=method, url=url
                ) from exc
            break
        content_type = raw.headers.get("Content-Type", "")
        if raw.status >= 300 or not content_type.startswith("text/event-stream"):
            try:
                content = raw.read()
            except CONNECTION_ERRORS:
                content = b""
            finally:
                conn.close()
            data = _decode(content, content_type)
            if raw.status >= 300:
                raise _error(raw.status, raw.reason, raw.headers, data, method, url)
            raise ClientError(
                f"{method} {path} answered {content_type or 'no content type'}, "
                "not text/event-stream",
                status=raw.status,
                body=data,
                method=method,
                url=url,
            )
        return conn, raw

    def wait_for_job(
        self,
        uuid: str,
        statuses: tuple[str, ...] = ("completed", "failed", "aborted"),
        *,
        timeout: float = 60.0,
        interval: float = 0.1,
    ) -> dict[str, Any]:
        """Poll ``GET /@jobs/{uuid}`` until its status is one of ``statuses``.

        Raises ``TimeoutError`` at the deadline.
        """
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(uuid)
            if job["status"] in statuses:
                return job
            if time.monotonic() >= deadline:
                raise TimeoutError(f"job {uuid} is still {job['status']} after {timeout}s")
            time.sleep(interval)

    # --- consumers: running remote actions' jobs ---------------------------------------

    def claim_jobs(
        self,
        actions: Sequence[str],
        *,
        labels: Mapping[str, str] | None = None,
        claims: Mapping[str, str] | None = None,
        limit: int = 1,
        wait: float = 0,
    ) -> list[dict[str, Any]]:
        """``POST /@jobs/@claim``: take up to ``limit`` (1 to 100) waiting jobs of the
        remote ``actions``, oldest first; each is now ``running`` and this consumer's.

        Each job is the API's job JSON with a ``lease`` (``{"id", "expires"}``) to present
        in every report on it, and for a resumed job its ``checkpoint``. ``labels`` keeps
        the actions whose labels include these; ``claims`` is what this consumer offers the
        jobs' claims. With nothing to take, the server waits up to ``wait`` seconds (0 to
        30) for a job before it answers ``[]``; this request's timeout is longer by the
        client's ``timeout``. Sent once: a lost answer leaves its jobs claimed until their
        leases run out, rather than claiming more.
        """
        body: dict[str, Any] = {"actions": list(actions), "limit": limit, "wait": wait}
        if labels:
            body["labels"] = dict(labels)
        if claims:
            body["claims"] = dict(claims)
        response = self.request(
            "POST", "/@jobs/@claim", json_body=body, timeout=self.timeout + wait
        )
        return cast("list[dict[str, Any]]", response.data)

    def checkin(
        self,
        uuid: str,
        lease: str,
        *,
        progress: Mapping[str, Any] | None = None,
        log: Sequence[Mapping[str, Any]] | None = None,
        data: Any = None,
    ) -> dict[str, Any]:
        """``POST /@jobs/{uuid}/checkin``: renew the lease of a claimed job, with its
        ``progress`` (``{"percent", "message"}``), new ``log`` lines (``{"level",
        "message"}``, at most 1,000) and ``data`` (shown as the job's ``checkin_data``).

        Returns ``{"lease": {"id", "expires"} or None, "abort": bool, "stop": bool}``:
        ``abort`` means the job was aborted (stop working on it, report nothing), ``stop``
        that it was asked to stop (report :meth:`stopped_claimed` with a checkpoint).
        A lease that is no longer the job's raises :class:`ClientError` ``409``
        (``type`` ``"Lease refused"``, with the job's ``status`` in :attr:`ClientError.error`).
        """
        body: dict[str, Any] = {"lease": lease}
        if progress is not None:
            body["progress"] = dict(progress)
        if log:
            body["log"] = [dict(line) for line in log]
        if data is not None:
            body["data"] = data
        response = self.request("POST", _job_path(uuid, "checkin"), json_body=body)
        return cast("dict[str, Any]", response.data)

    def complete_claimed(self, uuid: str, lease: str, result: Mapping[str, Any]) -> None:
        """``POST /@jobs/{uuid}/complete``: the claimed job is done, with ``result`` (a
        ``400`` when it does not fit the action's result schema; the job keeps running)."""
        body = {"lease": lease, "result": dict(result)}
        self.request("POST", _job_path(uuid, "complete"), json_body=body)

    def complete_jobs(self, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """``POST /@jobs/@complete``: complete 1 to 100 claimed jobs in one request.

        Each item is ``{"uuid", "lease", "result"?}``, what :meth:`complete_claimed` sends
        with the job's uuid (``lease`` may be the claim's whole ``lease``). Returns one
        outcome an item, in order: ``{"uuid", "completed": True}``, or ``{"uuid",
        "error": {"type", "message", …}}`` for a job its own complete would have refused
        (``"Lease refused"`` with the job's ``status``, or ``"Validation error"`` with the
        ``fields`` of a result the action's schema refuses: that job keeps running). An
        invalid array raises :class:`ClientError` ``400``, with the faulty items by index.
        Sent once: a lost answer is not sent again.
        """
        body = [_complete_item(item) for item in items]
        response = self.request("POST", "/@jobs/@complete", json_body=body)
        return cast("list[dict[str, Any]]", response.data)

    def fail_claimed(self, uuid: str, lease: str, error_type: str, message: str) -> None:
        """``POST /@jobs/{uuid}/fail``: the claimed job failed; the server retries it as
        its action says, or it is ``failed`` with ``{"type": error_type, "message"}``."""
        body = {"lease": lease, "error": {"type": error_type, "message": message}}
        self.request("POST", _job_path(uuid, "fail"), json_body=body)

    def stopped_claimed(self, uuid: str, lease: str, checkpoint: Any) -> None:
        """``POST /@jobs/{uuid}/stopped``: the claimed job stopped, as asked, at
        ``checkpoint`` (any JSON), which its resumed attempt's claim hands back."""
        body = {"lease": lease, "checkpoint": checkpoint}
        self.request("POST", _job_path(uuid, "stopped"), json_body=body)

    def release_claimed(self, uuid: str, lease: str) -> None:
        """``POST /@jobs/{uuid}/release``: give the claimed job back unfinished; it waits
        again as a new attempt, for any consumer to claim."""
        self.request("POST", _job_path(uuid, "release"), json_body={"lease": lease})

    # --- scheduled jobs ------------------------------------------------------------------

    def list_scheduled_jobs(self) -> list[dict[str, Any]]:
        """``GET /@scheduled-jobs``: every scheduled job, sorted by id (administrators)."""
        return cast("list[dict[str, Any]]", self.request("GET", "/@scheduled-jobs").data)

    def get_scheduled_job(self, id: str) -> dict[str, Any]:
        """``GET /@scheduled-jobs/{id}``."""
        return cast("dict[str, Any]", self.request("GET", _scheduled_job_path(id)).data)

    def create_scheduled_job(
        self,
        id: str,
        action: str,
        schedule: str,
        params: Mapping[str, Any] | None = None,
        *,
        title: str | None = None,
        description: str | None = None,
        timezone: str | None = None,
        enabled: bool | None = None,
    ) -> dict[str, Any]:
        """``POST /@scheduled-jobs``: a cron rule that submits ``action`` with ``params``.

        ``schedule`` is a 5-field cron expression read in ``timezone`` (``UTC`` by
        default). Returns the scheduled job, with its ``next_run``.
        """
        body = _without_none(
            id=id,
            action=action,
            schedule=schedule,
            params=dict(params) if params is not None else None,
            title=title,
            description=description,
            timezone=timezone,
            enabled=enabled,
        )
        return cast("dict[str, Any]", self.request("POST", "/@scheduled-jobs", json_body=body).data)

    def update_scheduled_job(
        self,
        id: str,
        *,
        action: str | None = None,
        schedule: str | None = None,
        params: Mapping[str, Any] | None = None,
        title: str | None = None,
        description: str | None = None,
        timezone: str | None = None,
        enabled: bool | None = None,
    ) -> dict[str, Any]:
        """``PATCH /@scheduled-jobs/{id}`` with the arguments given (``None`` leaves a
        property as it is); return the changed scheduled job.

        ``params`` replaces the old params as a whole.
        """
        body = _without_none(
            action=action,
            schedule=schedule,
            params=dict(params) if params is not None else None,
            title=title,
            description=description,
            timezone=timezone,
            enabled=enabled,
        )
        headers = {"Prefer": "return=representation"}
        response = self.request("PATCH", _scheduled_job_path(id), json_body=body, headers=headers)
        # A server that ignores Prefer answers 204; the caller still gets the result.
        return response.data if response.data is not None else self.get_scheduled_job(id)

    def delete_scheduled_job(self, id: str) -> None:
        """``DELETE /@scheduled-jobs/{id}``; the jobs it created stay."""
        self.request("DELETE", _scheduled_job_path(id))

    def scheduled_job_actions(self) -> list[dict[str, Any]]:
        """``GET /@scheduled-job-actions``: every action a scheduled job may run."""
        return cast("list[dict[str, Any]]", self.request("GET", "/@scheduled-job-actions").data)

    # --- actions and health --------------------------------------------------------------

    def job_actions(self, q: str | None = None) -> list[dict[str, Any]]:
        """``GET /@job-actions``: the actions this user may submit (``q``: whose name,
        title or description has it), following ``Link: rel="next"`` across pages."""
        response = self.request("GET", "/@job-actions", query={"q": q})
        actions = list(response.data)
        while (url := _link_next(response.headers.get("Link"))) is not None:
            response = self.request("GET", url)
            actions.extend(response.data)
        return actions

    def health(self) -> dict[str, Any]:
        """Check that the service is up, with the best check the server has.

        * ``GET /healthz/ready``: readiness, the database and the broker checked;
        * else ``GET /healthz``: liveness, the process answers;
        * else (a server without either answers ``404``) ``GET /@job-actions``: any answer
          in the API's error shape, a ``401`` included, shows that the service is up.

        Returns ``{"status": "ok", "url", "endpoint", "http_status", "authenticated",
        "elapsed_ms", "body"}``. Raises :class:`ServerUnavailable` when the server can't be
        reached or says it is not ready (``503``), with the server's message.
        """
        started = time.monotonic()
        for endpoint in ("/healthz/ready", "/healthz"):
            try:
                response = self.request("GET", endpoint, auth=False)
            except ServerUnavailable:
                raise
            except ClientError as exc:
                if exc.status != 404:
                    raise
                continue
            return self._health(endpoint, response.status, None, response.data, started)
        try:
            response = self.request("GET", "/@job-actions")
            return self._health("/@job-actions", response.status, True, None, started)
        except ServerUnavailable:
            raise
        except ClientError as exc:
            if exc.status in {401, 403} and exc.type:
                return self._health("/@job-actions", exc.status, False, None, started)
            raise

    def _health(
        self, endpoint: str, status: int, authenticated: bool | None, body: Any, started: float
    ) -> dict[str, Any]:
        return {
            "status": "ok",
            "url": self.url,
            "endpoint": endpoint,
            "http_status": status,
            "authenticated": authenticated,
            "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
            "body": body,
        }


class EventStream:
    """The events of one stream, across reconnections: iterate over it for :class:`Event`
    objects. ``close()`` (or leaving a ``with`` block) ends it early.

    ``uuid`` is the job's (``None`` for ``/@jobs/stream``), ``last_event_id`` the id to
    resume from, and ``retry`` the server's reconnection delay in milliseconds.
    """

    def __init__(
        self, client: Client, path: str | None, *, last_event_id: str | None, reconnects: int
    ) -> None:
        self.client = client
        self.path = path
        self.uuid: str | None = None
        self.reconnects = reconnects
        self._parser = SSEParser(last_event_id or "")
        self._conn: http.client.HTTPConnection | None = None
        self._raw: http.client.HTTPResponse | None = None
        self._events: Iterator[Event] | None = None

    @property
    def last_event_id(self) -> str | None:
        return self._parser.last_event_id or None

    @property
    def retry(self) -> int | None:
        return self._parser.retry

    def _connect_first(
        self, opener: Callable[[str | None], tuple[http.client.HTTPConnection, Any]]
    ) -> tuple[http.client.HTTPConnection, Any]:
        self._conn, self._raw = opener(self.last_event_id)
        self._events = self._run()
        return self._conn, self._raw

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> Event:
        if self._events is None:
            raise StopIteration
        return next(self._events)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop reading and close the connection."""
        if self._events is not None:
            self._events.close()  # type: ignore[attr-defined]
            self._events = None
        self._hang_up()

    def _hang_up(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = self._raw = None

    def _run(self) -> Iterator[Event]:
        failures = 0
        try:
            while True:
                if self._raw is None:
                    try:
                        self._conn, self._raw = self.client._open_stream(
                            "GET", self.path or "", last_event_id=self.last_event_id
                        )
                    except ServerUnavailable as exc:
                        failures += 1
                        if failures > self.reconnects:
                            raise
                        time.sleep(self._delay(failures, exc.retry_after))
                        continue
                raw = self._raw
                self._parser.reset()
                received = False
                reconnect_after: float | None = None
                try:
                    while reconnect_after is None:
                        chunk = raw.read1(65536)
                        if not chunk:
                            break  # the server ended the response without a close event
                        received = True
                        for event in self._parser.feed(chunk):
                            yield event
                            if event.event == "close":
                                # The server ends the response after it: stop reading.
                                reconnect_after = self._after_close(event)
                                break
                except CONNECTION_ERRORS:
                    pass  # dropped or silent for longer than the timeout: resume below
                self._hang_up()
                if reconnect_after is not None and reconnect_after < 0:
                    return
                failures = 0 if received else failures + 1
                if failures > self.reconnects:
                    raise ServerUnavailable(
                        f"the event stream of {self.client.url} keeps closing",
                        url=self.client.url + (self.path or ""),
                    )
                time.sleep(
                    reconnect_after if reconnect_after is not None else self._delay(failures)
                )
        finally:
            self._hang_up()

    def _after_close(self, event: Event) -> float:
        """Seconds to wait before reconnecting after a ``close`` event; -1: the end."""
        try:
            info = event.json
        except ValueError:
            info = {}
        if not isinstance(info, dict) or not info.get("reconnect"):
            return -1.0
        # A stream that reached its lifetime is meant to be resumed at once; a server that
        # shuts down needs the reconnection delay it asked for to come back.
        return 0.0 if info.get("reason") == "lifetime" else self._delay(0)

    def _delay(self, failures: int, retry_after: float | None = None) -> float:
        """The server's ``retry:`` (or the client's backoff), doubled for each failure in
        a row, at most 30 seconds; a ``Retry-After`` wins."""
        if retry_after is not None:
            return retry_after
        base = self._parser.retry / 1000 if self._parser.retry is not None else self.client.backoff
        return min(base * 2.0 ** max(failures - 1, 0), 30.0)


def _error(
    status: int,
    reason: str,
    headers: http.client.HTTPMessage,
    data: Any,
    method: str,
    url: str,
) -> ClientError:
    cls = ServerUnavailable if status in UNAVAILABLE_STATUSES else ClientError
    retry_after = None
    with contextlib.suppress(ValueError):
        retry_after = float(headers.get("Retry-After") or "")
    return cls(
        error_message(status, reason, data),
        status=status,
        body=data,
        method=method,
        url=url,
        retry_after=retry_after,
    )


def _scheduled_job_path(id: str) -> str:
    if not id or "/" in id:
        raise ValueError(f"not a scheduled job id: {id!r}")
    return f"/@scheduled-jobs/{quote(id, safe='')}"


def _without_none(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def _job_path(uuid: str, action: str | None = None) -> str:
    if not uuid or "/" in uuid:
        raise ValueError(f"not a job id: {uuid!r}")
    path = f"/@jobs/{quote(uuid, safe='')}"
    return f"{path}/{action}" if action else path


def _complete_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """An item of :meth:`Client.complete_jobs` as the API takes it: the lease's id where
    the claim's whole ``lease`` was given."""
    out = dict(item)
    lease = out.get("lease")
    if isinstance(lease, Mapping):
        out["lease"] = lease.get("id")
    return out


def _decode(content: bytes, content_type: str) -> Any:
    if not content:
        return None
    if "json" in content_type:
        try:
            return json.loads(content)
        except ValueError:
            pass
    return content.decode("utf-8", "replace")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    return str(exc) or type(exc).__name__
