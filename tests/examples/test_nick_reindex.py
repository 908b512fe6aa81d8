"""``examples/nick-reindex``, run as its README says: a live server, a Worker user and its
service token made with ``nick-jobs users add`` and ``nick-jobs tokens create``, the action
file applied with ``nick-jobs actions apply``, the nightly schedule added by
``schedule.sh``, and ``node reindex.mjs`` claiming the jobs submitted through the API.

Without ``node`` the tests that run it fail, unless ``NICK_JOBS_REQUIRE_NODE=0`` says that
a machine without Node is fine (as ``tests/client/test_js_client.py``); then they skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nick_jobs_client import Client
from tests import processes
from tests.client.test_client import LiveServer, live_server, server_env
from tests.conftest import ROOT
from tests.waiting import until

EXAMPLE = ROOT / "examples" / "nick-reindex"
BIN = Path(sys.executable).parent
NICK_JOBS = BIN / "nick-jobs"
WORKER = "indexer"
# A claim waits this long on the server; a SIGTERM lets the claim waiting then answer.
CLAIM_WAIT = 1


def node_or_skip() -> str:
    node = shutil.which("node")
    if node is None:
        message = "node is not installed: examples/nick-reindex/reindex.mjs can't run"
        if os.environ.get("NICK_JOBS_REQUIRE_NODE") == "0":
            pytest.skip(f"{message}; NICK_JOBS_REQUIRE_NODE=0 allows that")
        raise AssertionError(f"{message}. Install Node 18+, or set NICK_JOBS_REQUIRE_NODE=0.")
    return node


def server_command(*args: Any) -> subprocess.CompletedProcess[str]:
    """A server command of the console script (it takes the ini file), as an operator runs it."""
    return processes.run(
        [str(NICK_JOBS), *map(str, args)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=server_env(),
        cwd=ROOT,
        timeout=60,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("nick-reindex")) as live:
        yield live


@pytest.fixture(scope="module")
def admin(server) -> Client:
    return server.client("admin")


@pytest.fixture(scope="module")
def worker_token(server) -> str:
    """The README's Worker user and its service token, made with the console script."""
    added = server_command(
        "users", "add", server.ini, WORKER, "--role", "Worker", "--password", "p" * 16
    )
    assert added.returncode == 0, added.stderr
    created = server_command("tokens", "create", server.ini, WORKER, "--name", "reindex-consumer")
    assert created.returncode == 0, created.stderr
    return created.stdout.strip()


@pytest.fixture(scope="module")
def applied(server) -> str:
    """The example's action file applied to the server's database."""
    proc = server_command("actions", "apply", server.ini, EXAMPLE / "actions.yaml")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@contextlib.contextmanager
def consumer(server: LiveServer, token: str, **settings: str) -> Iterator[subprocess.Popen[str]]:
    """``node reindex.mjs`` running with the README's environment; killed (its process group)
    if a test leaves it running."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NICK_JOBS_", "REINDEX_"))}
    env.update(NICK_JOBS_URL=server.url, NICK_JOBS_TOKEN=token, REINDEX_WAIT=str(CLAIM_WAIT))
    env.update(settings)
    process = subprocess.Popen(
        [node_or_skip(), str(EXAMPLE / "reindex.mjs")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()


def sigterm(process: subprocess.Popen[str]) -> tuple[str, str, float]:
    """SIGTERM, then its output and how many seconds it took to exit."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    return out, err, time.monotonic() - started


def batch_lines(log: list[dict[str, Any]]) -> list[str]:
    return [line["message"] for line in log if line["message"].startswith("batch ")]


def test_the_action_file_declares_reindex_and_applying_it_again_changes_nothing(
    server, admin, applied
):
    assert applied == "created reindex (version 1)\n"
    again = server_command("actions", "apply", server.ini, EXAMPLE / "actions.yaml")
    assert (again.returncode, again.stdout) == (0, "unchanged reindex (version 1)\n")
    action = admin.request("GET", "/@job-actions/reindex").data
    assert {k: action[k] for k in ("kind", "permission", "resumable", "max_retries", "lease")} == {
        "kind": "remote",
        "permission": "Add Jobs",
        "resumable": True,
        "max_retries": 2,
        "lease": 60,
    }
    assert action["params"]["required"] == ["site"]
    assert action["params"]["properties"]["batch_size"]["default"] == 100
    assert action["result"]["required"] == ["indexed", "batches"]


