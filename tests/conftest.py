"""Fixtures: one API suite, three backends.

* ``sqlite``: the embedded default, SQLite WAL file and Dramatiq worker threads in-process.
* ``postgres-redis`` and ``postgres-rabbitmq``: PostgreSQL, a real broker and a real
  ``nick-jobs worker`` process started from an ini file, exactly as in production.

When PostgreSQL, Redis or RabbitMQ is not reachable the cases that need it skip with the
reason; with ``NICK_JOBS_REQUIRE_SERVICES=1`` (set by ``.ci/run``) they fail instead.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import webtest

from nick_jobs import main
from nick_jobs.db import get_engine, migrations
from nick_jobs.users import tokens
from nick_jobs.users.passwords import hash_password
from nick_jobs.web.claim_bell import REGISTRY_KEY as CLAIM_BELL
from tests.netutil import free_port, wait_listening

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_SERVICES = os.environ.get("NICK_JOBS_REQUIRE_SERVICES") == "1"
PG_HOST = os.environ.get("NICK_JOBS_TEST_PG_HOST", "127.0.0.1")
PG_ADMIN_URL = f"postgresql+psycopg://postgres@{PG_HOST}:5432/postgres"
# One database per test session, so parallel runs (several checkouts, CI) never collide.
PG_TEST_DB = f"nick_jobs_test_{os.getpid()}"
REDIS_URL = os.environ.get("NICK_JOBS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
RABBITMQ_URL = os.environ.get(
    "NICK_JOBS_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"
)
JWT_SECRET = "test-secret-" + "x" * 40

PASSWORDS = {"admin": "admin-password", "alice": "alice-password", "bob": "bob-password"}
ROLES = {"admin": ["Administrator"], "alice": [], "bob": []}


def reachable(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def need(service: str, host: str, port: int) -> None:
    if reachable(host, port):
        return
    message = f"{service} is not reachable on {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (NICK_JOBS_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@dataclass
class Backend:
    name: str
    settings: dict[str, str]
    engine: sa.Engine
    worker: subprocess.Popen | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def real_worker(self) -> bool:
        return self.worker is not None


def base_settings(**overrides: str) -> dict[str, str]:
    settings = {
        "nick_jobs.environment": "testing",
        "nick_jobs.jwt_secret": JWT_SECRET,
        "nick_jobs.auto_migrate": "false",
        "nick_jobs.bootstrap_admin": "false",
        "nick_jobs.login_rate_limit": "1000",
        "nick_jobs.worker_timeout_ms": "50",
        "nick_jobs.includes": "tests.actions_for_tests",
        "nick_jobs.embedded_worker_threads": "2",
        # Streams send a comment every second when idle, so a test's read never waits long.
        "nick_jobs.stream_keepalive": "1",
        # The test process's signals are pytest's own (tests/ops/test_shutdown.py turns it on).
        "nick_jobs.graceful_shutdown": "false",
    }
    settings.update(overrides)
    return settings


def api_only_settings(database_url: str, **overrides: str) -> dict[str, str]:
    """An API process's settings on ``database_url`` that runs no job itself: the stub
    broker, no embedded worker, no test actions."""
    return base_settings(
        **{
            "sqlalchemy.url": database_url,
            "nick_jobs.broker_url": "stub://",
            "nick_jobs.embedded_worker_threads": "0",
            "nick_jobs.includes": "",
            **overrides,
        }
    )


def write_ini(path: Path, settings: dict[str, str]) -> Path:
    lines = ["[app:main]", "use = egg:nick-jobs"]
    lines += [f"{k} = {v.replace('%', '%%')}" for k, v in settings.items()]
    lines += ["", "[loggers]", "keys = root", "", "[handlers]", "keys = console", ""]
    lines += ["[formatters]", "keys = generic", "", "[logger_root]", "level = WARN"]
    lines += ["handlers = console", "", "[handler_console]", "class = StreamHandler"]
    lines += ["args = (sys.stderr,)", "formatter = generic", "", "[formatter_generic]"]
    # fileConfig reads the format raw: no %-doubling here, unlike the app settings above.
    lines += ["format = %(asctime)s %(levelname)s [%(name)s] %(message)s", ""]
    path.write_text("\n".join(lines))
    return path


def start_worker(ini: Path, threads: int = 4) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nick_jobs.cli.admin",
            "worker",
            str(ini),
            "-t",
            str(threads),
        ],
        cwd=ROOT,
        env=env,
    )


@contextlib.contextmanager
def pserve(settings: dict[str, str], directory: Path, threads: int = 4) -> Iterator[int]:
    """A ``pserve`` process serving ``settings`` with waitress on a free port, its ini and
    log in ``directory``; yields the port, and stops the process at the end."""
    directory.mkdir(exist_ok=True)
    ini = write_ini(directory / "server.ini", settings)
    port = free_port()
    with ini.open("a") as f:
        f.write(f"\n[server:main]\nuse = egg:waitress#main\nlisten = 127.0.0.1:{port}\n")
        f.write(f"threads = {threads}\n")
    log = directory / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "pserve"), str(ini)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    try:
        wait_listening(port, proc, log, "pserve")
        yield port
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen, timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def pg_url() -> str:
    need("PostgreSQL", PG_HOST, 5432)
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {PG_TEST_DB} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {PG_TEST_DB}"))
    admin.dispose()
    url = f"postgresql+psycopg://postgres@{PG_HOST}:5432/{PG_TEST_DB}"
    engine = get_engine(url)
    migrations.upgrade(engine)
    engine.dispose()
    yield url
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {PG_TEST_DB} WITH (FORCE)"))
    admin.dispose()


def _purge_rabbitmq(queue: str) -> None:
    import pika

    with contextlib.suppress(Exception):
        connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
        channel = connection.channel()
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            channel.queue_delete(name)
        connection.close()


@pytest.fixture(scope="session", params=["sqlite", "postgres-redis", "postgres-rabbitmq"])
def backend(request, tmp_path_factory):
    name = request.param
    tag = secrets.token_hex(4)
    if name == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "jobs.sqlite"
        settings = base_settings(
            **{"sqlalchemy.url": f"sqlite:///{path}", "nick_jobs.broker_url": "stub://"}
        )
        engine = get_engine(settings["sqlalchemy.url"])
        migrations.upgrade(engine)
        yield Backend(name, settings, engine)
        engine.dispose()
        return
    url = request.getfixturevalue("pg_url")
    if name == "postgres-redis":
        need("Redis", "127.0.0.1", 6379)
        broker_url = REDIS_URL
    else:
        need("RabbitMQ", "127.0.0.1", 5672)
        broker_url = RABBITMQ_URL
    settings = base_settings(
        **{
            "sqlalchemy.url": url,
            "nick_jobs.broker_url": broker_url,
            "nick_jobs.broker_namespace": f"nick-jobs-test-{tag}",
            "nick_jobs.queue": f"nick_jobs_test_{tag}",
        }
    )
    ini = write_ini(tmp_path_factory.mktemp("ini") / f"{name}.ini", settings)
    engine = get_engine(url)
    worker = start_worker(ini)
    backend = Backend(name, settings, engine, worker, {"ini": ini})
    yield backend
    stop_process(backend.worker)
    engine.dispose()
    if name == "postgres-rabbitmq":
        _purge_rabbitmq(settings["nick_jobs.queue"])


_HASHES: dict[str, str] = {}


def next_url(res) -> str | None:
    """The path of a WebTest response's ``Link: <…>; rel="next"``, or None without one."""
    link = res.headers.get("Link")
    if link is None:
        return None
    assert link.endswith('>; rel="next"')
    return link[1 : link.index(">")].replace("http://localhost:8080", "")


