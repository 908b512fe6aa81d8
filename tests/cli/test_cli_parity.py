"""``nick-jobs get`` with progress and ``--watch``, ``status``, ``serve`` and ``resume``: the
real console script against a live server, piped and on a terminal (a pty)."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from nick_jobs.db import get_engine, migrations
from nick_jobs.users.accounts import add_user
from nick_jobs_client import JOB_STATUSES, Client, ClientError
from nick_jobs_client.cli.commands import (
    EXIT_CONFLICT,
    EXIT_JOB_FAILED,
    EXIT_JOB_STOPPED,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
)
from tests import processes
from tests.cli.test_cli_stream import run_in_pty, steps_done
from tests.cli.test_client_cli import SCRIPT, assert_fails, cli_env, run_cli
from tests.client.test_client import USERS, LiveServer, live_server, server_env
from tests.conftest import ROOT, stop_process
from tests.netutil import free_port

SETTINGS = {"nick_jobs.stream_retry_ms": "100"}
MISSING = "6f0c2b1e-3d4a-4b5c-8d6e-7f8091a2b3c4"
NOT_FOUND = "The resource you requested does not exist."


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("cli-parity"), **SETTINGS) as live:
        yield live


def wait_for(check, timeout: float = 15, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"still {value!r} after {timeout} s"
        time.sleep(interval)


def fields_of(text: str) -> dict[str, list[str]]:
    """Plain ``field<TAB>value`` lines: each field's values (``step`` repeats)."""
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, _, value = line.partition("\t")
        fields.setdefault(key, []).append(value)
    return fields


def blocks(text: str) -> list[str]:
    """What ``get --watch`` printed in a pipe: the job's blocks, a blank line between."""
    return [block.strip("\n") for block in text.split("\n\n") if block.strip()]


# --- get: progress, steps and error ----------------------------------------------------


def test_get_shows_the_progress_every_step_and_the_error(cli, api):
    uuid = api.submit_job("dummy", {"sleep": 0.3, "steps": 3, "fail": "disk full"})["uuid"]
    job = api.wait_for_job(uuid, timeout=15)
    assert job["status"] == "failed"
    assert [step["name"] for step in job["progress"]["steps"]] == ["step 1", "step 2", "step 3"]

    plain = cli("get", uuid, "-o", "plain")
    assert plain.returncode == 0, plain.stderr
    fields = fields_of(plain.stdout)
    assert fields["progress"] == ["100.0\tstep 3 of 3"]
    assert fields["step"] == [f"step {n}\t1/1\tdone" for n in (1, 2, 3)]
    assert fields["error"] == [f"{job['error']['type']}: disk full"]

    table = cli("get", uuid, "-o", "table")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("progress:"))
    assert lines[start : start + 4] == [
        "progress:     100.0%  step 3 of 3",
        "steps:        step 1  1/1  done",
        "              step 2  1/1  done",
        "              step 3  1/1  done",
    ]
    assert f"error:        {job['error']['type']}: disk full" in lines

    # A job that has not reported shows no steps.
    quiet = api.submit_job("dummy", {"steps": 0})["uuid"]
    api.wait_for_job(quiet, timeout=15)
    fields = fields_of(cli("get", quiet).stdout)
    assert fields["progress"] == ["-"]
    assert "step" not in fields


def test_get_shows_pending_and_running_steps(cli, api):
    uuid = api.submit_job("dummy", {"sleep": 300, "steps": 3})["uuid"]
    try:
        wait_for(lambda: (api.get_job(uuid)["progress"] or {}).get("steps"))
        fields = fields_of(cli("get", uuid).stdout)
        assert fields["progress"] == ["0.0\t"]
        assert fields["step"] == ["step 1\t-\trunning", "step 2\t-\tpending", "step 3\t-\tpending"]
    finally:
        api.abort_job(uuid)


# --- get --watch -----------------------------------------------------------------------


