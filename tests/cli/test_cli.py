"""The ``nick-jobs`` console script, run for real in subprocesses with temporary ini files."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.orm import Session

from nick_jobs.db import get_engine, migrations
from nick_jobs.db.after_commit import transaction
from nick_jobs.jobs import lifecycle
from nick_jobs.jobs.actions import ActionRegistry
from nick_jobs.settings import ENVIRONMENT_OVERRIDES, parse
from nick_jobs.users.accounts import add_user, authenticate, list_users
from nick_jobs.worker.queue import JobQueue
from nick_jobs.worker.runner import JobRunner
from tests import processes
from tests.conftest import (
    PG_ADMIN_URL,
    PG_TEST_DB,
    REDIS_URL,
    ROOT,
    base_settings,
    need,
    stop_process,
    write_ini,
)

SCRIPT = Path(sys.executable).with_name("nick-jobs")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "nick_jobs.cli"]
WORKER_GRACE_S = 5.0
STRONG_SECRET = "s" * 48


def clean_env(**overrides: str) -> dict[str, str]:
    """The test's environment without the deployment overrides, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT_OVERRIDES}
    # The test actions (nick_jobs.includes) must import in the subprocess too.
    env["PYTHONPATH"] = str(ROOT)
    env.update(overrides)
    return env


def nick_jobs(*args: Any, stdin: str | None = None, env: dict[str, str] | None = None):
    return processes.run(
        [*COMMAND, *map(str, args)],
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        env=clean_env() if env is None else env,
        cwd=ROOT,
        timeout=60,
    )


def assert_clean_error(proc: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Traceback" not in proc.stdout
    assert proc.stderr.startswith("nick-jobs: "), proc.stderr
    for word in words:
        assert word in proc.stderr


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def sqlite_settings(path: Path, **overrides: str) -> dict[str, str]:
    return base_settings(
        **{"sqlalchemy.url": f"sqlite:///{path}", "nick_jobs.broker_url": "stub://", **overrides}
    )


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "jobs.sqlite"


@pytest.fixture
def engine(db_path):
    engine = get_engine(f"sqlite:///{db_path}")
    migrations.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def ini(tmp_path, db_path, engine) -> Path:
    """An ini on a migrated SQLite file."""
    return write_ini(tmp_path / "test.ini", sqlite_settings(db_path))


def seed_users(engine: sa.Engine, *logins: str, **roles: list[str]) -> None:
    """Add users in-process (cheaper than a subprocess) for the commands that read them."""
    with Session(engine) as session, session.begin():
        for login in logins:
            add_user(session, login, f"{login}-pw", roles=roles.get(login, []))


def logins(engine: sa.Engine) -> list[str]:
    with Session(engine) as session:
        return [user.login for user in list_users(session)]


def head_revision(engine: sa.Engine) -> str:
    return ScriptDirectory.from_config(migrations.alembic_config(engine)).get_current_head()


def make_job(engine: sa.Engine, **params: Any) -> str:
    with transaction(engine) as conn:
        job = lifecycle.create(
            conn,
            action="dummy",
            params={"action": "dummy", **params},
            actor="admin",
            title="Dummy job",
            description="",
        )
    return job["uuid"]


def status_of(engine: sa.Engine, uuid: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(lifecycle.jobs.c.status).where(lifecycle.jobs.c.uuid == uuid)
        ).scalar_one_or_none()


# --- migrate ----------------------------------------------------------------------------


@pytest.fixture
def fresh_pg_url(pg_url):
    """An empty PostgreSQL database of its own (the session's test database is migrated)."""
    name = f"{PG_TEST_DB}_cli_{secrets.token_hex(3)}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    yield pg_url.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_migrate_creates_the_schema(request, tmp_path, database):
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'new.sqlite'}"
    else:
        url = request.getfixturevalue("fresh_pg_url")
    settings = base_settings(**{"sqlalchemy.url": url, "nick_jobs.broker_url": "stub://"})
    ini = write_ini(tmp_path / "migrate.ini", settings)
    engine = get_engine(url)
    try:
        assert "alembic_version" not in sa.inspect(engine).get_table_names()
        proc = nick_jobs("migrate", ini)
        assert proc.returncode == 0, proc.stderr
        head = head_revision(engine)
        assert proc.stdout.strip() == f"database at revision {head}"
        with engine.connect() as conn:
            versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars()
            assert list(versions) == [head]
        tables = set(sa.inspect(engine).get_table_names())
        assert {"jobs", "job_history", "users", "revoked_tokens", "alembic_version"} <= tables
        if database == "postgresql":
            # Running it again (every deployment does) is a no-op.
            again = nick_jobs("migrate", ini)
            assert again.returncode == 0, again.stderr
            assert again.stdout.strip() == f"database at revision {head}"
    finally:
        engine.dispose()