def attempt_of(uuid: str, attempt: int = 1, action: str = "dummy", actor: str = "admin"):
    """An attempt of job ``uuid`` as a worker holds it, to finish with ``lifecycle.complete``,
    ``fail`` or ``stopped`` where the test did not start it itself (or started it long
    ago); ``action`` and ``actor`` only name it in the state-change line."""
    from nick_jobs.db.meta import utcnow
    from nick_jobs.jobs.lifecycle import StartedJob

    return StartedJob(uuid, action, {}, actor, attempt, utcnow())


def reset_database(engine: sa.Engine) -> None:
    """Empty every table and add the test users (admin, alice, bob)."""
    if not _HASHES:
        _HASHES.update({login: hash_password(pw) for login, pw in PASSWORDS.items()})
    from nick_jobs.db.meta import utcnow

    with engine.begin() as conn:
        tables = ("scheduled_firings", "scheduled_jobs", "job_logs", "job_history", "jobs")
        tables += ("remote_actions", "remote_action_versions")
        for table in (*tables, "service_tokens", "revoked_tokens", "users"):
            conn.execute(sa.text(f"DELETE FROM {table}"))  # noqa: S608 - fixed table names
        conn.execute(
            sa.text(
                "INSERT INTO users (login, fullname, password_hash, roles, created) "
                "VALUES (:login, :fullname, :hash, :roles, :created)"
            ).bindparams(sa.bindparam("roles", type_=sa.JSON())),
            [
                {
                    "login": login,
                    "fullname": login.title(),
                    "hash": _HASHES[login],
                    "roles": ROLES[login],
                    "created": utcnow().replace(tzinfo=None),
                }
                for login in PASSWORDS
            ],
        )