def test_watch_piped_prints_each_change_once_and_exits_0(cli, api):
    uuid = api.submit_job("dummy", {"sleep": 3, "steps": 6})["uuid"]
    proc = cli("get", uuid, "--watch")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    shown = blocks(proc.stdout)
    assert len(shown) >= 3  # running, at least one progress, completed
    assert all(a != b for a, b in itertools.pairwise(shown))  # each change once
    states = [fields_of(block) for block in shown]
    assert {state["uuid"][0] for state in states} == {uuid}
    assert states[-1]["status"] == ["completed"]
    assert states[-1]["step"] == [f"step {n}\t1/1\tdone" for n in range(1, 7)]
    percents = [float(s["progress"][0].split("\t")[0]) for s in states if s["progress"] != ["-"]]
    assert percents == sorted(percents)
    assert len(set(percents)) >= 2
    # What it showed last is the job as the API has it.
    assert shown[-1] == cli("get", uuid).stdout.strip("\n")


def test_watch_json_is_one_job_a_line_and_a_failure_exits_7(cli, api):
    uuid = api.submit_job("dummy", {"sleep": 1, "steps": 2, "fail": "disk full"})["uuid"]
    proc = cli("get", uuid, "--watch", "-o", "json")
    assert proc.returncode == EXIT_JOB_FAILED
    assert proc.stderr == f"nick-jobs: {uuid}: failed: disk full\n"
    jobs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert jobs[-1] == api.get_job(uuid)
    assert all(job["uuid"] == uuid for job in jobs)

    # A finished job: shown once, at once, with the same status.
    again = cli("get", uuid, "--watch", "-q")
    assert (again.returncode, again.stdout) == (EXIT_JOB_FAILED, f"{uuid}\n")