def test_schedule_sh_adds_a_reindex_of_news_at_the_next_0300_utc(server, admin, applied, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NICK_JOBS_")}
    env.update(
        PATH=os.pathsep.join([str(BIN), env.get("PATH", "")]),
        NICK_JOBS_URL=server.url,
        NICK_JOBS_TOKEN=admin.token,
        XDG_CONFIG_HOME=str(tmp_path),
    )
    before = datetime.now(UTC)
    proc = subprocess.run(
        [str(EXAMPLE / "schedule.sh")],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    after = datetime.now(UTC)
    assert proc.returncode == 0, proc.stderr
    scheduled = admin.get_scheduled_job("reindex-news-nightly")
    assert {k: scheduled[k] for k in ("action", "params", "schedule", "timezone", "enabled")} == {
        "action": "reindex",
        "params": {"site": "news"},
        "schedule": "0 3 * * *",
        "timezone": "UTC",
        "enabled": True,
    }

    def next_three_oclock(moment: datetime) -> datetime:
        today = moment.replace(hour=3, minute=0, second=0, microsecond=0)
        return today if today > moment else today + timedelta(days=1)

    next_run = datetime.fromisoformat(scheduled["next_run"].replace("Z", "+00:00"))
    assert next_run in {next_three_oclock(before), next_three_oclock(after)}


def test_reindex_mjs_runs_a_job_batch_by_batch_and_exits_0_on_sigterm(
    server, admin, applied, worker_token
):
    with consumer(server, worker_token) as process:
        news = admin.submit_job("reindex", {"site": "news"}, title="Reindex the news")
        shop = admin.submit_job("reindex", {"site": "shop", "objects": 250, "batch_size": 100})
        done = [admin.wait_for_job(job["uuid"], timeout=60) for job in (news, shop)]
        out, err, took = sigterm(process)

    assert process.returncode == 0, err
    # It stopped as soon as the claim waiting on the server answered: nothing was running.
    assert took < CLAIM_WAIT + 10
    assert [(job["status"], job["result"]) for job in done] == [
        ("completed", {"indexed": 1000, "batches": 10}),
        ("completed", {"indexed": 250, "batches": 3}),
    ]
    # The claims were the Worker's own.
    history = admin.job_history(news["uuid"])
    assert any(event.get("by") == WORKER for event in history), history

    assert batch_lines(admin.job_log(news["uuid"])) == [
        f"batch {n} of 10: 100 objects indexed, up to /news/pages/item-{100 * n:06}"
        for n in range(1, 11)
    ]
    assert batch_lines(admin.job_log(shop["uuid"])) == [
        "batch 1 of 3: 100 objects indexed, up to /shop/pages/item-000100",
        "batch 2 of 3: 100 objects indexed, up to /shop/pages/item-000200",
        "batch 3 of 3: 50 objects indexed, up to /shop/events/item-000250",
    ]
    assert done[0]["progress"]["percent"] == 100
    assert done[0]["progress"]["message"] == "batch 10 of 10"
    assert done[1]["progress"]["message"] == "batch 3 of 3"

    assert out.splitlines() == [
        f"reindex: claiming reindex jobs from {server.url}",
        f"{news['uuid']}: reindexing news, 1000 objects in 10 batches",
        f"{news['uuid']}: news reindexed",
        f"{shop['uuid']}: reindexing shop, 250 objects in 3 batches",
        f"{shop['uuid']}: shop reindexed",
        "reindex: stopped",
    ]
    assert err == "reindex: SIGTERM: no more claims; the running jobs have 30 s to end\n"


def test_a_stopped_reindex_resumes_at_the_batch_after_its_checkpoint(
    server, admin, applied, worker_token
):
    # 20 ms a batch: 8 s, several times the second within which a consumer with progress
    # to report checks in and hears of the stop request.
    batches = 400
    with consumer(server, worker_token) as process:
        job = admin.submit_job("reindex", {"site": "blog", "objects": batches, "batch_size": 1})
        until(lambda: admin.get_job(job["uuid"])["status"] == "running", "the claim", 30)
        admin.stop_job(job["uuid"])
        stopped = admin.wait_for_job(job["uuid"], ("stopped", "completed", "failed"), timeout=60)
        assert stopped["status"] == "stopped", stopped
        reached = len(batch_lines(admin.job_log(job["uuid"])))
        assert 0 < reached < batches
        assert stopped["progress"]["message"] == f"batch {reached} of {batches}"

        admin.resume_job(job["uuid"])
        done = admin.wait_for_job(job["uuid"], timeout=60)
        out, err, _ = sigterm(process)

    assert process.returncode == 0, err
    assert (done["status"], done["result"]) == (
        "completed",
        {"indexed": batches, "batches": batches},
    )
    log = [line["message"] for line in admin.job_log(job["uuid"])]
    # Every batch once: the resumed attempt went on after the last one the first finished.
    assert batch_lines(admin.job_log(job["uuid"])) == [
        f"batch {n} of {batches}: 1 objects indexed, up to /blog/{section}/item-{n:06}"
        for n, section in zip(
            range(1, batches + 1),
            ["news", "events", "people", "pages"] * (batches // 4),
            strict=True,
        )
    ]
    assert f"resuming at batch {reached + 1} of {batches}" in log
    # Two claims of the job, the first ended by the stop, the second by the last batch.
    assert [line.split(": ", 1)[1] for line in out.splitlines() if job["uuid"] in line] == [
        f"reindexing blog, {batches} objects in {batches} batches",
        f"reindexing blog, {batches} objects in {batches} batches",
        "blog reindexed",
    ]
    assert done["progress"]["message"] == f"batch {batches} of {batches}"


def test_sigterm_hands_a_running_reindex_back_once_the_grace_is_over(
    server, admin, applied, worker_token
):
    job = None
    try:
        with consumer(server, worker_token, REINDEX_GRACE="1") as process:
            # 1,000 batches: far longer than the grace.
            job = admin.submit_job("reindex", {"site": "archive", "objects": 100_000})
            until(lambda: admin.get_job(job["uuid"])["status"] == "running", "the claim", 30)
            out, err, took = sigterm(process)
        assert process.returncode == 0, err
        assert 1 <= took < 1 + 10
        assert err == "reindex: SIGTERM: no more claims; the running jobs have 1 s to end\n"
        assert out.splitlines()[-1] == "reindex: stopped"
        # Handed back: waiting again, as a new attempt, for another consumer.
        handed_back = admin.get_job(job["uuid"])
        assert (handed_back["status"], handed_back["attempt"]) == ("created", 2)
    finally:
        if job is not None:
            # No other test's consumer is to take it.
            admin.abort_job(job["uuid"])
