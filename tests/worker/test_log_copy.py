"""A job's log lines in the process log: at most ``nick_jobs.job_log_copy_rate`` a second,
then one line saying how many were left out; the job's own log keeps every line."""

from __future__ import annotations

import logging
import re
import time

import pytest

from nick_jobs.settings import ConfigurationError, parse
from tests.conftest import base_settings
from tests.jobs.test_progress import make_job, runner_for

JOB_LOGGER = "nick_jobs.job"
LEFT_OUT = re.compile(r"job (\S+): (\d+) log lines left out of the process log")


def copied_and_left_out(records: list[logging.LogRecord], uuid: str) -> tuple[list[str], int]:
    """The lines of job ``uuid`` copied to the process log, and the sum of the counts its
    "left out" lines give."""
    copied, left_out = [], 0
    for record in records:
        if record.name != JOB_LOGGER:
            continue
        message = record.getMessage()
        summary = LEFT_OUT.match(message)
        if summary and summary.group(1) == uuid:
            left_out += int(summary.group(2))
        elif message.startswith(f"job {uuid}: "):
            copied.append(message.removeprefix(f"job {uuid}: "))
    return copied, left_out


def all_log_lines(client, uuid: str) -> list[str]:
    url, seen = f"/@jobs/{uuid}/log?b_size=1000", []
    while url:
        response = client.get(url, headers=client.auth())
        seen += [line["message"] for line in response.json]
        link = response.headers.get("Link")
        url = link[1 : link.index(">")].removeprefix("http://localhost:8080") if link else None
    return seen


def test_a_flood_of_lines_is_copied_at_the_rate_and_kept_whole_in_the_job_s_log(
    app_without_worker, caplog
):
    client = app_without_worker
    engine = client.app.registry["nick_jobs.engine"]
    total, bursts = 10_000, 5

    def flood(params, ctx):
        # As fast as it can, in bursts over a few seconds: several windows of the rate.
        for burst in range(bursts):
            for i in range(total // bursts):
                ctx.info(f"line {burst * (total // bursts) + i}")
            ctx.sleep(0.5)

    uuid = make_job(engine, "flood")
    caplog.set_level(logging.INFO, logger=JOB_LOGGER)
    started = time.monotonic()
    assert runner_for(engine, flood=flood).run(uuid) == "completed"
    seconds = time.monotonic() - started

    copied, left_out = copied_and_left_out(caplog.records, uuid)
    # At most 10 a second (a first window, plus one per second begun after it).
    assert 10 <= len(copied) <= 10 * (int(seconds) + 1)
    assert copied[:10] == [f"line {i}" for i in range(10)]
    # Every line is either copied or counted, the last window's at the job's end.
    assert len(copied) + left_out == total
    # The job's log has every line, in order.
    assert all_log_lines(client, uuid) == [f"line {i}" for i in range(total)]


def test_the_left_out_line_has_the_level_of_the_loudest_line_it_counts(app_without_worker, caplog):
    engine = app_without_worker.app.registry["nick_jobs.engine"]

    def handler(params, ctx):
        for i in range(30):
            ctx.log(f"line {i}", level="error" if i == 20 else "info")

    uuid = make_job(engine, "loud")
    caplog.set_level(logging.INFO, logger=JOB_LOGGER)
    assert runner_for(engine, loud=handler).run(uuid) == "completed"
    summaries = [r for r in caplog.records if LEFT_OUT.match(r.getMessage())]
    assert [(r.levelno, LEFT_OUT.match(r.getMessage()).group(2)) for r in summaries] == [
        (logging.ERROR, "20")
    ]


def test_lines_the_process_log_would_drop_use_none_of_the_rate(app_without_worker, caplog):
    engine = app_without_worker.app.registry["nick_jobs.engine"]

    def handler(params, ctx):
        for i in range(100):
            ctx.debug(f"detail {i}")
        for i in range(5):
            ctx.info(f"line {i}")

    uuid = make_job(engine, "chatty")
    caplog.set_level(logging.INFO, logger=JOB_LOGGER)
    assert runner_for(engine, chatty=handler).run(uuid) == "completed"
    copied, left_out = copied_and_left_out(caplog.records, uuid)
    assert (copied, left_out) == ([f"line {i}" for i in range(5)], 0)


def test_a_rate_of_0_copies_every_line(app_without_worker, caplog):
    engine = app_without_worker.app.registry["nick_jobs.engine"]

    def handler(params, ctx):
        for i in range(500):
            ctx.info(f"line {i}")

    uuid = make_job(engine, "all")
    caplog.set_level(logging.INFO, logger=JOB_LOGGER)
    runner = runner_for(engine, all=handler)
    runner.log_copy_rate = 0
    assert runner.run(uuid) == "completed"
    assert copied_and_left_out(caplog.records, uuid) == ([f"line {i}" for i in range(500)], 0)


def test_the_rate_is_a_setting_the_worker_uses(make_app):
    app = make_app(**{"nick_jobs.job_log_copy_rate": "3", "nick_jobs.embedded_worker_threads": "0"})
    assert app.app.registry["nick_jobs.queue"].runner.log_copy_rate == 3
    assert parse(base_settings(**{"sqlalchemy.url": "sqlite://"})).job_log_copy_rate == 10


@pytest.mark.parametrize("value", ["-1", "ten", "2.5"])
def test_the_rate_takes_a_whole_number_from_0(value):
    with pytest.raises(ConfigurationError, match="job_log_copy_rate"):
        parse(
            base_settings(**{"sqlalchemy.url": "sqlite://", "nick_jobs.job_log_copy_rate": value})
        )