def test_watch_ends_with_exit_9_when_the_job_stops(server, config_home, api):
    uuid = api.submit_job("dummy", {"sleep": 300, "steps": 300})["uuid"]
    api.wait_for_job(uuid, ("running",), timeout=15)
    proc = subprocess.Popen(
        [str(SCRIPT), "get", uuid, "--watch", "-o", "json"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(server, config_home),
    )
    try:
        first = json.loads(proc.stdout.readline())  # the watch is on
        assert first["uuid"] == uuid
        api.stop_job(uuid)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == EXIT_JOB_STOPPED
    assert err == f"nick-jobs: {uuid}: stopped (resume with: nick-jobs resume {uuid})\n"
    assert json.loads(out.splitlines()[-1])["status"] == "stopped"
    api.resume_job(uuid)
    api.wait_for_job(uuid, ("running",), timeout=15)
    api.abort_job(uuid)


def test_watch_refusals(cli):
    assert_fails(cli("get", MISSING, "--watch"), EXIT_NOT_FOUND, NOT_FOUND)


def screen_after(output: str) -> list[str]:
    """The lines a terminal shows after ``output``, which only writes lines and moves up
    ``ESC [ n F`` then clears ``ESC [ J`` to redraw."""
    screen: list[str] = []
    for part in re.split(r"(\x1b\[\d+F\x1b\[J)", output.replace("\r\n", "\n")):
        move = re.fullmatch(r"\x1b\[(\d+)F\x1b\[J", part)
        if move:
            up = int(move.group(1))
            assert up <= len(screen)
            del screen[len(screen) - up :]
        else:
            screen += part.split("\n")[:-1] if part.endswith("\n") else part.split("\n")
    return screen


def test_watch_on_a_terminal_redraws_the_job_in_place(server, config_home, api):
    uuid = api.submit_job("dummy", {"sleep": 3, "steps": 6})["uuid"]
    code, output, err = run_in_pty(server, config_home, "get", uuid, "--watch")
    assert (code, err) == (0, "")
    redraws = re.findall(r"\x1b\[(\d+)F\x1b\[J", output)
    assert len(redraws) >= 2
    # Each move goes up exactly the block drawn before it: no line is left behind.
    drawn = re.split(r"\x1b\[\d+F\x1b\[J", output)
    assert [int(n) for n in redraws] == [part.count("\r\n") for part in drawn[:-1]]
    screen = screen_after(output)
    assert screen[0] == f"uuid:         {uuid}"
    assert "status:       completed" in screen
    assert "progress:     100.0%  step 6 of 6" in screen
    assert max(len(line) for line in screen) <= 99  # cut to the terminal's 100 columns


def test_watch_polls_when_the_server_refuses_a_stream(tmp_path):
    settings = {**SETTINGS, "nick_jobs.stream_max_per_user": "1"}
    (tmp_path / "server").mkdir()
    with live_server(tmp_path / "server", **settings) as live:
        api = live.client("admin")
        uuid = api.submit_job("dummy", {"sleep": 2, "steps": 2})["uuid"]
        with api.stream_job(uuid):  # the one stream this user may have
            proc = run_cli(live, tmp_path, "get", uuid, "--watch", NICK_JOBS_TOKEN=api.token)
    assert proc.returncode == 0, proc.stderr
    assert fields_of(blocks(proc.stdout)[-1])["status"] == ["completed"]


# --- status ----------------------------------------------------------------------------


def test_status_of_a_job(cli, api):
    uuid = api.submit_job("dummy", {"sleep": 0.2, "steps": 2})["uuid"]
    api.wait_for_job(uuid, timeout=15)
    plain = cli("status", uuid)
    assert (plain.returncode, plain.stdout) == (0, f"{uuid}\tdummy\tcompleted\t1\t100.0\n")
    table = cli("status", uuid, "-o", "table")
    assert table.stdout == f"{uuid}  dummy  completed (attempt 1)  100.0%\n"
    as_json = json.loads(cli("status", uuid, "-o", "json").stdout)
    assert as_json == {
        "uuid": uuid,
        "action": "dummy",
        "status": "completed",
        "attempt": 1,
        "percent": 100.0,
    }
    assert cli("status", uuid, "-q").stdout == "completed\n"

    silent = api.submit_job("dummy", {"steps": 0})["uuid"]
    api.wait_for_job(silent, timeout=15)
    assert cli("status", silent).stdout == f"{silent}\tdummy\tcompleted\t1\t\n"
    assert cli("status", silent, "-o", "table").stdout.endswith("completed (attempt 1)\n")
    assert_fails(cli("status", MISSING), EXIT_NOT_FOUND, NOT_FOUND)


def test_status_without_an_id_counts_the_jobs_by_status(cli, api):
    failed = api.submit_job("dummy", {"fail": "no"})["uuid"]
    api.wait_for_job(failed, timeout=15)
    # Nothing moves while the counts are compared.
    for job in api.list_jobs(limit=None):
        if job["status"] in {"created", "running"}:
            with contextlib.suppress(ClientError):
                api.abort_job(job["uuid"])
    wait_for(lambda: not any(j["status"] in {"created", "running"} for j in api.list_jobs()))
    expected = Counter(job["status"] for job in api.list_jobs(limit=None))
    counts = {status: expected.get(status, 0) for status in JOB_STATUSES}
    assert counts["failed"] >= 1

    plain = cli("status")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines() == [f"{s}\t{n}" for s, n in counts.items()]
    assert json.loads(cli("status", "-o", "json").stdout) == counts
    table = cli("status", "-o", "table").stdout.splitlines()
    assert table[0].split() == ["STATUS", "JOBS"]
    assert [line.split() for line in table[1:]] == [
        *([s, str(n)] for s, n in counts.items()),
        ["total", str(sum(counts.values()))],
    ]
    by_action = json.loads(cli("status", "--action", "prune", "-o", "json").stdout)
    assert by_action == dict.fromkeys(JOB_STATUSES, 0)


def test_count_jobs_is_one_request_read_from_the_total(api):
    for status in JOB_STATUSES:
        assert api.count_jobs(status=status) == len(api.list_jobs(status=status, limit=None))
    assert api.count_jobs(action="dummy") == len(api.list_jobs(action="dummy", limit=None))


# --- resume ----------------------------------------------------------------------------


def test_resume_posts_the_apis_resume(cli, api):
    uuid = api.submit_job("dummy", {"sleep": 300, "steps": 300})["uuid"]
    api.wait_for_job(uuid, ("running",), timeout=15)
    api.stop_job(uuid)
    api.wait_for_job(uuid, ("stopped",), timeout=15)
    proc = cli("resume", uuid)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"resumed {uuid}\n", "")
    assert api.wait_for_job(uuid, ("running",), timeout=15)["attempt"] == 2
    assert [e["event"] for e in api.job_history(uuid)][-1] in {"resumed", "started"}
    api.abort_job(uuid)


