"""Real outages for the tests: PostgreSQL and RabbitMQ restarted, and always back after.

Both services are shared with the other tests on this machine: the restarts are fast
(PostgreSQL's ``-m fast`` cuts the sessions at once, about 2 s; RabbitMQ's application
restarts in about 5 s, its Erlang node staying up), and whatever happens the service is
started again before the context ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.conftest import REQUIRE_SERVICES, reachable

PG_PORT = 5432
RABBITMQ_PORT = 5672


def _need(able: bool, message: str) -> None:
    if able:
        return
    if REQUIRE_SERVICES:
        pytest.fail(message + " (NICK_JOBS_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def need_pg_ctl() -> None:
    able = os.geteuid() == 0 and os.path.isdir("/etc/postgresql")
    _need(able and bool(shutil.which("pg_ctlcluster")), "restarting PostgreSQL needs root")


def need_rabbitmqctl() -> None:
    able = os.geteuid() == 0 and bool(shutil.which("rabbitmqctl"))
    _need(able, "restarting RabbitMQ needs root and rabbitmqctl")


def wait_for_port(port: int, timeout: float = 60.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while not reachable(host, port):
        assert time.monotonic() < deadline, f"{host}:{port} did not come back in {timeout} s"
        time.sleep(0.05)


def _pg_ctl(command: str, *options: str) -> subprocess.CompletedProcess:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    return subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", command, *options],
        capture_output=True,
        text=True,
        timeout=60,
    )


@contextlib.contextmanager
def postgres_restarted() -> Iterator[None]:
    """Restart the cluster (fast mode: every session is cut); it runs again after."""
    try:
        result = _pg_ctl("restart", "-m", "fast")
        assert result.returncode == 0, result.stderr
        wait_for_port(PG_PORT)
        yield
    finally:
        if not reachable("127.0.0.1", PG_PORT):
            _pg_ctl("start")
            wait_for_port(PG_PORT)


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=120, check=False
    )


@contextlib.contextmanager
def rabbitmq_restarted() -> Iterator[None]:
    """Restart RabbitMQ's application: every connection is cut, and refused until it is
    back; durable queues and persistent messages stay. It runs again after."""
    try:
        result = _rabbitmqctl("stop_app")
        assert result.returncode == 0, result.stderr
        result = _rabbitmqctl("start_app")
        assert result.returncode == 0, result.stderr
        _rabbitmqctl("await_startup")
        wait_for_port(RABBITMQ_PORT)
        yield
    finally:
        if not reachable("127.0.0.1", RABBITMQ_PORT):
            _rabbitmqctl("start_app")
            _rabbitmqctl("await_startup")
            wait_for_port(RABBITMQ_PORT)
