"""Several API processes: gunicorn with gthread workers and deploy/gunicorn.conf.py, on
PostgreSQL and Redis. Every worker serves; SIGTERM to the master drains each worker as
``pserve`` drains (nick_jobs/ops/shutdown.py) and exits 0; a killed worker is replaced.

Which worker holds a connection is read from the operating system (psutil): the worker
whose socket has the client's port at its other end.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from nick_jobs.db import get_engine
from nick_jobs.settings import parse
from nick_jobs.users import tokens
from tests.conftest import REDIS_URL, ROOT, base_settings, need, reset_database, write_ini
from tests.netutil import free_port
from tests.streams.test_streams import EventStream

CONFIG = ROOT / "deploy" / "gunicorn.conf.py"
DEADLINE_S = 30
GRACE_S = 5
SLOW_S = 1.5
# Set in the ini: the slow view touches this file once it runs.
STARTED_SETTING = "tests.slow_started"


def includeme(config) -> None:
    """Included through ``pyramid.includes``: a request that takes a while, and says
    when it has begun."""
    from pyramid.security import NO_PERMISSION_REQUIRED

    started = Path(config.registry.settings[STARTED_SETTING])

    def slow(request):
        started.touch()
        time.sleep(SLOW_S)  # the request in flight when the stop comes
        return "done"

    config.add_route("test_slow", "/test-slow")
    config.add_view(
        slow, route_name="test_slow", renderer="string", permission=NO_PERMISSION_REQUIRED
    )


def wait_until(check: Callable[[], object], what: str, timeout: float = DEADLINE_S) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Gunicorn:
    master: subprocess.Popen
    port: int
    log: Path
    token: str
    slow_started: Path
    opened: list[EventStream] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def workers(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.master.pid).children()
        except psutil.NoSuchProcess:
            return []

    def holder(self, client: socket.socket) -> int | None:
        """The pid of the worker holding the other end of ``client``."""
        client_port = client.getsockname()[1]
        for worker in self.workers():
            with contextlib.suppress(psutil.NoSuchProcess):
                for conn in worker.net_connections(kind="tcp"):
                    if (
                        conn.laddr.port == self.port
                        and conn.raddr
                        and conn.raddr.port == client_port
                    ):
                        return worker.pid
        return None

    def stream(self) -> EventStream:
        """An all-jobs stream: a connection that stays with its worker until it ends."""
        stream = EventStream(("127.0.0.1", self.port), "/@jobs/stream", self.headers)
        self.opened.append(stream)
        assert stream.status == 200, stream.response.read()
        return stream

    def streams_on(self, pids: set[int], timeout: float = DEADLINE_S) -> dict[int, EventStream]:
        """Open streams until each worker of ``pids`` has answered one; that stream of each.

        Which worker accepts a connection is up to the workers' race for it, and a worker
        that is still loading the app takes none: the others' streams are closed again.
        """
        held: dict[int, EventStream] = {}
        deadline = time.monotonic() + timeout
        while not pids <= held.keys():
            assert time.monotonic() < deadline, f"workers {sorted(pids - held.keys())} took none"
            stream = self.stream()
            pid = wait_until(lambda s=stream: self.holder(s.conn.sock), "the stream's worker")
            if pid in pids and pid not in held:
                held[pid] = stream
            else:
                stream.close()
                self.opened.remove(stream)
        return held

    def connection_to(self, pid: int, timeout: float = DEADLINE_S) -> socket.socket:
        """A connection that worker ``pid`` has accepted."""
        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline, f"worker {pid} accepted no connection"
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            if wait_until(lambda s=sock: self.holder(s), "the connection's worker") == pid:
                return sock
            sock.close()

    def close_streams(self) -> None:
        for stream in self.opened:
            stream.close()
        self.opened.clear()


@pytest.fixture
def gunicorn(pg_url: str, tmp_path: Path) -> Iterator[Callable[..., Gunicorn]]:
    """``gunicorn(workers)``: gunicorn --paste on a free port, once every worker serves."""
    need("Redis", "127.0.0.1", 6379)
    engine = get_engine(pg_url)
    reset_database(engine)
    engine.dispose()
    started: list[Gunicorn] = []
    tag = f"{os.getpid()}_{time.monotonic_ns()}"

    def start(workers: int = 2) -> Gunicorn:
        port = free_port()
        settings = base_settings(
            **{
                "pyramid.includes": __name__,
                STARTED_SETTING: str(tmp_path / "slow-started"),
                "sqlalchemy.url": pg_url,
                "nick_jobs.broker_url": REDIS_URL,
                "nick_jobs.broker_namespace": f"nick-jobs-test-gunicorn-{tag}",
                "nick_jobs.queue": f"nick_jobs_test_gunicorn_{tag}",
                "nick_jobs.embedded_worker_threads": "0",
                "nick_jobs.graceful_shutdown": "true",
                "nick_jobs.shutdown_grace": str(GRACE_S),
                "nick_jobs.stream_max_per_user": "100",
                "nick_jobs.stream_max_per_process": "100",
            }
        )
        ini = write_ini(tmp_path / "api.ini", settings)
        log = tmp_path / "gunicorn.log"
        command = [sys.executable, "-m", "gunicorn", "--paste", str(ini), "-c", str(CONFIG)]
        command += ["-w", str(workers), "-k", "gthread", "-b", f"127.0.0.1:{port}"]
        with log.open("w") as out:
            master = subprocess.Popen(
                command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=out
            )
        token = tokens.issue(parse(settings), "admin", "Admin")
        server = Gunicorn(master, port, log, token, tmp_path / "slow-started")
        started.append(server)
        wait_until(lambda: len(server.workers()) == workers, f"{workers} workers")
        server.streams_on({w.pid for w in server.workers()})
        server.close_streams()
        return server

    yield start
    for server in started:
        server.close_streams()
        family = server.workers()
        if server.master.poll() is None:
            server.master.kill()
        for worker in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()
        server.master.wait(10)


def answer(port: int, raw: bytes, sock: socket.socket | None = None) -> tuple[int, bytes] | None:
    """Send ``raw``; the status and body of the answer, or None when the connection is
    refused, reset or closed without one."""
    try:
        sock = sock or socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(raw)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read()
    except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
        return None


def get(path: str, headers: dict[str, str] | None = None, close: bool = True) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines += ["Connection: close"] if close else []
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_every_worker_serves_requests(gunicorn) -> None:
    server = gunicorn(2)
    workers = {w.pid for w in server.workers()}
    assert len(workers) == 2
    # Streams answered by each worker, and plain requests on a connection each holds.
    assert set(server.streams_on(workers)) == workers
    for pid in workers:
        with server.connection_to(pid) as sock:
            status, body = answer(server.port, get("/@jobs", server.headers), sock)
            assert status == 200, body
            assert json.loads(body) == []  # no job yet
            assert server.holder(sock) == pid


def test_sigterm_to_the_master_drains_every_worker_and_exits_0(gunicorn) -> None:
    server = gunicorn(2)
    workers = server.workers()
    streams = list(server.streams_on({w.pid for w in workers}).values())
    # A kept-alive connection that has served a request, and one request still running.
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    assert answer(server.port, get("/healthz", close=False), idle)[0] == 200
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    slow.sendall(get("/test-slow"))
    wait_until(server.slow_started.exists, "the slow request to run")

    stopped_at = time.monotonic()
    server.master.send_signal(signal.SIGTERM)
    # Each worker's streams are told to reconnect elsewhere; their clients leave.
    for stream in streams:
        assert stream.until_close()[-1] == {
            "event": "close",
            "data": {"reason": "shutdown", "reconnect": True},
        }
    server.close_streams()
    # A request on a connection a worker still holds is turned away by the app.
    status, body = answer(server.port, get("/@jobs", server.headers), idle)
    assert status == 503
    assert json.loads(body)["error"]["type"] == "Service unavailable"
    assert answer(server.port, b"", idle) is None  # and the connection closed
    idle.close()
    # A new connection is not served: gunicorn accepts no more, and it waits unanswered
    # until the workers exit (or is refused once they have); one a worker accepted just
    # before it stopped accepting is turned away by the app's drain.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        late = pool.submit(answer, server.port, get("/@jobs", server.headers))
        # The request that was running when the stop came finishes.
        assert answer(server.port, b"", slow) == (200, b"done")
        slow.close()
        turned_away = late.result(timeout=DEADLINE_S)
        if turned_away is not None:
            status, body = turned_away
            assert status == 503
            assert json.loads(body)["error"]["message"] == "This server is shutting down."
    assert server.master.wait(DEADLINE_S) == 0
    took = time.monotonic() - stopped_at
    # Within the grace: what the drain waited for is done, the workers did not wait it out.
    assert took < GRACE_S, f"the master took {took:.1f} s, the drain's grace is {GRACE_S} s"
    print(f"SIGTERM to the master's exit: {took:.2f} s")
    wait_until(lambda: not any(w.is_running() for w in workers), "every worker to stop")
    log = server.log.read_text()
    assert "still running after" not in log, log


def test_a_killed_worker_is_replaced_and_its_successor_serves(gunicorn) -> None:
    server = gunicorn(2)
    killed, kept = server.workers()
    killed.kill()
    successor = wait_until(
        lambda: [w for w in server.workers() if w.pid not in (killed.pid, kept.pid)],
        "gunicorn to start another worker",
    )[0]
    stream = server.streams_on({successor.pid})[successor.pid]
    # The new worker runs the whole app: a stream it holds sees a job submitted elsewhere.
    submitted = answer(
        server.port,
        b"POST /@jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        + f"Authorization: Bearer {server.token}\r\nContent-Type: application/json\r\n".encode()
        + b'Content-Length: 31\r\n\r\n{"params": {"action": "dummy"}}',
    )
    assert submitted is not None
    assert submitted[0] == 201, submitted
    uuid = json.loads(submitted[1])["uuid"]
    event = stream.next()
    assert event["event"] == "status"
    assert event["data"]["uuid"] == uuid