# --- users ------------------------------------------------------------------------------


def test_users_add_with_password_option(ini, engine):
    proc = nick_jobs(
        *("users", "add", ini, "carol", "--password", "carol-pw", "--fullname", "Carol C"),
        *("--role", "Administrator", "--role", "Editor"),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "added carol"
    with Session(engine) as session:
        user = authenticate(session, "carol", "carol-pw")
        assert user is not None
        assert user.fullname == "Carol C"
        assert user.roles == ["Administrator", "Editor"]
        assert authenticate(session, "carol", "wrong") is None


def test_users_add_reads_the_password_from_stdin(ini, engine):
    proc = nick_jobs("users", "add", ini, "dave", stdin="  spaced pass phrase  \n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "added dave"
    assert "spaced" not in proc.stdout + proc.stderr
    with Session(engine) as session:
        # The line ending is dropped, nothing else.
        assert authenticate(session, "dave", "  spaced pass phrase  ") is not None
        assert authenticate(session, "dave", "spaced pass phrase") is None


def test_users_add_refuses_an_empty_password_from_stdin(ini, engine):
    proc = nick_jobs("users", "add", ini, "erin", stdin="\n")
    assert_clean_error(proc, 1, "password can't be empty")
    assert logins(engine) == []


def test_users_add_refuses_the_login_of_declared_schedules(ini, engine):
    # Their jobs belong to "system": a user of that login would see them as theirs.
    proc = nick_jobs("users", "add", ini, "system", "--password", "pw")
    assert_clean_error(proc, 1, "'system' is reserved")
    assert logins(engine) == []


def test_users_add_twice_is_an_error_and_keeps_the_first(ini, engine):
    seed_users(engine, "carol")
    proc = nick_jobs("users", "add", ini, "carol", "--password", "second")
    assert_clean_error(proc, 1, "'carol' already exists")
    assert proc.stdout == ""
    with Session(engine) as session:
        assert authenticate(session, "carol", "carol-pw") is not None
        assert authenticate(session, "carol", "second") is None


def test_users_list_prints_login_fullname_and_roles(ini, engine):
    seed_users(engine, "zoe", "adam", adam=["Editor", "Reviewer"], zoe=["Administrator"])
    with Session(engine) as session, session.begin():
        add_user(session, "bea", "pw", fullname="Bea B")
    proc = nick_jobs("users", "list", ini)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "adam\tadam\tEditor,Reviewer",
        "bea\tBea B\t",
        "zoe\tzoe\tAdministrator",
    ]


def test_users_remove(ini, engine):
    seed_users(engine, "carol", "dave")
    proc = nick_jobs("users", "remove", ini, "carol")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "removed carol"
    assert logins(engine) == ["dave"]


def test_users_remove_an_unknown_user_is_an_error(ini, engine):
    seed_users(engine, "dave")
    proc = nick_jobs("users", "remove", ini, "nobody")
    assert_clean_error(proc, 1, "no user 'nobody'")
    assert proc.stdout == ""
    assert logins(engine) == ["dave"]


def test_a_missing_config_file_is_a_clean_error(tmp_path):
    proc = nick_jobs("users", "list", tmp_path / "absent.ini")
    assert_clean_error(proc, 1, "no such config file", "absent.ini")


# --- configuration refused --------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "secret"),
    [
        (["migrate"], None),
        (["users", "list"], "changeme"),
        (["users", "add"], "secret"),
        (["worker"], "too-short-for-production"),
    ],
)
def test_production_refuses_a_weak_or_missing_secret(tmp_path, db_path, command, secret):
    settings = sqlite_settings(
        db_path,
        **{"nick_jobs.environment": "production", "nick_jobs.broker_url": REDIS_URL},
    )
    if secret is None:
        del settings["nick_jobs.jwt_secret"]
    else:
        settings["nick_jobs.jwt_secret"] = secret
    ini = write_ini(tmp_path / "production.ini", settings)
    extra = ["someone", "--password", "pw"] if command == ["users", "add"] else []
    proc = nick_jobs(*command, ini, *extra)
    assert_clean_error(proc, 2, "refusing to start", "NICK_JOBS_JWT_SECRET", "32 characters")
    assert not db_path.exists()


