"""deploy/nginx.conf in front of ``pserve`` with production.ini's ``[server:main]``.

Real nginx, real ``pserve``: the example file runs as it is, with only its ports and its
log and temporary paths changed. Clients bind their side of the connection to distinct
loopback addresses (127.0.0.2, 127.0.0.3), so "one address" is one address for nginx.
"""

from __future__ import annotations

import configparser
import contextlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nick_jobs.db import get_engine, migrations
from tests.conftest import (
    REQUIRE_SERVICES,
    ROOT,
    base_settings,
    reset_database,
    stop_process,
    write_ini,
)
from tests.netutil import free_port, wait_listening

EXAMPLE = ROOT / "deploy" / "nginx.conf"
PRODUCTION_INI = ROOT / "production.ini"
# production.ini's settings, but for a few connections and streams, so that a test can
# fill them: waitress refuses connections past CONNECTION_LIMIT, nginx past PER_ADDRESS.
CONNECTION_LIMIT = 50
PER_ADDRESS = 32
ATTACKER = "127.0.0.2"
NEIGHBOUR = "127.0.0.3"
PASSWORDS = {"admin": "admin-password", "alice": "alice-password"}


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found:
        return found
    message = "nginx is not installed (Debian: apt-get install nginx-light)"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (NICK_JOBS_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def server_section(port: int) -> str:
    """production.ini's ``[server:main]``, on ``port``, with small limits."""
    parser = configparser.RawConfigParser()
    parser.read(PRODUCTION_INI)
    server = dict(parser["server:main"])
    server.update(
        listen=f"127.0.0.1:{port}",
        threads="48",
        connection_limit=str(CONNECTION_LIMIT),
    )
    return "\n[server:main]\n" + "".join(f"{k} = {v}\n" for k, v in server.items())


def nginx_config(prefix: Path, port: int, api_port: int) -> str:
    text = EXAMPLE.read_text()
    paths = "".join(
        f"    {name} {prefix / folder};\n"
        for name, folder in [
            ("access_log", "access.log"),
            ("client_body_temp_path", "client_body"),
            ("proxy_temp_path", "proxy"),
            ("fastcgi_temp_path", "fastcgi"),
            ("uwsgi_temp_path", "uwsgi"),
            ("scgi_temp_path", "scgi"),
        ]
    )
    for old, new in [
        ("listen 80;", f"listen 127.0.0.1:{port};"),
        ("server 127.0.0.1:8080;", f"server 127.0.0.1:{api_port};"),
        ("http {\n", "http {\n" + paths),
    ]:
        assert text.count(old) == 1, f"{EXAMPLE} no longer has {old!r} once"
        text = text.replace(old, new)
    return text


@dataclass
class Deployment:
    port: int  # nginx
    api_port: int  # waitress
    tokens: dict[str, str]

    def connect(
        self, source: str = "127.0.0.1", port: int | None = None, timeout: float = 10
    ) -> socket.socket:
        return socket.create_connection(
            ("127.0.0.1", port or self.port), timeout=timeout, source_address=(source, 0)
        )

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        source: str = "127.0.0.1",
        port: int | None = None,
        timeout: float = 10,
    ) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection(
            "127.0.0.1", port or self.port, timeout=timeout, source_address=(source, 0)
        )
        payload = json.dumps(body) if body is not None else None
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=payload, headers=all_headers)
        response = conn.getresponse()
        response.connection = conn  # for hang_up()
        return response

    def auth(self, login: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[login]}"}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> Iterator[Deployment]:
    nginx = nginx_binary()
    tmp = tmp_path_factory.mktemp("proxy")
    database = tmp / "jobs.sqlite"
    engine = get_engine(f"sqlite:///{database}")
    migrations.upgrade(engine)
    reset_database(engine)
    engine.dispose()
    api_port, port = free_port(), free_port()
    settings = base_settings(
        **{
            "sqlalchemy.url": f"sqlite:///{database}",
            "nick_jobs.broker_url": "stub://",
            "nick_jobs.embedded_worker_threads": "0",
            "nick_jobs.stream_max_per_user": "40",
            "nick_jobs.stream_max_per_process": "40",
        }
    )
    ini = write_ini(tmp / "api.ini", settings)
    ini.write_text(ini.read_text() + server_section(api_port))
    (tmp / "nginx.conf").write_text(nginx_config(tmp, port, api_port))
    api_log, nginx_log = tmp / "pserve.log", tmp / "error.log"
    globals_ = f"daemon off; pid {tmp / 'nginx.pid'};"
    if os.geteuid() == 0:
        # Its workers would run as nobody, who can't enter pytest's private tmp folder.
        globals_ += " user root;"
    with contextlib.ExitStack() as stack:
        with api_log.open("w") as log:
            api = subprocess.Popen(
                [sys.executable, "-m", "pyramid.scripts.pserve", str(ini)],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stderr=log,
            )
        stack.callback(stop_process, api)
        proxy = subprocess.Popen(
            [
                nginx,
                "-p",
                str(tmp),
                "-c",
                str(tmp / "nginx.conf"),
                "-e",
                str(nginx_log),
                *("-g", globals_),
            ],
            stderr=subprocess.STDOUT,
            stdout=(tmp / "nginx.out").open("w"),
        )
        stack.callback(stop_process, proxy)
        wait_listening(api_port, api, api_log, "pserve")
        wait_listening(port, proxy, nginx_log, "nginx")
        deployment = Deployment(port, api_port, {})
        for login, password in PASSWORDS.items():
            answer = deployment.request("POST", "/@login", {"login": login, "password": password})
            assert answer.status == 200, answer.read()
            deployment.tokens[login] = json.loads(answer.read())["token"]
        yield deployment