class Client(webtest.TestApp):
    """WebTest with the helpers the tests share."""

    backend: Backend

    def token(self, login: str = "admin") -> str:
        return tokens.issue(self.app.registry["nick_jobs.settings"], login, login.title())

    def auth(self, login: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(login)}"}

    def submit(self, params: dict[str, Any], login: str = "admin", **body: Any) -> dict:
        return self.post_json(
            "/@jobs", {"params": params, **body}, headers=self.auth(login), status=201
        ).json

    def wait_for(
        self, uuid: str, statuses: set[str] | str, timeout: float = 20.0, login: str = "admin"
    ) -> dict:
        """Poll the job until its status is one of ``statuses``; fail at the deadline."""
        wanted = {statuses} if isinstance(statuses, str) else statuses
        deadline = time.monotonic() + timeout
        job = None
        while time.monotonic() < deadline:
            job = self.get(f"/@jobs/{uuid}", headers=self.auth(login)).json
            if job["status"] in wanted:
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {uuid} did not reach {wanted} in {timeout}s: {job}")


@pytest.fixture
def make_app(backend):
    """Build an app on the current backend; ``make_app(**settings_overrides)``."""
    apps = []

    def factory(**overrides: str) -> Client:
        settings = {**backend.settings, **overrides}
        wsgi = main({}, **settings)
        apps.append(wsgi)
        client = Client(wsgi, extra_environ={"HTTP_HOST": "localhost:8080"})
        client.backend = backend
        return client

    yield factory
    for wsgi in apps:
        wsgi.registry[CLAIM_BELL].close()
        wsgi.registry["nick_jobs.queue"].stop_embedded_worker()
        wsgi.registry["nick_jobs.engine"].dispose()
        wsgi.registry["nick_jobs.read_engine"].dispose()


@pytest.fixture
def app(backend, make_app) -> Client:
    reset_database(backend.engine)
    return make_app()


@pytest.fixture
def unconsumed_queue(backend) -> Iterator[str]:
    """A queue name of this test's own, which no worker consumes: the messages sent to
    it stay there, and on RabbitMQ (where queues outlive the run) it is deleted after."""
    queue = f"nobody_consumes_{secrets.token_hex(4)}"
    yield queue
    if backend.name == "postgres-rabbitmq":
        _purge_rabbitmq(queue)


@pytest.fixture
def app_without_worker(backend, make_app) -> Client:
    """An app whose jobs nobody runs: they stay ``created`` until a test says otherwise."""
    reset_database(backend.engine)
    if not backend.real_worker:
        yield make_app(**{"nick_jobs.embedded_worker_threads": "0"})
        return
    queue = f"nobody_consumes_{secrets.token_hex(4)}"
    yield make_app(**{"nick_jobs.queue": queue})
    if backend.name == "postgres-rabbitmq":
        _purge_rabbitmq(queue)
