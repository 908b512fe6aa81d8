"""``processes = N`` in ``[server:main]``: N ``pserve`` processes on one port, each with
its own interpreter, sharing the connections evenly, replaced when one dies, stopped
together."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from nick_jobs.server import INHERITED, _processes

from .conftest import REDIS_URL, ROOT, base_settings, need, write_ini
from .netutil import free_port

DEADLINE_S = 20


def wait_until(check: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen, int]]]:
    """``served(processes)``: ``pserve`` on a free port; (the first process, port)."""
    need("Redis", "127.0.0.1", 6379)
    started: list[subprocess.Popen] = []

    def start(
        processes: int, broker: str = REDIS_URL, includes: str = "", wait_serving: bool = True
    ) -> tuple[subprocess.Popen, int]:
        port = free_port()
        settings = base_settings(
            **{
                "pyramid.includes": includes,
                "sqlalchemy.url": f"sqlite:///{tmp_path}/jobs.sqlite",
                "nick_jobs.broker_url": broker,
                "nick_jobs.auto_migrate": "true",
                "nick_jobs.embedded_worker_threads": "0",
                "nick_jobs.graceful_shutdown": "true",
                "nick_jobs.shutdown_grace": "5",
            }
        )
        ini = write_ini(tmp_path / "server.ini", settings)
        server = "\n[server:main]\nuse = egg:nick-jobs#main\n"
        server += f"listen = 127.0.0.1:{port}\nthreads = 4\nprocesses = {processes}\n"
        ini.write_text(ini.read_text() + server)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with (tmp_path / "pserve.log").open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pyramid.scripts.pserve", str(ini)],
                cwd=ROOT,
                env=env,
                stderr=log,
            )
        started.append(proc)
        wait_until(lambda: answers(port), "the server to answer")
        expected = 1 if broker == "stub://" else processes
        wait_until(lambda: len(serving(proc)) == expected, f"{expected} processes")
        if wait_serving:  # loading the app comes first
            wait_until(lambda: shared_evenly(serving(proc), port), f"{expected} processes to serve")
        return proc, port

    yield start
    for proc in started:
        family = serving(proc)
        for each in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                each.kill()
        proc.wait(10)


def serving(proc: subprocess.Popen) -> list[psutil.Process]:
    try:
        first = psutil.Process(proc.pid)
        return [first, *first.children()]
    except psutil.NoSuchProcess:
        return []


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return sock.recv(100).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def shared_evenly(family: list[psutil.Process], port: int, each: int = 2) -> bool:
    """Open ``each`` connections per process at once: did each process get ``each``?"""
    opened = [
        socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(each * len(family))
    ]
    try:
        for sock in opened:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        for sock in opened:
            assert sock.recv(100).startswith(b"HTTP/1.1 200")
        counts = connections_by_process(family, port)
        return sorted(counts.values()) == [each] * len(family)
    finally:
        for sock in opened:
            sock.close()
        wait_until(lambda: not connections_by_process(family, port), "the connections to close")


def stopped(process: psutil.Process) -> bool:
    # An orphan that exited stays a zombie until whoever adopted it reaps it.
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def connections_by_process(family: list[psutil.Process], port: int) -> dict[int, int]:
    counts: dict[int, int] = collections.Counter()
    for each in family:
        for conn in each.net_connections():
            if conn.status == psutil.CONN_ESTABLISHED and conn.laddr.port == port:
                counts[each.pid] += 1
    return counts


def test_connections_are_shared_evenly_between_the_processes(served) -> None:
    proc, port = served(2)
    family = serving(proc)
    for _ in range(3):
        # Left to the kernel, 8 connections opened at once often landed 6 and 2.
        assert shared_evenly(family, port, 4)


def test_a_process_that_dies_is_replaced(served) -> None:
    proc, port = served(3)
    _first, *others = serving(proc)
    others[0].kill()
    wait_until(
        lambda: (
            {p.pid for p in serving(proc)[1:]} - {p.pid for p in others} and len(serving(proc)) == 3
        ),
        "a new process",
    )
    assert answers(port)


def test_sigterm_drains_and_stops_every_process(served) -> None:
    proc, port = served(2)
    family = serving(proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(DEADLINE_S) == 0
    wait_until(lambda: all(stopped(p) for p in family), "every process to stop")
    assert not answers(port)


SLOW_S = 1.5


def _slow(request):
    time.sleep(SLOW_S)  # a request still running when the stop comes
    return "done"


# A file: a process started by the first one loads the app only once it exists.
HOLD = "NICK_JOBS_TEST_HOLD_UNTIL"


def includeme(config) -> None:
    """Included through ``pyramid.includes``: a request that takes a while, and with
    ``HOLD`` set, the other processes held while they load the app."""
    from pyramid.security import NO_PERMISSION_REQUIRED

    hold = os.environ.get(HOLD)
    if hold and INHERITED in os.environ:
        wait_until(lambda: os.path.exists(hold), "the test to let this process load", 60)

    config.add_route("test_slow", "/test-slow")
    config.add_view(
        _slow, route_name="test_slow", renderer="string", permission=NO_PERMISSION_REQUIRED
    )


def test_sigterm_to_every_process_at_once_still_drains_each_once(served, tmp_path) -> None:
    # As killall does: each process gets one, and the first passes its own on as well,
    # a moment later. Taken for a second SIGTERM, it would stop a draining process at
    # once and drop the requests it still runs.
    proc, port = served(2, includes=__name__)
    family = serving(proc)
    clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in family]
    wait_until(lambda: sorted(connections_by_process(family, port).values()) == [1, 1], "1 each")
    for sock in clients:
        sock.sendall(b"GET /test-slow HTTP/1.1\r\nHost: x\r\n\r\n")
    first, other = family
    time.sleep(0.2)  # both requests are running
    other.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # the first process's own SIGTERM comes later: the case under test
    first.send_signal(signal.SIGTERM)
    for sock in clients:
        assert sock.recv(1000).startswith(b"HTTP/1.1 200"), "a running request was dropped"
    assert proc.wait(DEADLINE_S) == 0
    wait_until(lambda: all(stopped(p) for p in family), "every process to stop")
    assert "second SIGTERM, stopping now" not in (tmp_path / "pserve.log").read_text()


def test_connections_opened_while_another_process_loads_are_served_at_once(
    served, tmp_path, monkeypatch
) -> None:
    # Loading the app takes seconds. Counted as serving nothing meanwhile, the process
    # that loads looked like the least busy one, and the first accepted no second
    # connection until it was up: submits at startup (or after a restart) took seconds.
    release = tmp_path / "release"
    monkeypatch.setenv(HOLD, str(release))
    proc, port = served(2, includes=__name__, wait_serving=False)
    family = serving(proc)
    clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(4)]
    for sock in clients:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    for sock in clients:
        assert sock.recv(100).startswith(b"HTTP/1.1 200")
    assert connections_by_process(family, port) == {family[0].pid: 4}
    for sock in clients:
        sock.close()
    release.touch()
    # Once it has loaded, the other process takes its share.
    wait_until(lambda: shared_evenly(family, port, 4), "the other process to serve")


def test_the_others_stop_when_the_first_is_killed(served) -> None:
    proc, _port = served(2)
    first, other = serving(proc)
    first.kill()
    proc.wait(DEADLINE_S)
    wait_until(lambda: stopped(other), "the orphaned process to stop")


def test_an_embedded_queue_is_served_by_one_process(served, tmp_path) -> None:
    # Jobs queued in one process's memory would never reach another's worker threads.
    proc, port = served(2, broker="stub://")
    log = tmp_path / "pserve.log"
    wait_until(lambda: "one process serves" in log.read_text(), "the warning")
    assert len(serving(proc)) == 1
    assert answers(port)


@pytest.mark.parametrize("value", ["0", "-1", "two", ""])
def test_processes_takes_a_whole_number_from_one(value: str) -> None:
    with pytest.raises(ValueError, match="processes takes a whole number"):
        _processes(value)
    assert _processes("1") == 1
    assert _processes(3) == 3
