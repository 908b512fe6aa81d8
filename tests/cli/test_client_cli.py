"""The client subcommands of the real ``nick-jobs`` console script, against a live server."""

from __future__ import annotations

import json
import os
import pty
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from nick_jobs_client import Client, ClientError
from nick_jobs_client.cli.commands import (
    EXIT_AUTH,
    EXIT_CONFLICT,
    EXIT_NOT_FOUND,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from tests import processes
from tests.client.test_client import LiveServer, live_server
from tests.conftest import ROOT
from tests.netutil import free_port

SCRIPT = Path(sys.executable).with_name("nick-jobs")
CLIENT_VARIABLES = ("NICK_JOBS_URL", "NICK_JOBS_TOKEN", "XDG_CONFIG_HOME", "APPDATA")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("cli")) as live:
        yield live


def cli_env(server: LiveServer, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_VARIABLES}
    env.update({"NICK_JOBS_URL": server.url, "XDG_CONFIG_HOME": str(home), **extra})
    return env


def run_cli(
    server: LiveServer, home: Path, *args: Any, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess:
    return processes.run(
        [str(SCRIPT), *map(str, args)],
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        env=cli_env(server, home, **env),
        cwd=ROOT,
        timeout=30,
    )


@pytest.fixture
def cli_all(server, config_home):
    """``cli_all(args, args, ...)``: independent commands at once; their results in order."""

    def run_all(*commands: tuple[Any, ...]) -> list[subprocess.CompletedProcess]:
        with ThreadPoolExecutor(len(commands)) as pool:
            return list(pool.map(lambda args: run_cli(server, config_home, *args), commands))

    return run_all


def assert_fails(proc: subprocess.CompletedProcess, code: int, message: str) -> None:
    """One line on stderr with the server's message, the exit status, no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    assert proc.stderr == f"nick-jobs: {message}\n"


def long_job(api: Client, title: str = "Long") -> str:
    uuid = api.submit_job("dummy", {"sleep": 300, "steps": 3000}, title=title)["uuid"]
    api.wait_for_job(uuid, ("running",), timeout=15)
    return uuid


# --- login and logout ------------------------------------------------------------------


def test_login_stores_the_token_for_the_server_readable_by_the_owner_only(server, config_home):
    path = config_home / "nick-jobs" / "tokens.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    stored = json.loads(path.read_text())[server.url]
    assert stored["login"] == "admin"
    assert Client(server.url, stored["token"]).job_actions()[0]["name"] == "dummy"


def test_logout_revokes_and_forgets_the_token(server, tmp_path):
    # The URL is normalised: the token stored for ".../" serves "..." too.
    login = run_cli(
        server, tmp_path, "login", "carol", "-s", server.url + "/", stdin="carol-password\n"
    )
    assert login.returncode == 0, login.stderr
    assert login.stdout.startswith(f"Logged in to {server.url} as carol")
    path = tmp_path / "nick-jobs" / "tokens.json"
    token = json.loads(path.read_text())[server.url]["token"]

    logout = run_cli(server, tmp_path, "logout")
    assert logout.returncode == 0, logout.stderr
    assert logout.stdout == f"Logged out of {server.url}.\n"
    assert json.loads(path.read_text()) == {}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(ClientError, match="not authorized") as info:
        Client(server.url, token).list_jobs()
    assert info.value.status == 401

    proc = run_cli(server, tmp_path, "list")
    assert_fails(
        proc,
        EXIT_AUTH,
        "You are not authorized to access this resource. "
        f"(log in with: nick-jobs login -s {server.url})",
    )


def test_wrong_password_is_an_auth_error(server, tmp_path):
    proc = run_cli(server, tmp_path, "login", "admin", stdin="wrong\n")
    assert_fails(proc, EXIT_AUTH, "Wrong login and/or password.")
    assert not (tmp_path / "nick-jobs" / "tokens.json").exists()


def test_token_from_the_environment_overrides_the_stored_one(server, api, tmp_path):
    proc = run_cli(server, tmp_path, "actions", "-q", NICK_JOBS_TOKEN=api.token)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "dummy\nprune\n"


# --- submit, get, list -----------------------------------------------------------------


def test_submit_with_key_values_and_a_params_file(cli, api, tmp_path):
    params_file = tmp_path / "params.json"
    params_file.write_text(json.dumps({"steps": 2, "result": {"from": "file"}}))
    proc = cli(
        "submit",
        "dummy",
        "--params-file",
        params_file,
        "sleep=0.1",
        'result={"answer": 42}',
        "--title",
        "From the command line",
        "--description",
        "A job with a description",
        "-o",
        "json",
    )
    assert proc.returncode == 0, proc.stderr
    job = json.loads(proc.stdout)
    # key=value wins over the file; values are JSON when they parse.
    assert job["params"] == {"action": "dummy", "steps": 2, "sleep": 0.1, "result": {"answer": 42}}
    assert job["title"] == "From the command line"
    assert job["description"] == "A job with a description"
    assert api.wait_for_job(job["uuid"], timeout=15)["result"] == {"answer": 42}


def test_submit_quiet_prints_the_id_and_strings_stay_strings(cli, api):
    proc = cli("submit", "dummy", "fail=disk full", "-q")
    assert proc.returncode == 0, proc.stderr
    uuid = proc.stdout.strip()
    job = api.wait_for_job(uuid, timeout=15)
    assert (job["status"], job["error"]["message"]) == ("failed", "disk full")


def test_submit_usage_errors(cli_all):
    bad_pair, no_file, no_action = cli_all(
        ("submit", "dummy", "steps"),
        ("submit", "dummy", "--params-file", "/nonexistent.json"),
        ("submit",),
    )
    assert_fails(bad_pair, EXIT_USAGE, "parameters are key=value, not 'steps'")
    assert_fails(no_file, EXIT_USAGE, "can't read /nonexistent.json: No such file or directory")
    assert_fails(
        no_action, EXIT_USAGE, "submit takes an ACTION (see `nick-jobs actions`), or --from FILE"
    )


def _jobs_file(path, *lines: str):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_submit_from_a_file_submits_every_line_at_once(cli, api, tmp_path):
    jobs = _jobs_file(
        tmp_path / "jobs.jsonl",
        '{"params": {"action": "dummy", "result": {"n": 1}}, "title": "Line one"}',
        "",
        '{"params": {"action": "dummy", "result": {"n": 3}}, "title": "Line three"}',
    )
    proc = cli("submit", "--from", jobs, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    submitted = json.loads(proc.stdout)
    assert [job["title"] for job in submitted] == ["Line one", "Line three"]
    for job, n in zip(submitted, (1, 3), strict=True):
        assert api.wait_for_job(job["uuid"], timeout=15)["result"] == {"n": n}
    # From stdin, and quiet: the uuids, one a line.
    proc = cli("submit", "--from", "-", "-q", stdin=jobs.read_text())
    assert proc.returncode == 0, proc.stderr
    uuids = proc.stdout.split()
    assert [api.get_job(uuid)["title"] for uuid in uuids] == ["Line one", "Line three"]


def test_submit_from_a_file_with_a_key_is_safe_to_run_again(cli, tmp_path):
    jobs = _jobs_file(tmp_path / "jobs.jsonl", *['{"params": {"action": "dummy"}}'] * 2)
    key = f"file-{time.time_ns()}"
    first = cli("submit", "--from", jobs, "--idempotency-key", key, "-q")
    again = cli("submit", "--from", jobs, "--idempotency-key", key, "-q")
    assert first.returncode == again.returncode == 0, (first.stderr, again.stderr)
    assert first.stdout == again.stdout
    assert len(first.stdout.split()) == 2


def test_submit_from_a_file_names_the_faulty_lines_and_submits_nothing(cli, api, tmp_path):
    before = api.count_jobs()
    jobs = _jobs_file(
        tmp_path / "jobs.jsonl",
        '{"params": {"action": "dummy"}}',
        '{"params": {"action": "dummy", "steps": -1}}',
        '{"params": {"action": "nope"}}',
    )
    proc = cli("submit", "--from", jobs)
    assert_fails(
        proc,
        1,
        f"nothing of the file was submitted: {jobs}:2: params.steps: Must be greater than or "
        f"equal to 0 and less than or equal to 1000000; {jobs}:3: params.action: Unknown "
        "action 'nope'",
    )
    assert api.count_jobs() == before
    not_json = _jobs_file(tmp_path / "bad.jsonl", '{"params": {"action": "dummy"}}', "{oops")
    assert_fails(
        cli("submit", "--from", not_json),
        EXIT_USAGE,
        f"{not_json}:2: not JSON: Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)",
    )
    both = cli("submit", "dummy", "--from", jobs)
    assert_fails(both, EXIT_USAGE, "--from takes the jobs from the file: give no ACTION or params")
    assert api.count_jobs() == before


def test_submit_invalid_params_shows_the_fields(cli):
    proc = cli("submit", "dummy", "steps=-1")
    assert_fails(
        proc,
        1,
        "The request has invalid fields. (params.steps: Must be greater than or equal to 0 "
        "and less than or equal to 1000000)",
    )


def test_get_json_is_the_apis_json_and_plain_is_tab_separated(cli_all, api):
    uuid = api.submit_job("dummy", {"result": {"n": 1}}, title="Get me")["uuid"]
    job = api.wait_for_job(uuid, timeout=15)
    # Piped, plain is the default.
    as_json, plain = cli_all(("get", uuid, "-o", "json"), ("get", uuid))
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == job

    assert plain.returncode == 0, plain.stderr
    fields = dict(line.split("\t", 1) for line in plain.stdout.splitlines())
    assert fields["uuid"] == uuid
    assert fields["status"] == "completed"
    assert fields["action"] == "dummy"
    assert fields["title"] == "Get me"
    assert fields["result"] == '{"n": 1}'
    assert fields["url"] == job["@id"]


def test_get_unknown_job_is_not_found(cli):
    proc = cli("get", "6f0c2b1e-3d4a-4b5c-8d6e-7f8091a2b3c4")
    assert_fails(proc, EXIT_NOT_FOUND, "The resource you requested does not exist.")


def test_list_filters_plain_json_and_quiet(cli_all, api):
    marker = f"list-{time.monotonic_ns()}"
    uuids = [api.submit_job("dummy", title=f"{marker} {i}")["uuid"] for i in range(3)]
    for uuid in uuids:
        api.wait_for_job(uuid, timeout=15)

    quiet, plain, as_json = cli_all(
        ("list", "--search", marker, "-q"),
        ("list", "--search", marker, "--status", "completed", "--limit", "2"),
        ("list", "--search", marker, "-o", "json"),
    )
    assert quiet.stdout.splitlines() == uuids[::-1]

    rows = [line.split("\t") for line in plain.stdout.splitlines()]
    assert [row[:5] for row in rows] == [
        [u, "completed", "dummy", "admin", "1"] for u in uuids[:0:-1]
    ]
    assert [row[6] for row in rows] == [f"{marker} 2", f"{marker} 1"]

    assert json.loads(as_json.stdout) == api.list_jobs(q=marker)


def test_list_by_parent(cli, api):
    old = api.submit_job("dummy", title=f"parent-{time.monotonic_ns()}")
    api.wait_for_job(old["uuid"], timeout=15)
    new = api.restart_job(old["uuid"])
    listed = cli("list", "--parent", old["uuid"], "-q")
    assert listed.stdout.splitlines() == [new["uuid"]]


def test_quiet_output_feeds_xargs(server, config_home, api):
    marker = f"xargs-{time.monotonic_ns()}"
    uuids = [api.submit_job("dummy", title=f"{marker} {i}")["uuid"] for i in range(3)]
    for uuid in uuids:
        api.wait_for_job(uuid, timeout=15)
    pipeline = f"'{SCRIPT}' list -q --search {marker} | xargs '{SCRIPT}' delete"
    proc = subprocess.run(
        ["sh", "-c", pipeline],
        capture_output=True,
        text=True,
        env=cli_env(server, config_home),
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.splitlines()) == sorted(f"deleted {u}" for u in uuids)
    assert api.list_jobs(q=marker) == []


def test_list_is_a_table_on_a_terminal(server, config_home, api):
    marker = f"table-{time.monotonic_ns()}"
    uuid = api.submit_job("dummy", title=f"{marker} job")["uuid"]
    api.wait_for_job(uuid, timeout=15)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [str(SCRIPT), "list", "--search", marker],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
        env=cli_env(server, config_home, COLUMNS="200"),
    )
    os.close(slave)
    output = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the terminal's other end is closed
            break
        if not chunk:
            break
        output += chunk
    os.close(master)
    assert proc.wait(timeout=30) == 0, proc.stderr.read()
    proc.stderr.close()
    header, row = output.decode().splitlines()
    assert header.split() == ["ID", "STATUS", "ACTION", "ACTOR", "ATTEMPT", "CREATED", "TITLE"]
    assert row.split()[:5] == [uuid, "completed", "dummy", "admin", "1"]
    assert row.endswith(f"{marker} job")
    # The columns line up under their headers.
    assert row.index("completed") == header.index("STATUS")
    assert row.index(f"{marker} job") == header.index("TITLE")


# --- abort, retry, delete --------------------------------------------------------------


def test_abort_retry_delete_and_their_conflicts(cli, api):
    uuid = long_job(api)
    proc = cli("abort", uuid)
    assert (proc.returncode, proc.stdout) == (0, f"aborted {uuid}\n")
    assert api.get_job(uuid)["status"] == "aborted"

    proc = cli("abort", uuid)
    assert proc.returncode == EXIT_CONFLICT
    assert proc.stderr.startswith(f"nick-jobs: {uuid}: A")
    assert proc.stderr.endswith(" aborted job can't be aborted.\n")

    proc = cli("retry", uuid, "-q")
    assert (proc.returncode, proc.stdout) == (0, f"{uuid}\n")
    assert api.wait_for_job(uuid, ("running",), timeout=15)["attempt"] == 2

    proc = cli("delete", uuid)
    assert_fails(proc, EXIT_CONFLICT, f"{uuid}: A running job can't be deleted; abort it first.")

    missing = "6f0c2b1e-3d4a-4b5c-8d6e-7f8091a2b3c4"
    proc = cli("abort", missing, uuid)  # goes on after the first failure
    assert proc.returncode == EXIT_NOT_FOUND
    assert proc.stdout == f"aborted {uuid}\n"
    assert proc.stderr == f"nick-jobs: {missing}: The resource you requested does not exist.\n"

    proc = cli("delete", uuid, "-o", "json")  # 204: no body to print
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert api.list_jobs(q="Long") == []


# --- actions, health, servers ----------------------------------------------------------


def test_actions_plain_and_json(cli_all, api):
    plain, as_json = cli_all(("actions",), ("actions", "-o", "json"))
    assert plain.stdout.splitlines() == [
        "dummy\tManage Site\tsleep,steps,fail,result\tDummy job",
        "prune\tManage Site\tdays,completed_days,failed_days,aborted_days,batch_size\t"
        "Prune finished jobs",
    ]
    assert json.loads(as_json.stdout) == api.job_actions()


def test_health(cli, server):
    proc = cli("health")
    assert proc.returncode == 0, proc.stderr
    # A testing server runs no scheduler, a check it does not need to be ready.
    assert re.fullmatch(
        f"ok {re.escape(server.url)}: /healthz/ready answered 200; database ok; broker ok"
        r"(; scheduler (ok|down \(not required\)))? in \d+ ms\n",
        proc.stdout,
    ), proc.stdout


def test_server_down_is_exit_6(cli_all):
    down = f"http://127.0.0.1:{free_port()}"
    health, abort = cli_all(("health", "-s", down), ("abort", "x", "--server", down))
    assert_fails(health, EXIT_UNAVAILABLE, f"can't reach {down}: connection refused")
    assert_fails(abort, EXIT_UNAVAILABLE, f"x: can't reach {down}: connection refused")


def test_admin_subcommands_still_take_an_ini_file(server, config_home):
    proc = run_cli(server, config_home, "users", "list", server.ini)
    assert proc.returncode == 0, proc.stderr
    assert [line.split("\t")[0] for line in proc.stdout.splitlines()] == ["admin", "alice", "carol"]


# --- stop, resume, restart -------------------------------------------------------------


def wait_for(check, timeout: float = 15, interval: float = 0.05):
    """``check()`` until it returns something true; that value. Fails at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r} after {timeout} s")
        time.sleep(interval)