def healthz(deployment: Deployment, port: int | None = None, timeout: float = 2) -> bool:
    """Whether ``GET /healthz`` answers ``ok`` within ``timeout``."""
    try:
        answer = deployment.request("GET", "/healthz", port=port, timeout=timeout)
        return answer.status == 200 and answer.read() == b"ok"
    except OSError:
        return False


def half_sent(deployment: Deployment, port: int, count: int, body: bool = False) -> list:
    """``count`` requests from ATTACKER that stop halfway: in their headers, or in a body
    that is announced longer than what is sent."""
    sockets = []
    for n in range(count):
        sock = deployment.connect(ATTACKER, port)
        if body:
            sock.sendall(
                b"POST /@jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 1000\r\n\r\n{"params": '
            )
        else:
            sock.sendall(f"GET /healthz?n={n} HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode())
        sockets.append(sock)
    return sockets


def hang_up(response: http.client.HTTPResponse) -> None:
    """Close the connection, as a client that goes away does."""
    response.close()
    response.connection.close()


def next_event(response: http.client.HTTPResponse, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    event: dict[str, Any] = {}
    while True:
        # The API's keepalive comes every second (base_settings): each read is short.
        assert time.monotonic() < deadline, f"no event within {timeout} s"
        raw = response.readline()
        assert raw, "the stream ended"
        line = raw.decode().rstrip("\r\n")
        if not line:
            if "event" in event:
                return event
            continue
        if not line.startswith(":"):
            field, _, value = line.partition(": ")
            event[field] = json.loads(value) if field == "data" else value


def test_requests_and_a_stream_pass_through_the_proxy(deployment):
    assert healthz(deployment)
    # A forged X-Forwarded-Proto is replaced by nginx's own: URLs name the proxy as the
    # client reached it.
    stream = deployment.request("GET", "/@jobs/stream", headers=deployment.auth())
    assert stream.status == 200
    assert stream.getheader("Content-Type") == "text/event-stream; charset=utf-8"
    submitted = deployment.request(
        "POST",
        "/@jobs",
        {"params": {"action": "dummy"}},
        headers={**deployment.auth(), "X-Forwarded-Proto": "https"},
    )
    assert submitted.status == 201
    job = json.loads(submitted.read())
    assert job["@id"] == f"http://127.0.0.1:{deployment.port}/@jobs/{job['uuid']}"
    assert submitted.getheader("Location") == job["@id"]
    # The stream delivers the new job while it is open: nothing buffers it on the way.
    event = next_event(stream)
    assert event["event"] == "status"
    assert event["data"]["uuid"] == job["uuid"]
    hang_up(stream)


def test_slow_clients_are_held_and_cut_by_the_proxy_not_the_api(deployment):
    # Straight to waitress, one address with CONNECTION_LIMIT unfinished requests takes
    # every connection it allows: nobody else is answered. This is why it runs behind
    # the proxy (docs/deployment.md#behind-a-proxy).
    direct = half_sent(deployment, deployment.api_port, CONNECTION_LIMIT)
    assert not healthz(deployment, port=deployment.api_port)
    for sock in direct:
        sock.close()
    deadline = time.monotonic() + 10
    while not healthz(deployment, port=deployment.api_port):
        assert time.monotonic() < deadline, "waitress did not answer again once they left"
    # Through nginx, three times as many (headers or bodies left unfinished) from one
    # address reach no waitress connection: the proxy and waitress both still answer.
    opened = time.monotonic()
    slow = half_sent(deployment, deployment.port, 3 * CONNECTION_LIMIT - 10)
    slow += half_sent(deployment, deployment.port, 10, body=True)
    for _ in range(5):
        assert healthz(deployment)
        assert healthz(deployment, port=deployment.api_port)
    # nginx ends each of them at its client_header_timeout or client_body_timeout (10 s).
    for n, sock in enumerate(slow):
        sock.settimeout(max(opened + 20 - time.monotonic(), 0.1))
        try:
            while sock.recv(4096):
                pass  # a 408 that nginx may send before it closes
        except ConnectionResetError:
            pass
        except TimeoutError:
            pytest.fail("nginx left an unfinished request open for 20 s")
        if n == 0:
            assert time.monotonic() - opened >= 9, "cut before client_header_timeout"
        sock.close()


def test_the_proxy_caps_requests_in_progress_per_address(deployment):
    submitted = deployment.request(
        "POST",
        "/@jobs",
        {"params": {"action": "echo", "message": "hi"}},
        headers=deployment.auth("alice"),
    )
    job = json.loads(submitted.read())
    assert submitted.status == 201, job
    path = f"/@jobs/{job['uuid']}/stream"
    streams = []
    for _ in range(PER_ADDRESS):
        stream = deployment.request("GET", path, headers=deployment.auth("alice"), source=ATTACKER)
        assert stream.status == 200
        streams.append(stream)
    refused = deployment.request("GET", path, headers=deployment.auth("alice"), source=ATTACKER)
    assert refused.status == 429
    assert refused.getheader("Retry-After") == "5"
    assert refused.getheader("Content-Type") == "application/json"
    assert json.loads(refused.read())["error"]["type"] == "Too many requests"
    # Other addresses are served meanwhile.
    assert healthz(deployment)
    other = deployment.request("GET", path, headers=deployment.auth("alice"), source=NEIGHBOUR)
    assert other.status == 200
    hang_up(other)
    # A stream its client closes frees its place at the proxy and its slot at the API.
    hang_up(streams.pop())
    deadline = time.monotonic() + 5
    while True:
        again = deployment.request("GET", path, headers=deployment.auth("alice"), source=ATTACKER)
        if again.status == 200:
            streams.append(again)
            break
        again.read()
        assert time.monotonic() < deadline, "a closed stream's place was not free in 5 s"
        time.sleep(0.1)
    for stream in streams:
        hang_up(stream)


def raw_exchange(deployment: Deployment, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` straight to waitress; its answer, read until it closes."""
    with deployment.connect(port=deployment.api_port) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), headers, body


@pytest.mark.parametrize(
    ("status", "request_bytes"),
    [
        (431, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"),
        (413, b"POST /@jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 9000000\r\n\r\n"),
        (400, b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: nine\r\n\r\n"),
    ],
)
def test_errors_waitress_writes_itself_are_plain_text(deployment, status, request_bytes):
    """With production.ini's limits, as docs/api.md says: not the API's error object."""
    got, headers, body = raw_exchange(deployment, request_bytes)
    assert got == status
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["Connection"] == "close"
    assert b"(generated by waitress)" in body