@pytest.mark.parametrize("mode", [[], ["-p", "1", "--no-supervise"]])
def test_worker_refuses_the_embedded_broker(ini, engine, mode):
    waiting = make_job(engine)
    proc = nick_jobs("worker", ini, *mode)
    assert_clean_error(proc, 2, "stub://", "redis://")
    assert proc.stderr.count("embedded broker") == 1
    # It refused before building the app: no embedded worker ran the waiting job.
    assert status_of(engine, waiting) == "created"


def test_worker_refuses_several_processes_and_says_how_to_run_them(ini, engine):
    waiting = make_job(engine)
    proc = nick_jobs("worker", ini, "--processes", "4")
    assert_clean_error(proc, 2, "runs one worker process", "nick-jobs-worker@{1..4}", "replicas")
    assert status_of(engine, waiting) == "created"


def test_worker_help_documents_one_process_and_its_stop(tmp_path):
    proc = nick_jobs("worker", "--help")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    for words in (
        "--threads",
        "--metrics-port",
        "nick_jobs.worker_grace",
        "handed back",
        "a second SIGTERM",
        "sweeper",
        "nick-jobs-worker@.service",
    ):
        assert words in text
    # What the supervisor took is gone from the help (refused or ignored if given).
    assert "--processes" not in text
    assert "--no-supervise" not in text


def test_worker_metrics_port_needs_the_metrics_turned_on(tmp_path, db_path, engine):
    settings = sqlite_settings(db_path, **{"nick_jobs.broker_url": REDIS_URL})
    ini = write_ini(tmp_path / "worker.ini", settings)
    proc = nick_jobs("worker", ini, "--metrics-port", "9101")
    assert_clean_error(proc, 2, "nick_jobs.worker_metrics_port")


# --- environment overrides --------------------------------------------------------------


def test_database_url_from_the_environment_wins(tmp_path):
    ini_db, env_db = tmp_path / "from-ini.sqlite", tmp_path / "from-env.sqlite"
    ini = write_ini(tmp_path / "env.ini", sqlite_settings(ini_db))
    env = clean_env(NICK_JOBS_DATABASE_URL=f"sqlite:///{env_db}")

    migrated = nick_jobs("migrate", ini, env=env)
    assert migrated.returncode == 0, migrated.stderr
    added = nick_jobs("users", "add", ini, "carol", "--password", "pw", env=env)
    assert added.returncode == 0, added.stderr
    assert not ini_db.exists()
    engine = get_engine(f"sqlite:///{env_db}")
    try:
        assert logins(engine) == ["carol"]
    finally:
        engine.dispose()


def test_jwt_secret_from_the_environment_satisfies_production(tmp_path, engine, db_path):
    settings = sqlite_settings(db_path, **{"nick_jobs.environment": "production"})
    settings["nick_jobs.jwt_secret"] = ""
    ini = write_ini(tmp_path / "production.ini", settings)
    proc = nick_jobs("users", "list", ini, env=clean_env(NICK_JOBS_JWT_SECRET=STRONG_SECRET))
    assert (proc.returncode, proc.stderr) == (0, "")


