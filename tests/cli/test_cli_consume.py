"""``nick-jobs consume ACTION --exec COMMAND``: the real console script running remote
actions' jobs with real shell commands, against a live server."""

from __future__ import annotations

import contextlib
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nick_jobs_client import Client
from tests import processes
from tests.cli.test_client_cli import SCRIPT, cli_env
from tests.client.test_client import LiveServer, live_server
from tests.conftest import ROOT, stop_process
from tests.waiting import until

LEASE = 5

DOUBLE = """
import json, os, sys
params = json.load(sys.stdin)
print("doubling", params["n"], file=sys.stderr)
print("for attempt", os.environ["NICK_JOBS_ATTEMPT"], file=sys.stderr)
json.dump({"doubled": 2 * params["n"], "uuid": os.environ["NICK_JOBS_JOB_UUID"]}, sys.stdout)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("consume")) as live:
        yield live


@pytest.fixture
def action(api, request) -> str:
    """A remote action of this test's own: no other test's consumer takes its jobs."""
    name = "c-" + request.node.name.removeprefix("test_")[:90].replace("_", "-")
    api.request("PUT", f"/@job-actions/{name}", json_body={"title": name, "lease": LEASE})
    return name


@contextlib.contextmanager
def consume(server: LiveServer, home: Path, *args: Any) -> Iterator[subprocess.Popen[str]]:
    """``nick-jobs consume ARGS`` running; stopped with SIGTERM (if still running) and
    waited for on exit."""
    process = subprocess.Popen(
        [str(SCRIPT), "consume", *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(server, home),
        cwd=ROOT,
    )
    try:
        yield process
    finally:
        stop_process(process)


def python(code: str) -> str:
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


def sigterm(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.send_signal(signal.SIGTERM)
    return process.communicate(timeout=30)


def stopping(grace: float) -> str:
    """What consume says on stderr when a signal stops it."""
    return (
        f"nick-jobs: stopping: no more claims; the running jobs have {grace:g} s to end (a "
        "second signal releases them at once)\n"
    )


def gone(pid: int) -> bool:
    """The process ended (a zombie nobody reaped yet counts as ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def test_consume_runs_the_command_per_job_its_stdout_the_result_its_stderr_the_log(
    server, config_home, api: Client, action
):
    jobs = [api.submit_job(action, {"n": n}) for n in (1, 2, 3)]
    with consume(
        server, config_home, action, "--exec", python(DOUBLE), "-c", "2", "--wait", "1"
    ) as process:
        done = [api.wait_for_job(job["uuid"], timeout=30) for job in jobs]
        out, err = sigterm(process)
    assert process.returncode == 0, err
    assert err == stopping(30)
    assert [(job["status"], job["result"]) for job in done] == [
        ("completed", {"doubled": 2 * n, "uuid": job["uuid"]})
        for n, job in zip((1, 2, 3), jobs, strict=True)
    ]
    assert sorted(out.splitlines()) == sorted(f"completed {job['uuid']}" for job in jobs)
    log = api.job_log(jobs[1]["uuid"])
    assert [(line["level"], line["message"]) for line in log] == [
        ("info", "doubling 2"),
        ("info", "for attempt 1"),
    ]


def test_a_command_that_exits_non_zero_fails_the_job_with_its_last_stderr_line(
    server, config_home, api: Client, action
):
    command = "cat > /dev/null; echo 'checking /data' >&2; echo 'disk full' >&2; exit 3"
    uuid = api.submit_job(action, {})["uuid"]
    with consume(server, config_home, action, "--exec", command, "--wait", "1") as process:
        failed = api.wait_for_job(uuid, timeout=30)
        out, err = sigterm(process)
    assert process.returncode == 0, err
    assert failed["error"] == {"type": "CommandFailed", "message": "disk full"}
    assert out == f"failed {uuid}: disk full\n"
    assert [line["message"] for line in api.job_log(uuid)] == ["checking /data", "disk full"]


def test_output_that_is_not_a_json_object_fails_the_job(server, config_home, api, action):
    uuid = api.submit_job(action, {})["uuid"]
    with consume(server, config_home, action, "--exec", "echo '[1, 2]'", "--wait", "1"):
        failed = api.wait_for_job(uuid, timeout=30)
    assert failed["error"] == {
        "type": "InvalidOutput",
        "message": "the command's output is a JSON list, not an object",
    }


def test_an_aborted_job_has_its_command_terminated(server, config_home, api, action, tmp_path):
    pid_file = tmp_path / "pid"
    command = f"echo $$ > {shlex.quote(str(pid_file))}; exec sleep 60"
    uuid = api.submit_job(action, {})["uuid"]
    with consume(server, config_home, action, "--exec", command, "--wait", "1") as process:
        pid = int(until(lambda: pid_file.exists() and pid_file.read_text().strip(), "the pid"))
        api.abort_job(uuid)
        until(lambda: gone(pid), "the command to end")
        out, err = sigterm(process)
    assert process.returncode == 0, err
    assert out == f"aborted {uuid}\n"
    assert api.get_job(uuid)["status"] == "aborted"


def test_sigterm_ends_consume_cleanly_releasing_a_job_still_running_after_the_grace(
    server, config_home, api, action, tmp_path
):
    pid_file = tmp_path / "pid"
    command = f"echo $$ > {shlex.quote(str(pid_file))}; exec sleep 60"
    uuid = api.submit_job(action, {})["uuid"]
    with consume(
        server, config_home, action, "--exec", command, "--grace", "1", "--wait", "1"
    ) as process:
        pid = int(until(lambda: pid_file.exists() and pid_file.read_text().strip(), "the pid"))
        started = time.monotonic()
        out, err = sigterm(process)
    assert process.returncode == 0, err
    assert time.monotonic() - started < 15
    assert out == f"released {uuid}\n"
    assert err == stopping(1) + "nick-jobs: releasing 1 job(s) still running after the 1 s grace\n"
    until(lambda: gone(pid), "the command to end")
    job = api.get_job(uuid)
    assert (job["status"], job["attempt"]) == ("created", 2)


def test_sigterm_lets_a_running_command_finish_within_the_grace(
    server, config_home, api, action, tmp_path
):
    go = tmp_path / "go"
    started = tmp_path / "started"
    # The command runs on until the test lets it: after the SIGTERM.
    command = (
        f"touch {shlex.quote(str(started))}; "
        f"while [ ! -e {shlex.quote(str(go))} ]; do sleep 0.05; done; echo '{{\"ok\": true}}'"
    )
    uuid = api.submit_job(action, {})["uuid"]
    with consume(server, config_home, action, "--exec", command, "--wait", "1") as process:
        until(started.exists, "the command to start")
        process.send_signal(signal.SIGTERM)
        # The stop reached the consumer, which waits for the job: it is still running.
        assert api.get_job(uuid)["status"] == "running"
        go.touch()
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert out == f"completed {uuid}\n"
    assert api.get_job(uuid)["result"] == {"ok": True}


def test_consume_needs_a_remote_action(server, config_home):
    env = cli_env(server, config_home)
    proc = processes.run(
        [str(SCRIPT), "consume", "dummy", "--exec", "true", "--wait", "0"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1, proc.stderr
    assert "'dummy' is a Python action" in proc.stderr


def test_consume_refuses_a_label_without_a_value(server, config_home):
    proc = processes.run(
        [str(SCRIPT), "consume", "x", "--exec", "true", "--labels", "team"],
        capture_output=True,
        text=True,
        env=cli_env(server, config_home),
        cwd=ROOT,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2
    assert proc.stderr == "nick-jobs: --labels takes key=value, not 'team'\n"
