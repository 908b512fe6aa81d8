"""``nick-jobs worker`` is one worker process, for a process manager to run and restart.

Real processes on PostgreSQL and Redis, with the production default
``nick_jobs.graceful_shutdown = true``: building the app must not take the worker's
signals over with the API's drain. SIGTERM finishes or hands back the running jobs, a
second SIGTERM hands them back at once, and the jobs of a worker killed with ``kill -9``
are rescued by the sweeper of another instance or of the same one restarted (what
``Restart=on-failure`` of deploy/systemd/nick-jobs-worker@.service does).
"""

from __future__ import annotations

import configparser
import contextlib
import secrets
import shlex
import signal
import time
from pathlib import Path

import pytest

from nick_jobs.cli.admin import build_parser
from nick_jobs.settings import parse
from tests.cli.test_cli import alive, children_of, run_worker, wait_until
from tests.conftest import REDIS_URL, ROOT, base_settings, need, reset_database, write_ini
from tests.worker.test_recovery import api, events, row, status_is, submit

# Real worker processes killed and rescued within deadlines: run alone (make test runs the
# exclusive tests after the others), not beside other tests' servers on the same cores.
pytestmark = pytest.mark.exclusive

GRACE_S = 3.0
# After the grace: what a worker process takes to hand back its jobs and exit.
HAND_BACK_S = 5.0
INCLUDES = "tests.actions_for_tests tests.recovery_actions"
TEMPLATE_UNIT = ROOT / "deploy" / "systemd" / "nick-jobs-worker@.service"


@pytest.fixture
def deployment(pg_url, tmp_path):
    need("Redis", "127.0.0.1", 6379)
    from nick_jobs.db import get_engine

    tag = secrets.token_hex(4)
    settings = base_settings(
        **{
            "sqlalchemy.url": pg_url,
            "nick_jobs.broker_url": REDIS_URL,
            "nick_jobs.broker_namespace": f"nick-jobs-worker-process-{tag}",
            "nick_jobs.queue": f"nick_jobs_supervisor_{tag}",
            "nick_jobs.includes": INCLUDES,
            "nick_jobs.heartbeat_interval": "0.25",
            "nick_jobs.lease": "1.5",
            "nick_jobs.sweep_interval": "0.25",
            "nick_jobs.resend_grace": "1",
            "nick_jobs.worker_grace": str(GRACE_S),
            # As in production: the worker builds the app with the API's drain on.
            "nick_jobs.graceful_shutdown": "true",
        }
    )
    engine = get_engine(pg_url)
    reset_database(engine)
    ini = write_ini(tmp_path / f"worker-{tag}.ini", settings)
    # INFO: the tests wait for the process to say it consumes, and that it is stopping.
    ini.write_text(ini.read_text().replace("level = WARN", "level = INFO"))
    # The in-process API leaves pytest's signals alone.
    app = api(settings, **{"nick_jobs.graceful_shutdown": "false"})
    yield {"engine": engine, "ini": ini, "app": app}
    app.app.registry["nick_jobs.queue"].broker.close()
    app.app.registry["nick_jobs.engine"].dispose()
    engine.dispose()
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"nick-jobs-worker-process-{tag}*"):
        client.delete(key)
    client.close()


def log_of(ini: Path, name: str = "worker.log") -> str:
    return (ini.parent / name).read_text()


def consuming(proc, ini: Path, name: str = "worker.log") -> bool:
    """The command is itself the worker process: it consumes, and has no child."""
    return f"worker process {proc.pid} consuming" in log_of(ini, name)


def test_sigterm_finishes_running_jobs_within_the_grace_and_hands_back_the_rest(deployment):
    engine, ini, app = deployment["engine"], deployment["ini"], deployment["app"]
    with run_worker(ini, "-t", "2") as (proc, _seen):
        wait_until(lambda: consuming(proc, ini), 30, "the worker process to consume")
        # One process: no child to be left behind when it dies.
        assert children_of(proc.pid) == set()
        quick = submit(app, "dummy", sleep=1.5)
        slow = submit(app, "dummy", sleep=60, steps=60)
        wait_until(
            lambda: all(status_is(engine, u, "running") for u in (quick, slow)),
            15,
            "both jobs to run",
        )
        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=GRACE_S + HAND_BACK_S + 5) == 0
        took = time.monotonic() - stopped_at
    # The quick job finished within the grace; the slow one was handed back at its end.
    assert status_is(engine, quick, "completed", 1)
    assert status_is(engine, slow, "created", 2)
    assert [e[0] for e in events(engine, slow)] == ["created", "handed back"]
    assert GRACE_S <= took < GRACE_S + HAND_BACK_S
    print(f"SIGTERM: worker process gone after {took:.2f} s")
    assert "drained, stopping the server" not in log_of(ini)


