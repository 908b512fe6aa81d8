"""``nick-jobs worker`` on SIGTERM: its worker processes stop with it, nothing is orphaned.

Real processes on PostgreSQL and Redis, with the production default
``nick_jobs.graceful_shutdown = true``: building the app (for the supervisor's sweeper)
must not take the supervisor's signals over with the API's drain.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import time
from pathlib import Path

import pytest

from tests.cli.test_cli import alive, children_of, supervisor, wait_until
from tests.conftest import REDIS_URL, base_settings, need, reset_database, write_ini
from tests.worker.test_recovery import api, events, status_is, submit

GRACE_S = 3.0
# After the grace: each process hands back what still runs and exits; the supervisor
# kills a process still there 5 s after the grace.
HAND_BACK_S = 5.0
INCLUDES = "tests.actions_for_tests tests.recovery_actions"


@pytest.fixture
def deployment(pg_url, tmp_path):
    need("Redis", "127.0.0.1", 6379)
    from nick_jobs.db import get_engine

    tag = secrets.token_hex(4)
    settings = base_settings(
        **{
            "sqlalchemy.url": pg_url,
            "nick_jobs.broker_url": REDIS_URL,
            "nick_jobs.broker_namespace": f"nick-jobs-supervisor-{tag}",
            "nick_jobs.queue": f"nick_jobs_supervisor_{tag}",
            "nick_jobs.includes": INCLUDES,
            "nick_jobs.heartbeat_interval": "0.25",
            "nick_jobs.lease": "30",
            "nick_jobs.sweep_interval": "0.25",
            "nick_jobs.worker_grace": str(GRACE_S),
            # As in production: the supervisor builds the app with the API's drain on.
            "nick_jobs.graceful_shutdown": "true",
        }
    )
    engine = get_engine(pg_url)
    reset_database(engine)
    ini = write_ini(tmp_path / f"worker-{tag}.ini", settings)
    # INFO: the tests wait for the processes to say they are stopping.
    ini.write_text(ini.read_text().replace("level = WARN", "level = INFO"))
    # The in-process API leaves pytest's signals alone.
    app = api(settings, **{"nick_jobs.graceful_shutdown": "false"})
    yield {"engine": engine, "ini": ini, "app": app}
    app.app.registry["nick_jobs.queue"].broker.close()
    app.app.registry["nick_jobs.engine"].dispose()
    engine.dispose()
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"nick-jobs-supervisor-{tag}*"):
        client.delete(key)
    client.close()


def processes_of(ini: Path) -> set[int]:
    """Live processes started with this ini file on their command line, wherever their
    parent is now (an orphan is reparented to init or a subreaper)."""
    found = set()
    needle = str(ini).encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(cmdline.parent.name)
            if needle in cmdline.read_bytes() and alive(pid):
                found.add(pid)
    return found


def orphans_of(ini: Path) -> set[int]:
    """Processes of this ini file whose parent is init."""
    found = set()
    for pid in processes_of(ini):
        with contextlib.suppress(OSError, ValueError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == 1:
                found.add(pid)
    return found


def two_workers(proc, ini: Path) -> set[int]:
    """The supervisor's two worker processes, once both consume."""
    kids = children_of(proc.pid)
    log = log_of(ini)
    consuming = all(f"worker process {pid} consuming" in log for pid in kids)
    return kids if len(kids) == 2 and consuming else set()


def log_of(ini: Path) -> str:
    return (ini.parent / "worker.log").read_text()


def assert_all_gone(ini: Path, workers: set[int]) -> None:
    # The supervisor has exited: its worker processes must already be gone, not
    # finishing their jobs on their own.
    assert not [pid for pid in workers if alive(pid)], "a worker process outlived its supervisor"
    assert not orphans_of(ini), "a worker process was left to init"
    assert not processes_of(ini), "a process of this worker is still running"


def test_sigterm_stops_the_worker_processes_finishing_or_handing_back_their_jobs(deployment):
    engine, ini, app = deployment["engine"], deployment["ini"], deployment["app"]
    with supervisor(ini, "-p", "2", "-t", "2") as (proc, seen):
        workers = wait_until(lambda: two_workers(proc, ini), 30, "two worker processes consuming")
        seen |= workers
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
        assert_all_gone(ini, workers)
    # The quick job finished within the grace; the slow one was handed back at its end.
    assert status_is(engine, quick, "completed", 1)
    assert status_is(engine, slow, "created", 2)
    assert [e[0] for e in events(engine, slow)] == ["created", "handed back"]
    assert GRACE_S <= took < GRACE_S + HAND_BACK_S
    print(f"SIGTERM: supervisor and worker processes gone after {took:.2f} s")
    assert "drained, stopping the server" not in log_of(ini)


def test_a_second_sigterm_hands_the_jobs_back_at_once(deployment):
    engine, ini, app = deployment["engine"], deployment["ini"], deployment["app"]
    # A grace the test would notice waiting for.
    ini.write_text(ini.read_text().replace(f"worker_grace = {GRACE_S}", "worker_grace = 60"))
    with supervisor(ini, "-p", "2", "-t", "2") as (proc, seen):
        workers = wait_until(lambda: two_workers(proc, ini), 30, "two worker processes consuming")
        seen |= workers
        slow = [submit(app, "dummy", sleep=60, steps=60) for _ in range(2)]
        wait_until(
            lambda: all(status_is(engine, u, "running") for u in slow), 15, "the jobs to run"
        )
        proc.send_signal(signal.SIGTERM)
        wait_until(
            lambda: all(f"worker process {pid} stopping" in log_of(ini) for pid in workers),
            10,
            "the worker processes to begin their grace",
        )
        assert proc.poll() is None  # still within the 60 s grace
        hurried_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        took = time.monotonic() - hurried_at
        assert_all_gone(ini, workers)
    for uuid in slow:
        assert status_is(engine, uuid, "created", 2)
        assert [e[0] for e in events(engine, uuid)] == ["created", "handed back"]
    assert took < HAND_BACK_S
    print(f"second SIGTERM: stopped after {took:.2f} s")


def test_worker_processes_of_a_killed_supervisor_stop_and_hand_back(deployment):
    engine, ini, app = deployment["engine"], deployment["ini"], deployment["app"]
    with supervisor(ini, "-p", "2", "-t", "2") as (proc, seen):
        workers = wait_until(lambda: two_workers(proc, ini), 30, "two worker processes consuming")
        seen |= workers
        slow = submit(app, "dummy", sleep=60, steps=60)
        wait_until(lambda: status_is(engine, slow, "running"), 15, "the job to run")
        proc.kill()  # no chance to pass anything on
        proc.wait()
        killed_at = time.monotonic()
        # Each worker process notices, stops as on SIGTERM, and hands the job back.
        wait_until(
            lambda: not [pid for pid in workers if alive(pid)],
            GRACE_S + HAND_BACK_S + 5,
            "the worker processes to stop",
        )
        took = time.monotonic() - killed_at
        assert not processes_of(ini)
    print(f"supervisor killed: worker processes gone after {took:.2f} s")
    assert status_is(engine, slow, "created", 2)
    assert [e[0] for e in events(engine, slow)] == ["created", "handed back"]
