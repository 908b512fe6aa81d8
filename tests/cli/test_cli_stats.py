"""``nick-jobs stats`` and ``Client.stats()``: the real console script and client against a
live server (``GET /@jobs/@stats``)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from nick_jobs_client import JOB_STATUSES, Client, ClientError
from nick_jobs_client.cli.commands import (
    EXIT_AUTH,
    EXIT_USAGE,
    NO_JOBS,
    SPARKS,
    duration_text,
    spark_groups,
    sparkline,
)
from tests.cli.test_client_cli import assert_fails, run_cli
from tests.client.test_client import LiveServer, live_server

OUTCOMES = ("completed", "failed", "aborted")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("cli-stats")) as live:
        yield live


def finished(api: Client, *params: dict[str, Any]) -> list[dict[str, Any]]:
    """Submit a ``dummy`` job with each of ``params`` and wait until each has ended."""
    uuids = [api.submit_job("dummy", p)["uuid"] for p in params]
    return [api.wait_for_job(uuid, timeout=15) for uuid in uuids]


def totals(body: dict[str, Any]) -> dict[str, int]:
    minutes = body["finished_per_minute"]
    return {outcome: sum(m[outcome] for m in minutes) for outcome in OUTCOMES}


@contextlib.contextmanager
def one_waiting_job(api: Client) -> Iterator[str]:
    """A job that waits: the server's two worker threads each run a long job meanwhile.
    All three are aborted after."""
    long = [api.submit_job("dummy", {"sleep": 300, "steps": 300})["uuid"] for _ in range(2)]
    try:
        for uuid in long:
            api.wait_for_job(uuid, ("running",), timeout=15)
        waiting = api.submit_job("dummy", {})["uuid"]
        long.append(waiting)
        yield waiting
    finally:
        for uuid in long:
            with contextlib.suppress(ClientError):
                api.abort_job(uuid)
        for uuid in long:
            api.wait_for_job(uuid, ("aborted", "completed"), timeout=15)


# --- the client ------------------------------------------------------------------------


def test_client_stats_counts_what_finished_and_only_for_whom(server, api):
    before = api.stats()
    jobs = finished(api, {}, {}, {"fail": "disk full"})
    assert [job["status"] for job in jobs] == ["completed", "completed", "failed"]
    after = api.stats()

    assert after["total"] == before["total"] + 3
    assert after["counts"]["completed"] == before["counts"]["completed"] + 2
    assert after["counts"]["failed"] == before["counts"]["failed"] + 1
    assert after["by_action"]["dummy"]["total"] >= 3
    # The module's jobs all finished minutes ago at most: none leaves the hour between
    # the two reads, even if the window moves on by a minute.
    gained = {o: totals(after)[o] - totals(before)[o] for o in OUTCOMES}
    assert gained == {"completed": 2, "failed": 1, "aborted": 0}
    assert after["window"] == 60
    assert len(after["finished_per_minute"]) == 60

    # Alice has no jobs of her own: her figures are zeros, whatever the admin's are.
    alice = server.client("alice").stats()
    assert alice["total"] == 0
    assert alice["counts"] == dict.fromkeys(JOB_STATUSES, 0)
    assert alice["by_action"] == {}
    assert totals(alice) == dict.fromkeys(OUTCOMES, 0)


def test_client_stats_window_and_refusals(server, api):
    body = api.stats(minutes=5)
    assert body["window"] == 5
    assert len(body["finished_per_minute"]) == 5
    assert body["@id"] == f"{server.url}/@jobs/@stats"

    with pytest.raises(ClientError) as refused:
        api.stats(minutes=0)
    assert (refused.value.status, refused.value.type) == (400, "Validation error")
    assert list(refused.value.error["fields"]) == ["minutes"]

    with pytest.raises(ClientError) as anonymous:
        Client(server.url).stats()
    assert (anonymous.value.status, anonymous.value.type) == (401, "Unauthorized")


# --- the command -----------------------------------------------------------------------


def test_stats_json_is_the_apis_answer(cli, api):
    finished(api, {})
    proc = cli("stats", "--minutes", "3", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    expected = api.stats(minutes=3)
    # Nothing runs now: only the moment it was read differs.
    assert shown.pop("generated").endswith("Z")
    expected.pop("generated")
    if shown["finished_per_minute"] != expected["finished_per_minute"]:
        # The minute turned between the two reads: the counts still agree.
        assert totals(shown)["completed"] >= 1
        shown.pop("finished_per_minute")
        expected.pop("finished_per_minute")
    assert shown == expected
    assert shown["window"] == 3


def test_stats_table_shows_counts_actions_the_oldest_waiting_job_and_minutes(cli, api):
    finished(api, {}, {"fail": "no"})
    with one_waiting_job(api) as waiting:
        proc = cli("stats", "-o", "table", COLUMNS="100")
        body = api.stats()
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()

    assert lines[0].split() == ["STATUS", "JOBS"]
    assert [line.split() for line in lines[1:8]] == [
        *([status, str(n)] for status, n in body["counts"].items()),
        ["total", str(body["total"])],
    ]
    assert body["counts"]["created"] == 1
    assert body["counts"]["running"] == 2
    header = lines.index("ACTION  TOTAL  CREATED  RUNNING  COMPLETED  FAILED  ABORTED  STOPPED")
    dummy = body["by_action"]["dummy"]
    assert lines[header + 1].split() == [
        "dummy",
        str(dummy["total"]),
        *(str(dummy[s]) for s in JOB_STATUSES),
    ]

    oldest = next(line for line in lines if line.startswith("oldest waiting: "))
    assert f"  {waiting}  dummy  admin  (since " in oldest

    title = next(line for line in lines if line.startswith("finished, "))
    assert title.endswith(f" UTC, one mark a minute, {SPARKS[-1]} = {max_minute(body)}:")
    marks = {line.split()[0]: line.split()[1:] for line in lines[lines.index(title) + 1 :]}
    assert set(marks) == set(OUTCOMES)
    for outcome in OUTCOMES:
        spark, total = marks[outcome]
        assert len(spark) == 60
        assert int(total) == totals(body)[outcome]
        assert spark.count(NO_JOBS) == sum(m[outcome] == 0 for m in body["finished_per_minute"])
    assert all(len(line) <= 100 for line in lines if not line.startswith("oldest"))


def max_minute(body: dict[str, Any]) -> int:
    return max(m[o] for m in body["finished_per_minute"] for o in OUTCOMES)


def test_stats_plain_is_one_tab_separated_line_per_figure(cli, api):
    finished(api, {})
    with one_waiting_job(api) as waiting:
        proc = cli("stats", "--minutes", "10")
        body = api.stats(minutes=10)
        quiet = cli("stats", "--minutes", "10", "-q")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert quiet.stdout.splitlines()[:7] == proc.stdout.splitlines()[:7]

    assert [r[1:] for r in rows if r[0] == "status"] == [
        [status, str(n)] for status, n in body["counts"].items()
    ]
    assert [r for r in rows if r[0] == "total"] == [["total", str(body["total"])]]
    dummy = body["by_action"]["dummy"]
    assert [r for r in rows if r[0] == "action"] == [
        ["action", "dummy", str(dummy["total"]), *(str(dummy[s]) for s in JOB_STATUSES)]
    ]
    (oldest,) = [r for r in rows if r[0] == "oldest_waiting"]
    assert oldest[1:4] == [waiting, "dummy", "admin"]
    assert float(oldest[4]) >= 0
    minutes = [r for r in rows if r[0] == "minute"]
    assert len(minutes) == 10
    assert all(r[1].endswith(":00") for r in minutes)
    shown = {r[1]: [int(n) for n in r[2:]] for r in minutes}
    read = {
        m["minute"].replace("T", " ")[:19]: [m[o] for o in OUTCOMES]
        for m in body["finished_per_minute"]
    }
    # The same minutes, but for one if the minute turned between the two reads.
    assert len(shown.keys() & read.keys()) >= 9
    assert all(shown[minute] == read[minute] for minute in shown.keys() & read.keys())

    after = cli("stats")
    assert "oldest_waiting\t-" in after.stdout.splitlines()


def test_stats_minutes_out_of_range_is_a_usage_error(cli):
    for value in ("0", "1441", "ten"):
        proc = cli("stats", "--minutes", value)
        assert proc.returncode == EXIT_USAGE, proc.stderr
        assert proc.stdout == ""
        assert "argument --minutes: " in proc.stderr


def test_stats_of_another_user_and_without_logging_in(server, cli, tmp_path):
    alice = server.client("alice")
    proc = cli("stats", "-o", "json", "--token", alice.token)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["total"] == 0

    assert_fails(
        run_cli(server, tmp_path, "stats"),
        EXIT_AUTH,
        "You are not authorized to access this resource. "
        f"(log in with: nick-jobs login -s {server.url})",
    )


# --- the sparkline ---------------------------------------------------------------------


def test_sparkline_scales_to_the_top_and_shows_none_as_a_dot():
    assert sparkline([0, 1, 4, 8], 8) == f"{NO_JOBS}{SPARKS[0]}{SPARKS[3]}{SPARKS[7]}"
    assert sparkline([1], 1) == SPARKS[-1]
    assert sparkline([1, 2, 3], 300) == SPARKS[0] * 3  # one job is never a dot
    assert sparkline([0, 0], 0) == NO_JOBS * 2


def test_spark_groups_end_with_the_last_minute():
    assert spark_groups([1, 2, 3], 10) == [1, 2, 3]
    assert spark_groups(list(range(10)), 5) == [1, 5, 9, 13, 17]
    # 10 minutes in at most 4 marks: 3 a mark, the first mark holding the odd one.
    assert spark_groups([1] * 10, 4) == [1, 3, 3, 3]
    assert sum(spark_groups(list(range(1440)), 76)) == sum(range(1440))
    assert len(spark_groups(list(range(1440)), 76)) <= 76


def test_durations_read_in_two_units():
    assert duration_text(1.5) == "1.5s"
    assert duration_text(250) == "4m 10s"
    assert duration_text(3900) == "1h 05m"
    assert duration_text(2 * 86_400 + 3 * 3600 + 59) == "2d 3h"