def test_stop_and_resume(cli, api):
    uuid = long_job(api, "Stop me")
    proc = cli("stop", uuid)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"stopping {uuid}\n", "")
    assert api.wait_for_job(uuid, ("stopped",), timeout=15)["attempt"] == 1

    proc = cli("stop", uuid)
    assert_fails(proc, EXIT_CONFLICT, f"{uuid}: A stopped job can't be stopped.")

    proc = cli("resume", uuid, "-q")
    assert (proc.returncode, proc.stdout) == (0, f"{uuid}\n")
    assert api.wait_for_job(uuid, ("running",), timeout=15)["attempt"] == 2

    proc = cli("resume", uuid)
    assert_fails(proc, EXIT_CONFLICT, f"{uuid}: A running job can't be resumed.")
    api.abort_job(uuid)


def test_stop_a_job_that_cannot_resume_or_does_not_exist(cli, api):
    uuid = api.submit_job("prune")["uuid"]
    api.wait_for_job(uuid, ("completed",), timeout=15)
    missing = "6f0c2b1e-3d4a-4b5c-8d6e-7f8091a2b3c4"
    proc = cli("stop", uuid, missing)
    assert proc.returncode == EXIT_CONFLICT  # the first failure's status
    assert proc.stderr.splitlines() == [
        f"nick-jobs: {uuid}: Jobs of action 'prune' can't be stopped and resumed; "
        "abort it instead.",
        f"nick-jobs: {missing}: The resource you requested does not exist.",
    ]


