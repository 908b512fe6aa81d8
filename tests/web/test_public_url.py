"""The URLs nick-jobs writes (``@id``, ``Location``, ``Link``, a ticket's ``url``): made of
``nick_jobs.public_url`` when it is set, whatever the request says; otherwise of the
request's ``Host``, which must be a valid ``host[:port]`` (else ``400``).

Requests go through the real waitress server (it reads ``Host`` and the proxy headers
itself), on every backend: on PostgreSQL the database writes a job's JSON, ``@id``
included.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pyramid.config import Configurator
from waitress import create_server
from webtest import TestApp

from nick_jobs import includeme
from nick_jobs.settings import ConfigurationError, apply_environment, parse
from nick_jobs.web.resources import JobContainer, Root
from nick_jobs.web.urls import valid_host
from tests.conftest import Client, base_settings, reset_database

HOSTILE = 'evil.example/x"><script>'
PUBLIC = "https://public.example/base"


# --- the grammar ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:8080",
        "jobs.example.org",
        "jobs.example.org.",
        "JOBS.Example.org:443",
        "xn--80ak6aa92e.com",
        "a-b.c-d.e",
        "1password.com",
        "127.0.0.1",
        "127.0.0.1:1",
        "[::1]",
        "[::1]:65535",
        "[2001:db8::42]:8443",
        "a" * 63 + ".example",
        "my_api:8080",
        "api_1.jobs_net",
    ],
)
def test_a_valid_host(host: str) -> None:
    assert valid_host(host)


@pytest.mark.parametrize(
    "host",
    [
        "",
        HOSTILE,
        "evil.example/x",
        "evil example",
        "evil.example\t",
        "-evil.example",
        "evil-.example",
        "evil..example",
        ".example",
        "user@evil.example",
        "evil.example:",
        "evil.example:0",
        "evil.example:65536",
        "evil.example:123456",
        "evil.example:80:80",
        "evil.example:8o",
        "evil.example:+80",
        "a" * 64 + ".example",
        ("a" * 60 + ".") * 5 + "com",
        "256.1.1.1",
        "1.2.3",
        "01.2.3.4",
        "::1",
        "[::1",
        "[::1]x",
        "[::1]:",
        "[::1]:99999",
        "[fe80::1%eth0]",
        "[evil.example]",
    ],
)
def test_an_invalid_host(host: str) -> None:
    assert not valid_host(host)


# --- the setting ------------------------------------------------------------------------


def settings_with(public_url: str) -> dict[str, str]:
    return {**base_settings(), "sqlalchemy.url": "sqlite://", "nick_jobs.public_url": public_url}


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("", ""),
        ("  ", ""),
        ("https://jobs.example.org", "https://jobs.example.org"),
        ("https://jobs.example.org/", "https://jobs.example.org"),
        ("HTTP://jobs.example.org:8080/api/v1/", "http://jobs.example.org:8080/api/v1"),
        ("https://[2001:db8::1]:8443/jobs", "https://[2001:db8::1]:8443/jobs"),
        ("https://jobs.example.org/a%20b/~c", "https://jobs.example.org/a%20b/~c"),
    ],
)
def test_the_public_url_setting(given: str, kept: str) -> None:
    assert parse(settings_with(given)).public_url == kept


@pytest.mark.parametrize(
    "given",
    [
        "jobs.example.org",
        "/api",
        "ftp://jobs.example.org",
        "https://",
        "https:///api",
        "https://jobs.example.org/?a=1",
        "https://jobs.example.org/?",
        "https://jobs.example.org/#top",
        "https://user:pw@jobs.example.org",
        f"https://{HOSTILE}",
        'https://jobs.example.org/x"><script>',
        "https://jobs.example.org/a b",
        "https://jobs.example.org:99999",
        "https://[::1",
    ],
)
def test_a_public_url_that_is_refused_at_start_up(given: str) -> None:
    with pytest.raises(ConfigurationError, match=r"nick_jobs\.public_url"):
        parse(settings_with(given))


def test_the_environment_sets_the_public_url() -> None:
    merged = apply_environment(
        settings_with("https://ini.example"), {"NICK_JOBS_PUBLIC_URL": "https://env.example/"}
    )
    assert parse(merged).public_url == "https://env.example"


# --- over HTTP --------------------------------------------------------------------------


@contextlib.contextmanager
def serving(client: Client, **adjustments: Any) -> Iterator[int]:
    """The client's app on waitress, as ``pserve`` runs it, with waitress ``adjustments``."""
    server = create_server(
        client.app,
        host="127.0.0.1",
        port=0,
        threads=8,
        channel_request_lookahead=1,
        **adjustments,
    )
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            server.asyncore.loop(timeout=0.05, map=server._map, count=1)
        server.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield server.effective_port
    finally:
        client.app.registry["nick_jobs.stream_hub"].shutdown()
        server.task_dispatcher.shutdown(timeout=10)
        stop.set()
        thread.join(timeout=10)


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Http:
    """Requests written byte for byte, so the ``Host`` is exactly what a test says."""

    def __init__(self, port: int, client: Client, host: str | None = "localhost:8080") -> None:
        self.port = port
        self.client = client
        self.host = host

    def send(
        self,
        method: str,
        path: str,
        body: Any = None,
        login: str | None = "admin",
        headers: dict[str, str] | None = None,
        version: str = "HTTP/1.1",
    ) -> tuple[socket.socket, http.client.HTTPResponse]:
        lines = [f"{method} {path} {version}"]
        if self.host is not None:
            lines.append(f"Host: {self.host}")
        if login:
            lines.append(f"Authorization: Bearer {self.client.token(login)}")
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        payload = b"" if body is None else json.dumps(body).encode()
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        lines.append("Connection: close")
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=20)
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        return sock, response

    def __call__(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Answer:
        sock, response = self.send(method, path, body, **kwargs)
        with sock:
            return Answer(response.status, response.headers, response.read())


def events(body: bytes) -> list[dict[str, Any]]:
    found = []
    for block in body.decode().split("\n\n"):
        event = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in event:
            found.append({"event": event["event"], "data": json.loads(event["data"])})
    return found


def finished_job_with_log_lines(app: Client, tmp_path: Path) -> dict[str, Any]:
    """A completed job with three log lines (its gate is open from the start)."""
    gate = tmp_path / "gate"
    gate.touch()
    job = app.submit({"action": "gated", "gate": str(gate), "before": 3, "after": 0})
    return app.wait_for(job["uuid"], "completed")


def urls_written(http: Http, job: dict[str, Any]) -> list[str]:
    """Every URL the API writes, asked for with ``http``'s Host (after at least two
    jobs exist, so the list has a next page; ``job`` is finished and has log lines)."""
    uuid = job["uuid"]
    written: list[str] = []
    submitted = http("POST", "/@jobs", {"params": {"action": "echo", "message": "hi"}})
    assert submitted.status == 201, submitted.body
    written += [submitted.headers["Location"], submitted.json()["@id"]]
    listed = http("GET", "/@jobs?b_size=1")
    assert listed.status == 200, listed.body
    written += [item["@id"] for item in listed.json()]
    written.append(listed.headers["Link"].removeprefix("<").removesuffix('>; rel="next"'))
    got = http("GET", f"/@jobs/{uuid}")  # the fast path's answer
    assert got.status == 200, got.body
    written.append(got.json()["@id"])
    log = http("GET", f"/@jobs/{uuid}/log?b_size=1")
    assert log.status == 200, log.body
    written.append(log.headers["Link"].removeprefix("<").removesuffix('>; rel="next"'))
    restarted = http("POST", f"/@jobs/{uuid}/restart", {})
    assert restarted.status == 201, restarted.body
    written += [restarted.headers["Location"], restarted.json()["@id"]]
    stream = http("GET", f"/@jobs/{uuid}/stream")
    assert stream.status == 200, stream.body
    written += [e["data"]["@id"] for e in events(stream.body) if e["event"] != "close"]
    for path in (f"/@jobs/{uuid}/stream", "/@jobs/stream"):
        ticket = http("POST", "/@stream-tickets", {"stream": path})
        assert ticket.status == 201, ticket.body
        written.append(ticket.json()["url"])
    scheduled = {"id": "nightly", "action": "echo", "schedule": "0 0 * * *"}
    added = http("POST", "/@scheduled-jobs", {**scheduled, "params": {"message": "hi"}})
    assert added.status == 201, added.body
    written += [added.headers["Location"], added.json()["@id"]]
    written += [item["@id"] for item in http("GET", "/@scheduled-jobs").json()]
    return written


def test_a_valid_host_is_what_the_urls_are_made_of(app: Client, tmp_path: Path) -> None:
    job = finished_job_with_log_lines(app, tmp_path)
    with serving(app) as port:
        written = urls_written(Http(port, app, host="jobs.example:8443"), job)
    assert len(written) == 15
    assert all(url.startswith("http://jobs.example:8443/@") for url in written), written


def test_a_public_url_is_what_every_url_starts_with_whatever_the_host(
    make_app, backend, tmp_path: Path
) -> None:
    reset_database(backend.engine)
    app = make_app(**{"nick_jobs.public_url": PUBLIC + "/"})
    job = finished_job_with_log_lines(app, tmp_path)
    with serving(app) as port:
        for host in (HOSTILE, "jobs.example:8443", None):
            written = urls_written(Http(port, app, host=host), job)
            assert len(written) == 15
            assert all(url.startswith(PUBLIC + "/@") for url in written), (host, written)
            with backend.engine.begin() as conn:
                conn.execute(sa.text("DELETE FROM scheduled_jobs"))


def first_data(http: Http, path: str, then=None, login: str | None = None) -> dict[str, Any]:
    """The data of the first event of the stream at ``path`` (after calling ``then``)."""
    sock, response = http.send("GET", path, login=login)
    with sock:
        assert response.status == 200
        if then is not None:
            then()
        deadline = time.monotonic() + 20
        while True:
            # Keepalive comments (every second in the tests) bound each read.
            assert time.monotonic() < deadline, "no event in 20 s"
            line = response.readline().decode()
            assert line, "the stream ended"
            if line.startswith("data: "):
                return json.loads(line[6:])


def test_the_all_jobs_stream_writes_the_public_url(make_app, backend) -> None:
    reset_database(backend.engine)
    app = make_app(**{"nick_jobs.public_url": PUBLIC})
    submitted: list[dict[str, Any]] = []
    with serving(app) as port:
        http = Http(port, app, host=HOSTILE)

        def submit() -> None:
            submitted.append(app.submit({"action": "echo", "message": "hi"}))

        data = first_data(http, "/@jobs/stream", then=submit, login="admin")
    assert data["@id"] == f"{PUBLIC}/@jobs/{submitted[0]['uuid']}"


def jobs_in_database(backend) -> int:
    with backend.engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar()


@pytest.mark.parametrize(
    "host", [HOSTILE, "", "evil example", "evil.example:99999", "[::1", "evil.example:"]
)
def test_an_invalid_host_is_refused_before_anything_is_done(app_without_worker, host) -> None:
    app = app_without_worker
    before = jobs_in_database(app.backend)
    with serving(app) as port:
        answer = Http(port, app, host=host)(
            "POST", "/@jobs", {"params": {"action": "echo", "message": "hi"}}
        )
    assert answer.status == 400
    assert answer.json()["error"]["type"] == "Bad request"
    assert "Host" in answer.json()["error"]["message"]
    assert "Location" not in answer.headers
    assert jobs_in_database(app.backend) == before


def test_an_invalid_host_is_refused_by_every_view_that_writes_urls(
    app: Client, tmp_path: Path
) -> None:
    job = finished_job_with_log_lines(app, tmp_path)
    uuid = job["uuid"]
    app.submit({"action": "echo", "message": "hi"})  # the list has a next page
    app.post_json(
        "/@scheduled-jobs",
        {"id": "nightly", "action": "echo", "schedule": "0 0 * * *", "params": {"message": "x"}},
        headers=app.auth(),
    )
    requests = [
        ("POST", "/@jobs", {"params": {"action": "echo", "message": "hi"}}),
        ("POST", "/@jobs?follow=true", {"params": {"action": "echo", "message": "hi"}}),
        ("GET", "/@jobs?b_size=1", None),
        ("GET", f"/@jobs/{uuid}", None),
        ("HEAD", f"/@jobs/{uuid}", None),
        ("GET", f"/@jobs/{uuid}/log?b_size=1", None),
        ("POST", f"/@jobs/{uuid}/restart", {}),
        ("GET", f"/@jobs/{uuid}/stream", None),
        ("GET", "/@jobs/stream", None),
        ("POST", "/@stream-tickets", {"stream": "/@jobs/stream"}),
        ("GET", "/@scheduled-jobs", None),
        ("GET", "/@scheduled-jobs/nightly", None),
        ("GET", "/@job-actions", None),
    ]
    before = jobs_in_database(app.backend)
    with serving(app) as port:
        http = Http(port, app, host=HOSTILE)
        for method, path, body in requests:
            answer = http(method, path, body)
            assert answer.status == 400, (method, path, answer.body)
            for name, value in answer.headers.items():
                assert "evil" not in value, (method, path, name, value)
            if method != "HEAD":
                assert answer.json()["error"]["type"] == "Bad request", (method, path)
    assert jobs_in_database(app.backend) == before


def test_without_a_host_http_1_0_uses_the_servers_name(app: Client) -> None:
    job = app.submit({"action": "echo", "message": "hi"})
    with serving(app) as port:
        answer = Http(port, app, host=None)("GET", f"/@jobs/{job['uuid']}", version="HTTP/1.0")
    assert answer.status == 200, answer.body
    assert answer.json()["@id"].startswith("http://")
    assert answer.json()["@id"].endswith(f":{port}/@jobs/{job['uuid']}")


def test_a_trusted_proxys_forwarded_host_is_checked_and_used(app: Client) -> None:
    proxy = {
        "trusted_proxy": "127.0.0.1",
        "trusted_proxy_count": 1,
        "trusted_proxy_headers": "x-forwarded-host x-forwarded-proto",
        "clear_untrusted_proxy_headers": True,
    }
    submit = ("POST", "/@jobs", {"params": {"action": "echo", "message": "hi"}})
    with serving(app, **proxy) as port:
        http = Http(port, app, host="backend:8080")
        forwarded = {"X-Forwarded-Host": "jobs.example", "X-Forwarded-Proto": "https"}
        answer = http(*submit, headers=forwarded)
        assert answer.status == 201, answer.body
        assert answer.headers["Location"].startswith("https://jobs.example/@jobs/")
        answer = http(*submit, headers={"X-Forwarded-Host": "evil.example/x><script>"})
        assert answer.status == 400, answer.body
        assert "evil" not in answer.headers.get("Location", "")


@pytest.mark.parametrize(
    ("public_url", "base"),
    [("", "http://jobs.example/api"), (PUBLIC, PUBLIC)],
)
def test_a_path_prefix(make_app, backend, public_url: str, base: str) -> None:
    """Under waitress's ``url_prefix`` (SCRIPT_NAME) the URLs carry the prefix; a public
    URL replaces scheme, host and prefix together."""
    reset_database(backend.engine)
    app = make_app(**{"nick_jobs.public_url": public_url})
    with serving(app, url_prefix="/api") as port:
        http = Http(port, app, host="jobs.example")
        answer = http("POST", "/api/@jobs", {"params": {"action": "echo", "message": "hi"}})
        assert answer.status == 201, answer.body
        uuid = answer.json()["uuid"]
        assert answer.headers["Location"] == f"{base}/@jobs/{uuid}"
        assert http("GET", f"/api/@jobs/{uuid}").json()["@id"] == f"{base}/@jobs/{uuid}"
        path = f"/api/@jobs/{uuid}/stream"
        ticket = http("POST", "/api/@stream-tickets", {"stream": path}).json()
        assert ticket["url"] == f"{base}/@jobs/{uuid}/stream?ticket={ticket['ticket']}"
        # The URL the ticket came with opens the stream (through the prefix it names).
        opened = first_data(http, f"/api/@jobs/{uuid}/stream?ticket={ticket['ticket']}")
        assert opened["@id"] == f"{base}/@jobs/{uuid}"


# --- in a host application --------------------------------------------------------------


class HostRoot:
    __name__ = ""
    __parent__ = None

    def __init__(self, request) -> None:
        self.request = request

    def __getitem__(self, key: str):
        if key == "@jobs":
            return JobContainer(self.request, parent=self)
        raise KeyError(key)


@contextlib.contextmanager
def host_app(app: Client, root_factory: Any = HostRoot, **settings: str) -> Iterator[TestApp]:
    with Configurator(settings={**app.app.registry.settings, **settings}) as config:
        config.include(includeme)
        config.set_root_factory(root_factory)
        config.add_view(
            lambda context, request: {"host": "own"}, context=HostRoot, name="own", renderer="json"
        )
        wsgi = config.make_wsgi_app()
    try:
        yield TestApp(wsgi)
    finally:
        wsgi.registry["nick_jobs.queue"].stop_embedded_worker()
        wsgi.registry["nick_jobs.engine"].dispose()
        wsgi.registry["nick_jobs.read_engine"].dispose()


def test_in_a_host_application_only_nick_jobs_requests_are_checked(
    app_without_worker: Client,
) -> None:
    app = app_without_worker
    auth = app.auth()
    with host_app(app) as host:
        hostile = {"HTTP_HOST": HOSTILE}
        assert host.get("/own", extra_environ=hostile).json == {"host": "own"}
        answer = host.get("/@jobs", headers=auth, extra_environ=hostile, status=400)
        assert answer.json["error"]["type"] == "Bad request"
        job = host.post_json(
            "/@jobs",
            {"params": {"action": "echo", "message": "hi"}},
            headers=auth,
            extra_environ={"HTTP_HOST": "site.example"},
            status=201,
        ).json
        assert job["@id"] == f"http://site.example/@jobs/{job['uuid']}"
    with host_app(app, **{"nick_jobs.public_url": PUBLIC}) as host:
        listed = host.get("/@jobs", headers=auth, extra_environ={"HTTP_HOST": HOSTILE}).json
        assert [item["@id"] for item in listed] == [f"{PUBLIC}/@jobs/{job['uuid']}"]


@pytest.mark.parametrize("public_url", ["", PUBLIC])
def test_a_jobs_url_is_the_same_under_either_root(
    app_without_worker: Client, public_url: str
) -> None:
    app = app_without_worker
    job = app.submit({"action": "echo", "message": "hi"})
    path, environ = f"/@jobs/{job['uuid']}", {"HTTP_HOST": "jobs.example:8443"}
    answers = []
    # nick-jobs' own root, and the same root from a host's function.
    for root_factory in (Root, lambda request: Root(request)):
        with host_app(app, root_factory, **{"nick_jobs.public_url": public_url}) as host:
            answers.append(host.get(path, headers=app.auth(), extra_environ=environ).json)
    assert answers[0] == answers[1]
    assert answers[0]["@id"] == f"{public_url or 'http://jobs.example:8443'}{path}"