def test_resume_of_a_failed_job_follows_the_server(cli, api):
    # The dummy action saves a checkpoint at each step: its failed job resumes from it.
    uuid = api.submit_job("dummy", {"steps": 2, "fail": "disk full"})["uuid"]
    assert api.wait_for_job(uuid, timeout=15)["status"] == "failed"
    proc = cli("resume", uuid)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"resumed {uuid}\n", "")
    wait_for(lambda: api.get_job(uuid)["attempt"] == 2)
    assert "resumed" in [e["event"] for e in api.job_history(uuid)]

    # Without a checkpoint the server refuses, and the command says why.
    plain = api.submit_job("dummy", {"steps": 0, "fail": "disk full"})["uuid"]
    assert api.wait_for_job(plain, timeout=15)["status"] == "failed"
    with pytest.raises(ClientError) as refused:
        api.resume_job(plain)
    proc = cli("resume", plain)
    assert_fails(proc, EXIT_CONFLICT, f"{plain}: {refused.value.message}")


# --- serve -----------------------------------------------------------------------------


def write_config(directory: Path, port: int) -> Path:
    """An ini file as a development server has it: SQLite, embedded broker and workers."""
    database = directory / "jobs.sqlite"
    engine = get_engine(f"sqlite:///{database}")
    migrations.upgrade(engine)
    with Session(engine) as session, session.begin():
        add_user(session, "admin", USERS["admin"][0], roles=["Administrator"])
    engine.dispose()
    values = {
        "nick_jobs.environment": "testing",
        "sqlalchemy.url": f"sqlite:///{database}",
        "nick_jobs.broker_url": "stub://",
        "nick_jobs.embedded_worker_threads": "1",
        "nick_jobs.jwt_secret": "serve-tests-" + "x" * 40,
        "nick_jobs.auto_migrate": "false",
        "nick_jobs.bootstrap_admin": "false",
        "nick_jobs.shutdown_grace": "2",
    }
    ini = directory / "serve.ini"
    lines = ["[app:main]", "use = egg:nick-jobs", *(f"{k} = {v}" for k, v in values.items())]
    # The port comes from the command line, as pserve's variables give it.
    lines += ["", "[server:main]", "use = egg:waitress#main", "listen = 127.0.0.1:%(port)s", ""]
    ini.write_text("\n".join(lines))
    return ini


def test_serve_serves_the_api_and_stops_on_sigterm(tmp_path):
    port = free_port()
    ini = write_config(tmp_path, port)
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen(
        [str(SCRIPT), "serve", str(ini), f"port={port}"],
        cwd=ROOT,
        env=server_env(),
        stdout=log,
        stderr=log,
    )
    try:
        client = Client(f"http://127.0.0.1:{port}", timeout=2, retries=0)

        def ready() -> dict[str, Any] | None:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            with contextlib.suppress(ClientError):
                return client.health()
            return None

        health = wait_for(ready, timeout=30, interval=0.1)
        assert (health["endpoint"], health["http_status"]) == ("/healthz/ready", 200)
        client.login("admin", USERS["admin"][0])
        uuid = client.submit_job("dummy", {"steps": 1})["uuid"]
        assert client.wait_for_job(uuid, timeout=15)["status"] == "completed"

        # The command became the server: its pid is the one to signal.
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
    finally:
        stop_process(proc)
        log.close()
    assert code == 0, (tmp_path / "serve.log").read_text()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass


