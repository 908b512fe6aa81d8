"""``nick-jobs stream``, ``submit --stream`` and ``log --follow``, the real console script
against a live server: piped (plain lines, JSON lines) and on a terminal (a pty), where a
progress bar is redrawn in place."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nick_jobs_client.cli.commands import (
    EXIT_JOB_ABORTED,
    EXIT_JOB_FAILED,
    EXIT_JOB_STOPPED,
    EXIT_UNAVAILABLE,
)
from tests.cli.test_client_cli import SCRIPT, assert_fails, cli_env, run_cli
from tests.client.test_client import LiveServer, live_server

SETTINGS = {"nick_jobs.stream_retry_ms": "100"}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("cli-stream"), **SETTINGS) as live:
        yield live


def steps_done(total: int) -> list[str]:
    return [f"step {n} of {total} done" for n in range(1, total + 1)]


# --- piped -----------------------------------------------------------------------------


def test_submit_stream_piped_prints_plain_lines_and_exits_0(cli, api):
    proc = cli("submit", "dummy", "sleep=1", "steps=3", 'result={"answer": 42}', "--stream")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "\r" not in proc.stdout
    assert "\x1b" not in proc.stdout
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert {row[0] for row in rows} <= {"status", "progress", "log", "close"}
    logs = [row for row in rows if row[0] == "log"]
    assert [row[2:] for row in logs] == [["info", "1", m] for m in steps_done(3)]
    progress = [row for row in rows if row[0] == "progress"]
    assert progress
    assert progress[-1][1:3] == ["100.0", "step 3"]
    assert rows[-2] == ["status", "completed", "1"]
    assert rows[-1] == ["close", "finished"]
    uuid = api.list_jobs(limit=1)[0]["uuid"]
    assert api.get_job(uuid)["result"] == {"answer": 42}


def test_follow_is_another_name_for_stream_and_json_is_one_event_a_line(cli, api):
    proc = cli("submit", "dummy", "sleep=0.5", "steps=2", "--follow", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert all(set(event) == {"event", "id", "data"} for event in events)
    assert [e["data"]["message"] for e in events if e["event"] == "log"] == steps_done(2)
    status = [e["data"] for e in events if e["event"] == "status"][-1]
    assert status == api.get_job(status["uuid"])
    assert events[-1] == {
        "event": "close",
        "id": None,
        "data": {"reason": "finished", "reconnect": False},
    }


def test_a_failed_job_exits_7_with_its_message(cli):
    proc = cli("submit", "dummy", "fail=disk full", "--stream", "-q")
    assert proc.returncode == EXIT_JOB_FAILED, proc.stderr
    uuid = proc.stdout.strip()  # -q: the id, once the job has ended
    assert len(uuid) == 36
    assert proc.stderr == f"nick-jobs: {uuid}: failed: disk full\n"


def test_stream_of_an_aborted_job_exits_8(cli, api):
    uuid = api.submit_job("dummy", {"sleep": 300, "steps": 3000})["uuid"]
    api.abort_job(uuid)
    proc = cli("stream", uuid)
    assert proc.returncode == EXIT_JOB_ABORTED
    assert proc.stdout.splitlines()[0] == "status\taborted\t1"
    assert proc.stderr == f"nick-jobs: {uuid}: aborted\n"


def test_stream_ends_with_exit_9_when_the_job_stops(server, config_home, api):
    uuid = api.submit_job("dummy", {"sleep": 300, "steps": 3000})["uuid"]
    api.wait_for_job(uuid, ("running",), timeout=15)
    proc = subprocess.Popen(
        [str(SCRIPT), "stream", uuid],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(server, config_home),
    )
    try:
        # Its first line is the job's status: the stream is open; now stop the job.
        assert proc.stdout.readline() == "status\trunning\t1\n"
        api.stop_job(uuid)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == EXIT_JOB_STOPPED, err
    assert out.splitlines()[-1] == "status\tstopped\t1"
    assert err == f"nick-jobs: {uuid}: stopped (resume with: nick-jobs resume {uuid})\n"
    api.delete_job(uuid)


def test_stream_refusals(cli):
    missing = "6f0c2b1e-3d4a-4b5c-8d6e-7f8091a2b3c4"
    assert_fails(cli("stream", missing), 4, "The resource you requested does not exist.")
    proc = cli("submit", "dummy", "steps=-1", "--stream")
    assert proc.returncode == 1
    assert proc.stderr.startswith("nick-jobs: The request has invalid fields. (params.steps: ")


def test_log_follow_prints_the_old_lines_then_the_new_ones_once(cli, api):
    uuid = api.submit_job("dummy", {"sleep": 2, "steps": 8})["uuid"]
    # Some lines are in the log before the command starts, the rest come by the stream.
    deadline = time.monotonic() + 15
    while len(api.job_log(uuid)) < 2:
        assert time.monotonic() < deadline, "no log lines"
        time.sleep(0.05)
    proc = cli("log", uuid, "--follow", "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == steps_done(8)
    assert api.get_job(uuid)["status"] == "completed"


def test_log_follow_plain_and_level(cli, api):
    uuid = api.submit_job("dummy", {"sleep": 0.5, "steps": 3})["uuid"]
    plain = cli("log", uuid, "-f")
    assert plain.returncode == 0, plain.stderr
    assert [line.split("\t")[1:] for line in plain.stdout.splitlines()] == [
        ["info", "1", m] for m in steps_done(3)
    ]
    assert plain.stdout.splitlines() == [
        "\t".join([line["time"], "info", "1", line["message"]]) for line in api.job_log(uuid)
    ]
    warnings = cli("log", uuid, "-f", "--level", "warning")
    assert (warnings.returncode, warnings.stdout) == (0, "")


# --- on a terminal ---------------------------------------------------------------------


def run_in_pty(
    server: LiveServer, home: Path, *args: str, timeout: float = 30
) -> tuple[int, str, str]:
    """Run ``nick-jobs`` with its stdout on a pseudo-terminal 100 columns wide; return its
    exit status, everything it wrote there, and its stderr."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [str(SCRIPT), *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
        env=cli_env(server, home, COLUMNS="100"),
    )
    os.close(slave)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's other end is closed
                break
            if not chunk:
                break
            output += chunk
        code = proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    return code, output.decode(), err


