"""A Python client for the nick-jobs HTTP API, using only the standard library.

>>> from nick_jobs.client import Client
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

The streaming endpoints (``/@jobs/{uuid}/stream``, ``/log``) and ``stop``, ``resume`` and
``restart`` are not part of this client yet: they get methods next to the job methods
below once the service has them. :meth:`Client.request` is the seam they build on.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

__all__ = [
    "DEFAULT_URL",
    "JOB_STATUSES",
    "Client",
    "ClientError",
    "Page",
    "Response",
    "ServerUnavailable",
]

DEFAULT_URL = "http://localhost:8080"
JOB_STATUSES = ("created", "running", "completed", "failed", "aborted", "stopped")
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
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body
        self.method = method
        self.url = url

    @property
    def error(self) -> dict[str, Any]:
        """The ``error`` object of the body, or ``{}``."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"]
        return {}

    @property
    def type(self) -> str | None:
        return self.error.get("type")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status!r})"


class ServerUnavailable(ClientError):
    """The server could not be reached, or answered 502, 503 or 504."""


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


def _fields_summary(fields: Any, prefix: str = "") -> list[str]:
    """Flatten ``{"params": {"steps": ["Must be ..."]}}`` into ``["params.steps: Must be ..."]``."""
    if isinstance(fields, dict):
        out: list[str] = []
        for key, value in fields.items():
            out += _fields_summary(value, f"{prefix}.{key}" if prefix else str(key))
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
        message += " (" + "; ".join(_fields_summary(error["fields"])) + ")"
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

    def _connection(self) -> http.client.HTTPConnection:
        if self._scheme == "https":
            return http.client.HTTPSConnection(
                self._host,
                self._port,
                timeout=self.timeout,
                context=self.ssl_context or ssl.create_default_context(),
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

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
    ) -> Response:
        """Send one request and return the decoded :class:`Response`; raise on a non-2xx.

        ``idempotent`` defaults to ``True`` for GET and HEAD: only idempotent requests are
        repeated after a connection error.
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
            conn = self._connection()
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
            cls = ServerUnavailable if status in UNAVAILABLE_STATUSES else ClientError
            raise cls(
                error_message(status, reason, data),
                status=status,
                body=data,
                method=method,
                url=url,
            )
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
    ) -> Page:
        """One page of ``GET /@jobs``; pass a page's ``next_url`` as ``url`` for the next."""
        if url is not None:
            response = self.request("GET", url)
        else:
            query = {"status": status, "action": action, "actor": actor, "q": q}
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
    ) -> Iterator[dict[str, Any]]:
        """The jobs, newest first, following ``Link: rel="next"`` across pages.

        Stops after ``limit`` jobs when given. ``page_size`` is the server's ``b_size``;
        by default it is ``limit`` (up to the server's maximum) or the server's default.
        """
        if limit is not None and limit <= 0:
            return
        if page_size is None and limit is not None:
            page_size = min(limit, 1000)
        page = self.list_page(status=status, action=action, actor=actor, q=q, page_size=page_size)
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

    def get_job(self, uuid: str) -> dict[str, Any]:
        """``GET /@jobs/{uuid}``."""
        return self.request("GET", _job_path(uuid)).data

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
        return self.request(
            "POST", "/@jobs", json_body=body, headers=headers, idempotent=bool(idempotency_key)
        ).data

    def abort_job(self, uuid: str) -> None:
        """``POST /@jobs/{uuid}/abort``: stop a ``created`` or ``running`` job."""
        self.request("POST", _job_path(uuid, "abort"))

    def retry_job(self, uuid: str) -> None:
        """``POST /@jobs/{uuid}/retry``: run a ``failed`` or ``aborted`` job again."""
        self.request("POST", _job_path(uuid, "retry"))

    def delete_job(self, uuid: str) -> None:
        """``DELETE /@jobs/{uuid}``: remove a job that is not running."""
        self.request("DELETE", _job_path(uuid))

    # Later, with the live-jobs endpoints: stream_job (SSE with Last-Event-ID resume),
    # job_log, stop_job, resume_job and restart_job belong here.

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

    # --- actions and health --------------------------------------------------------------

    def job_actions(self) -> list[dict[str, Any]]:
        """``GET /@job-actions``: the actions this user may submit."""
        return self.request("GET", "/@job-actions").data

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


def _job_path(uuid: str, action: str | None = None) -> str:
    if not uuid or "/" in uuid:
        raise ValueError(f"not a job id: {uuid!r}")
    path = f"/@jobs/{quote(uuid, safe='')}"
    return f"{path}/{action}" if action else path


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