def test_serve_refuses_a_missing_config(tmp_path):
    proc = processes.run(
        [str(SCRIPT), "serve", str(tmp_path / "nowhere.ini")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=server_env(),
        timeout=30,
    )
    assert proc.returncode == EXIT_USAGE
    assert proc.stderr == f"nick-jobs: no such config file: {tmp_path / 'nowhere.ini'}\n"


# --- log --follow ----------------------------------------------------------------------


def test_log_follow_reads_the_followed_log_and_resumes_across_reconnections(tmp_path):
    # Each stream lives a quarter of a second: the command reconnects many times, each time
    # with the id of the last line it had, and prints every line once.
    settings = {**SETTINGS, "nick_jobs.stream_max_lifetime": "0.25"}
    (tmp_path / "server").mkdir()
    with live_server(tmp_path / "server", **settings) as live:
        api = live.client("admin")
        uuid = api.submit_job("dummy", {"sleep": 3, "steps": 12})["uuid"]
        proc = run_cli(live, tmp_path, "log", uuid, "-f", "-o", "json", NICK_JOBS_TOKEN=api.token)
        assert proc.returncode == 0, proc.stderr
        lines = [json.loads(line) for line in proc.stdout.splitlines()]
        assert lines == api.job_log(uuid)  # the API's lines, in order, none twice
        assert [line["message"] for line in lines] == steps_done(12)


def test_follow_job_log_starts_after_a_last_event_id(api):
    uuid = api.submit_job("dummy", {"sleep": 0.3, "steps": 4})["uuid"]
    api.wait_for_job(uuid, timeout=15)
    with api.follow_job_log(uuid) as stream:
        events = list(stream)
    assert [e.event for e in events] == ["log"] * 4 + ["close"]
    assert events[-1].json == {"reason": "finished", "reconnect": False}
    with api.follow_job_log(uuid, last_event_id=events[1].id) as stream:
        rest = [e.json["message"] for e in stream if e.event == "log"]
    assert rest == steps_done(4)[2:]
    with api.follow_job_log(uuid, level="warning") as stream:
        assert [e.event for e in stream] == ["close"]


def test_log_follow_of_a_job_that_stops_ends_there(server, config_home, api):
    uuid = api.submit_job("dummy", {"sleep": 300, "steps": 300})["uuid"]
    wait_for(lambda: api.job_log(uuid))
    api.stop_job(uuid)
    api.wait_for_job(uuid, ("stopped",), timeout=15)
    proc = run_cli(server, config_home, "log", uuid, "--follow", "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [line["message"] for line in api.job_log(uuid)]
    api.delete_job(uuid)
    proc = run_cli(server, config_home, "log", uuid, "-f")
    assert_fails(proc, EXIT_NOT_FOUND, NOT_FOUND)


def test_list_sort_oldest_pages_oldest_first(cli, api):
    made = [api.submit_job("dummy", {"steps": 0}, title=f"sorted {n}")["uuid"] for n in range(3)]
    newest = cli("list", "--search", "sorted", "-q")
    oldest = cli("list", "--search", "sorted", "--sort", "oldest", "-q")
    assert newest.returncode == oldest.returncode == 0, (newest.stderr, oldest.stderr)
    assert newest.stdout.split() == made[::-1]
    assert oldest.stdout.split() == made
    # Across pages too: the client follows the oldest-first cursor.
    paged = list(api.iter_jobs(q="sorted", sort="oldest", page_size=1))
    assert [job["uuid"] for job in paged] == made


def test_actions_search_asks_the_server(cli, api):
    everything = {action["name"] for action in api.job_actions()}
    found = cli("actions", "--search", "DUMM", "-q")
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == ["dummy"]
    assert {action["name"] for action in api.job_actions(q="dummy")} == {"dummy"}
    assert "dummy" in everything
    assert len(everything) > 1


def test_job_actions_follows_the_pages_of_a_long_list(tmp_path):
    includes = "tests.actions_for_tests tests.web.test_action_search"
    with live_server(tmp_path, **{"nick_jobs.includes": includes}) as live:
        api = live.client("admin")
        first = api.request("GET", "/@job-actions")
        assert first.headers.get("Link"), "the list is long enough to page"
        names = [action["name"] for action in api.job_actions()]
        assert len(names) == len(set(names)) > len(first.data)
        assert {f"bulk-{n:03d}" for n in range(120)} <= set(names)
        assert [a["name"] for a in api.job_actions(q="needle")] == ["bulk-077"]