BAR = re.compile(r"running +\[([#-]{20})\] +(\d+\.\d)% (\d\d:\d\d) (step \d)")


def test_on_a_terminal_a_progress_bar_is_redrawn_in_place(server, config_home):
    code, output, err = run_in_pty(
        server, config_home, "submit", "dummy", "sleep=3", "steps=6", "--stream"
    )
    assert code == 0, err
    assert err == ""
    # The bar is drawn after a carriage return and ends by clearing the rest of the line.
    draws = [part for part in output.split("\r") if BAR.match(part)]
    assert draws, output
    assert all(part.endswith("\x1b[K") for part in draws)
    bars = [BAR.match(part).groups() for part in draws]
    percents = [float(percent) for _, percent, _, _ in bars]
    assert percents == sorted(percents)  # it only moves forward
    assert len(set(percents)) >= 2
    for filled, percent, _, _ in bars:
        assert filled.count("#") == round(float(percent) / 100 * 20)
    assert len({elapsed for _, _, elapsed, _ in bars}) >= 2  # the clock moves
    # Each line is cut to the terminal.
    assert max(len(part.removesuffix("\x1b[K")) for part in draws) <= 99

    # What stays on the screen: the lines, without the bar, which the end clears.
    screen = [line.rsplit("\r", 1)[-1].replace("\x1b[K", "") for line in output.split("\r\n")]
    screen = [line for line in screen if line]
    assert screen[0].endswith("  Dummy job")
    assert screen[1] in {"created (attempt 1)", "running (attempt 1)"}
    logs = [line.split("  ") for line in screen if "  info  " in line]
    assert [parts[-1] for parts in logs] == steps_done(6)
    assert re.fullmatch(r"completed \(attempt 1\) after 00:0\d", screen[-1])


def test_on_a_terminal_a_failed_job_clears_the_bar_and_exits_7(server, config_home, api):
    uuid = api.submit_job("dummy", {"sleep": 1, "steps": 2, "fail": "disk full"})["uuid"]
    code, output, err = run_in_pty(server, config_home, "stream", uuid)
    assert code == EXIT_JOB_FAILED
    assert err == f"nick-jobs: {uuid}: failed: disk full\n"
    last = output.split("\r\n")[-2].rsplit("\r", 1)[-1].replace("\x1b[K", "")
    assert re.fullmatch(r"failed \(attempt 1\) after 00:0\d: disk full", last)
    assert output.endswith("\r\n")  # the bar is gone: nothing after the last line


# --- limits ----------------------------------------------------------------------------


def test_too_many_streams_exits_6_with_the_servers_message(tmp_path):
    settings = {**SETTINGS, "nick_jobs.stream_max_per_user": "1"}
    (tmp_path / "server").mkdir()
    with live_server(tmp_path / "server", **settings) as live:
        api = live.client("admin")
        uuid = api.submit_job("dummy", {"sleep": 300, "steps": 3000})["uuid"]
        with api.stream_job(uuid):
            proc = run_cli(live, tmp_path, "stream", uuid, NICK_JOBS_TOKEN=api.token)
        api.abort_job(uuid)
    assert_fails(proc, EXIT_UNAVAILABLE, "You have 1 streams open already; try again shortly.")