def test_restart_shows_the_new_job(cli, api):
    old = api.submit_job("dummy", {"fail": "disk full"}, title="Again")["uuid"]
    api.wait_for_job(old, ("failed",), timeout=15)
    proc = cli("restart", old, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    new = json.loads(proc.stdout)
    assert (new["parent"], new["title"], new["status"]) == (old, "Again", "created")
    assert new["uuid"] != old

    proc = cli("restart", old, "-q")
    assert proc.returncode == 0, proc.stderr
    again = proc.stdout.strip()
    assert api.get_job(again)["parent"] == old

    running = long_job(api)
    proc = cli("restart", running)
    assert_fails(proc, EXIT_CONFLICT, "A running job can't be restarted.")
    api.abort_job(running)


# --- log and history -------------------------------------------------------------------


def test_log_follows_pages_in_every_format(cli_all, api):
    # 60 lines: two pages of the server's default 50.
    uuid = api.submit_job("dummy", {"steps": 60})["uuid"]
    api.wait_for_job(uuid, ("completed",), timeout=15)
    lines = api.job_log(uuid)
    assert len(lines) == 60
    plain, quiet, as_json, table, warnings = cli_all(
        ("log", uuid),
        ("log", uuid, "-q"),
        ("log", uuid, "-o", "json"),
        ("log", uuid, "-o", "table"),
        ("log", uuid, "--level", "warning"),
    )
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines() == [
        f"{line['time']}\tinfo\t1\tstep {n} of 60 done" for n, line in enumerate(lines, 1)
    ]
    assert quiet.stdout.splitlines() == [f"step {n} of 60 done" for n in range(1, 61)]
    assert json.loads(as_json.stdout) == lines
    first = lines[0]["time"].replace("T", " ").rstrip("Z")
    assert table.stdout.splitlines()[0] == f"{first}  info     #1  step 1 of 60 done"
    assert (warnings.returncode, warnings.stdout) == (0, "")


def test_log_refusals(cli_all):
    missing = "6f0c2b1e-3d4a-4b5c-8d6e-7f8091a2b3c4"
    not_found, bad_level = cli_all(("log", missing), ("log", missing, "--level", "loud"))
    assert_fails(not_found, EXIT_NOT_FOUND, "The resource you requested does not exist.")
    assert bad_level.returncode == EXIT_USAGE
    assert "invalid choice: 'loud'" in bad_level.stderr


def test_history_plain_json_and_quiet(cli_all, api):
    uuid = api.submit_job("dummy", {"fail": "disk full"})["uuid"]
    api.wait_for_job(uuid, ("failed",), timeout=15)
    api.retry_job(uuid)
    api.wait_for_job(uuid, ("failed",), timeout=15)
    history = api.job_history(uuid)
    plain, as_json, quiet, table = cli_all(
        ("history", uuid),
        ("history", uuid, "-o", "json"),
        ("history", uuid, "-q"),
        ("history", uuid, "-o", "table"),
    )
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["TIME", "EVENT", "BY", "ATTEMPT", "DETAILS"]
    assert rows[2].endswith("  JobFailed: disk full")
    assert rows[2].index("failed") == header.index("EVENT")
    assert plain.returncode == 0, plain.stderr
    rows = [line.split("\t") for line in plain.stdout.splitlines()]
    assert [row[1:4] for row in rows] == [
        ["created", "admin", "1"],
        ["started", "worker", "1"],
        ["failed", "worker", "1"],
        ["retried", "admin", "2"],
        ["started", "worker", "2"],
        ["failed", "worker", "2"],
    ]
    assert rows[2][4] == "JobFailed: disk full"
    assert rows[3][4] == "attempt 1 was failed"
    assert json.loads(as_json.stdout) == history
    assert quiet.stdout.split() == ["created", "started", "failed", "retried", "started", "failed"]


# --- scheduled jobs --------------------------------------------------------------------


def test_schedules_add_list_get_update_remove(cli, api, tmp_path):
    params_file = tmp_path / "params.json"
    params_file.write_text(json.dumps({"steps": 2, "sleep": 1}))
    proc = cli(
        "schedules",
        "add",
        "cli-nightly",
        "--action",
        "dummy",
        "--schedule",
        "30 2 * * *",
        "--params-file",
        params_file,
        "--timezone",
        "Europe/Amsterdam",
        "steps=3",  # key=value after the options, over the file
        "--title",
        "Nightly",
        "--disabled",
        "-o",
        "json",
    )
    assert proc.returncode == 0, proc.stderr
    created = json.loads(proc.stdout)
    assert created == api.get_scheduled_job("cli-nightly")
    assert (created["params"], created["enabled"], created["next_run"]) == (
        {"steps": 3, "sleep": 1},
        False,
        None,
    )
    assert (created["schedule"], created["timezone"], created["title"]) == (
        "30 2 * * *",
        "Europe/Amsterdam",
        "Nightly",
    )

    plain = cli("schedules", "list")
    assert plain.returncode == 0, plain.stderr
    assert [
        "cli-nightly",
        "no",
        "30 2 * * *",
        "Europe/Amsterdam",
        "dummy",
        "-",
        "Nightly",
    ] in [line.split("\t") for line in plain.stdout.splitlines()]
    assert "cli-nightly" in cli("schedules", "list", "-q").stdout.splitlines()
    header, *rows = cli("schedules", "list", "-o", "table").stdout.splitlines()
    assert header.split() == [
        "ID",
        "ENABLED",
        "SCHEDULE",
        "TIMEZONE",
        "ACTION",
        "NEXT",
        "RUN",
        "TITLE",
    ]
    (row,) = [row for row in rows if row.startswith("cli-nightly ")]
    assert row.index("Europe/Amsterdam") == header.index("TIMEZONE")
    assert row.endswith("  Nightly")

    proc = cli(
        "schedules", "update", "cli-nightly", "--enabled", "steps=5", "--schedule", "0 3 * * *"
    )
    assert proc.returncode == 0, proc.stderr
    fields = dict(line.split("\t", 1) for line in proc.stdout.splitlines())
    assert (fields["enabled"], fields["schedule"], fields["params"]) == (
        "yes",
        "0 3 * * *",
        '{"steps": 5}',
    )
    assert fields["next_run"] != "-"
    assert fields["title"] == "Nightly"  # what was not given stays

    got = cli("schedules", "get", "cli-nightly", "-o", "json")
    assert json.loads(got.stdout) == api.get_scheduled_job("cli-nightly")

    proc = cli("schedules", "remove", "cli-nightly")
    assert (proc.returncode, proc.stdout) == (0, "removed cli-nightly\n")
    proc = cli("schedules", "get", "cli-nightly")
    assert_fails(proc, EXIT_NOT_FOUND, "The resource you requested does not exist.")


def test_schedules_refusals(cli, cli_all, server, config_home, api):
    api.create_scheduled_job("cli-taken", "dummy", "0 2 * * *")
    taken, bad_cron, missing, no_schedule, nothing, action_param = cli_all(
        ("schedules", "add", "cli-taken", "--action", "dummy", "--schedule", "0 2 * * *"),
        ("schedules", "add", "cli-bad", "--action", "dummy", "--schedule", "0 2 * *"),
        ("schedules", "remove", "cli-missing"),
        ("schedules", "add", "cli-x", "--action", "dummy"),
        ("schedules", "update", "cli-taken"),
        ("schedules", "update", "cli-taken", "action=prune"),
    )
    assert_fails(taken, EXIT_CONFLICT, "A scheduled job with the id 'cli-taken' already exists.")
    assert bad_cron.returncode == 1
    assert bad_cron.stderr.startswith("nick-jobs: The request has invalid fields. (schedule: ")
    assert_fails(missing, EXIT_NOT_FOUND, "cli-missing: The resource you requested does not exist.")
    assert no_schedule.returncode == EXIT_USAGE
    assert "the following arguments are required: --schedule" in no_schedule.stderr
    assert_fails(
        nothing,
        EXIT_USAGE,
        "nothing to change: give --schedule, --action, params or another option",
    )
    assert_fails(action_param, EXIT_USAGE, "the action is --action, not a parameter")

    alice = server.client("alice").token
    proc = run_cli(server, config_home, "schedules", "list", NICK_JOBS_TOKEN=alice)
    assert_fails(proc, EXIT_AUTH, "You are not authorized to access this resource.")
    api.delete_scheduled_job("cli-taken")


def test_a_reader_that_went_away_ends_the_command_quietly(server, config_home, api):
    uuid = api.submit_job("dummy", {"steps": 3})["uuid"]
    api.wait_for_job(uuid, ("completed",), timeout=15)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line is written
    try:
        proc = subprocess.run(
            [str(SCRIPT), "log", uuid],
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(server, config_home),
            timeout=30,
        )
    finally:
        os.close(write_end)
    assert (proc.returncode, proc.stderr) == (141, "")


def test_a_schedule_disabled_by_a_refused_firing_says_so():
    from nick_jobs_client.cli.commands import schedule_fields, schedule_row

    refused = {
        "id": "alices-prune",
        "enabled": False,
        "skipped": {
            "slot": "2026-01-05T00:00:00+00:00",
            "at": "2026-01-05T00:00:02+00:00",
            "reason": "owner_lacks_permission",
            "message": "Its owner 'alice' no longer has the permission 'Manage Site'.",
        },
    }
    assert schedule_row(refused)[1] == "no (refused)"
    fields = dict(schedule_fields(refused))
    assert fields["enabled"] == "no (refused)"
    assert fields["refused"].endswith(
        ": Its owner 'alice' no longer has the permission 'Manage Site'."
    )
    assert "2026-01-05" in fields["refused"]
    by_hand = {"id": "off", "enabled": False, "skipped": None}
    assert schedule_row(by_hand)[1] == "no"
    assert "refused" not in dict(schedule_fields(by_hand))