def test_a_second_sigterm_hands_the_jobs_back_at_once(deployment):
    engine, ini, app = deployment["engine"], deployment["ini"], deployment["app"]
    # A grace the test would notice waiting for.
    ini.write_text(ini.read_text().replace(f"worker_grace = {GRACE_S}", "worker_grace = 60"))
    with run_worker(ini, "-t", "2") as (proc, _seen):
        wait_until(lambda: consuming(proc, ini), 30, "the worker process to consume")
        slow = [submit(app, "dummy", sleep=60, steps=60) for _ in range(2)]
        wait_until(
            lambda: all(status_is(engine, u, "running") for u in slow), 15, "the jobs to run"
        )
        proc.send_signal(signal.SIGTERM)
        wait_until(
            lambda: f"worker process {proc.pid} stopping" in log_of(ini),
            10,
            "the worker process to begin its grace",
        )
        assert proc.poll() is None  # still within the 60 s grace
        hurried_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        took = time.monotonic() - hurried_at
    for uuid in slow:
        assert status_is(engine, uuid, "created", 2)
        assert [e[0] for e in events(engine, uuid)] == ["created", "handed back"]
    assert took < HAND_BACK_S
    print(f"second SIGTERM: stopped after {took:.2f} s")


@pytest.mark.parametrize("rescuer", ["another instance", "the instance restarted"])
def test_kill_9_of_a_worker_its_jobs_are_rescued_by_a_workers_sweeper(deployment, rescuer):
    """What a process manager does: the other instances go on (and their sweepers rescue
    the lost jobs), or the dead one is started again (and its sweeper does)."""
    engine, ini, app = deployment["engine"], deployment["ini"], deployment["app"]
    with contextlib.ExitStack() as stack:
        doomed_worker, _ = stack.enter_context(run_worker(ini, "-t", "2", log_name="doomed.log"))
        wait_until(lambda: consuming(doomed_worker, ini, "doomed.log"), 30, "a worker")
        doomed = submit(app, "dummy", sleep=60, steps=120)  # no retries: fails
        retried = submit(app, "patient")  # one retry: runs again and completes
        wait_until(
            lambda: all(status_is(engine, u, "running") for u in (doomed, retried)),
            15,
            "both jobs to run",
        )
        if rescuer == "another instance":
            other, _ = stack.enter_context(run_worker(ini, "-t", "2", log_name="other.log"))
            wait_until(lambda: consuming(other, ini, "other.log"), 30, "the other worker")
        doomed_worker.kill()
        doomed_worker.wait()
        killed_at = time.monotonic()
        if rescuer == "the instance restarted":
            stack.enter_context(run_worker(ini, "-t", "2", log_name="other.log"))
        wait_until(lambda: status_is(engine, doomed, "failed"), 15, "WorkerLost")
        failed_after = time.monotonic() - killed_at
        wait_until(lambda: status_is(engine, retried, "completed", 2), 15, "the retry")
        completed_after = time.monotonic() - killed_at
    print(
        f"kill -9, {rescuer}: failed after {failed_after:.2f} s, "
        f"re-run after {completed_after:.2f} s"
    )
    assert row(engine, doomed).error["type"] == "WorkerLost"
    assert row(engine, retried).result == {"attempt": 2}
    assert [e[0] for e in events(engine, retried)] == ["created", "rescued"]
    # Bounded: lease + a sweep interval + a heartbeat interval, plus a start-up.
    assert failed_after < 1.5 + 0.25 + 0.25 + 5
    assert not alive(doomed_worker.pid)


def test_the_systemd_template_runs_one_worker_process_per_instance():
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.read(TEMPLATE_UNIT)
    service = unit["Service"]
    command = shlex.split(service["ExecStart"])
    assert Path(command[0]).name == "nick-jobs"
    args = build_parser().parse_args(command[1:])
    assert args.command == "worker"
    assert args.processes is None  # one process; several are several instances
    assert service["Restart"] == "on-failure"
    # The worker's own stop, then what its hand-back takes, before systemd's SIGKILL.
    grace = parse(base_settings(**{"sqlalchemy.url": "sqlite://"})).worker_grace_s
    assert int(service["TimeoutStopSec"]) >= grace + HAND_BACK_S
    assert service.get("KillSignal", "SIGTERM") == "SIGTERM"