def test_broker_url_from_the_environment_wins(tmp_path, engine, db_path):
    settings = sqlite_settings(db_path, **{"nick_jobs.broker_url": REDIS_URL})
    ini = write_ini(tmp_path / "redis.ini", settings)
    proc = nick_jobs("worker", ini, env=clean_env(NICK_JOBS_BROKER_URL="stub://"))
    assert_clean_error(proc, 2, "embedded broker (stub://)")


# --- real workers on PostgreSQL and Redis -----------------------------------------------


def children_of(pid: int) -> set[int]:
    """Live (not zombie) processes whose parent is ``pid``, from /proc."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError):
            text = stat.read_text()
            state, ppid = text[text.rindex(")") + 2 :].split()[:2]
            if int(ppid) == pid and state != "Z":
                found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def redis_deployment(pg_url, tmp_path):
    """Settings for PostgreSQL + Redis on a queue of their own, and a way to submit jobs."""
    need("Redis", "127.0.0.1", 6379)
    tag = secrets.token_hex(4)
    settings = base_settings(
        **{
            "sqlalchemy.url": pg_url,
            "nick_jobs.broker_url": REDIS_URL,
            "nick_jobs.broker_namespace": f"nick-jobs-cli-{tag}",
            "nick_jobs.queue": f"nick_jobs_cli_{tag}",
            "nick_jobs.worker_grace": str(WORKER_GRACE_S),
        }
    )
    engine = get_engine(pg_url)
    actions = ActionRegistry()
    queue = JobQueue(parse(settings), actions, JobRunner(engine, actions))

    def submit(**params: Any) -> str:
        uuid = make_job(engine, **params)
        queue.send(uuid, "dummy")
        return uuid

    deployment = {"settings": settings, "engine": engine, "submit": submit, "tmp": tmp_path}
    yield deployment
    queue.broker.close()
    engine.dispose()
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"nick-jobs-cli-{tag}*"):
        client.delete(key)
    client.close()


@contextlib.contextmanager
def run_worker(
    ini: Path, *args: str, env: dict[str, str] | None = None, log_name: str = "worker.log"
):
    """``nick-jobs worker ini *args``, its output in ``log_name`` next to the ini: yields
    the process and a set of pids the test saw, killed at the end if still alive."""
    log = (ini.parent / log_name).open("w")
    proc = subprocess.Popen(
        [*COMMAND, "worker", str(ini), *args],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=clean_env() if env is None else env,
        cwd=ROOT,
    )
    seen: set[int] = set()
    try:
        yield proc, seen
    finally:
        seen |= children_of(proc.pid)
        stop_process(proc)
        for pid in seen:  # only ever processes this test started
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        log.close()


def wait_completed(engine: sa.Engine, uuids: list[str], timeout: float = 20) -> None:
    def done() -> bool:
        return all(status_of(engine, uuid) == "completed" for uuid in uuids)

    wait_until(done, timeout, f"jobs {uuids} to complete")


def test_a_job_created_while_no_worker_runs_completes_once_one_starts(redis_deployment):
    engine, submit = redis_deployment["engine"], redis_deployment["submit"]
    settings = dict(redis_deployment["settings"])
    # One ini for every host: the database and broker come from the environment.
    env = clean_env(
        NICK_JOBS_DATABASE_URL=settings.pop("sqlalchemy.url"),
        NICK_JOBS_BROKER_URL=settings.pop("nick_jobs.broker_url"),
    )
    settings.update(
        {"sqlalchemy.url": "sqlite:////nonexistent/jobs.sqlite", "nick_jobs.broker_url": "stub://"}
    )
    ini = write_ini(redis_deployment["tmp"] / "worker.ini", settings)
    waiting = [submit(), submit(result={"n": 1})]
    assert [status_of(engine, uuid) for uuid in waiting] == ["created", "created"]

    with run_worker(ini, "-t", "2", env=env) as (proc, _seen):
        wait_completed(engine, waiting)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=WORKER_GRACE_S) == 0
    with engine.connect() as conn:
        result = conn.execute(
            sa.select(lifecycle.jobs.c.result).where(lifecycle.jobs.c.uuid == waiting[1])
        ).scalar_one()
    assert result == {"n": 1}
