"""``GET /@jobs/{uuid}/log?follow=true``: one job's log lines as a stream, from its first
line, each line's id its event id, then ``close`` once the job has ended.

Read over real HTTP from a waitress server (``tests/streams/test_streams.py``), on every
backend.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from nick_jobs.db.after_commit import transaction
from nick_jobs.db.meta import utcnow
from nick_jobs.jobs import lifecycle
from tests.conftest import attempt_of, reset_database
from tests.streams.test_streams import (
    EventStream,
    bearer,
    gate_params,
    messages,
    serving,
    wait_for_hub,
)

LOG_KEYS = {"uuid", "attempt", "time", "level", "message"}


def stored_lines(app, uuid: str) -> list[str]:
    lines = app.get(f"/@jobs/{uuid}/log?b_size=1000", headers=app.auth()).json
    return [line["message"] for line in lines]


def read_until(stream: EventStream, message: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    while message not in messages(seen):
        event = stream.next()
        assert event is not None, "the stream ended early"
        seen.append(event)
    return seen


def parse_events(text: str) -> list[dict[str, str]]:
    blocks = [b for b in text.split("\n\n") if b.startswith(("id:", "event:"))]
    return [dict(line.split(": ", 1) for line in block.split("\n")) for block in blocks]


def test_a_log_stream_sends_the_jobs_lines_then_close(app, tmp_path):
    params, gate = gate_params(tmp_path, before=3, after=3)
    job = app.submit(params)
    uuid = job["uuid"]
    with serving(app) as address:
        stream = EventStream(address, f"/@jobs/{uuid}/log?follow=true", bearer(app))
        assert stream.status == 200
        assert stream.response.getheader("Content-Type") == "text/event-stream; charset=utf-8"
        assert stream.response.getheader("Cache-Control") == "no-cache, no-store"
        seen = read_until(stream, "before 3")
        assert stream.retry == 2000
        gate.touch()
        events = seen + stream.until_close()
    # Log lines alone, from the job's first one, then the close.
    assert [e["event"] for e in events] == ["log"] * 6 + ["close"]
    assert messages(events) == [f"before {n}" for n in (1, 2, 3)] + [
        f"after {n}" for n in (1, 2, 3)
    ]
    assert messages(events) == stored_lines(app, uuid)
    assert events[-1] == {"event": "close", "data": {"reason": "finished", "reconnect": False}}
    first = events[0]["data"]
    assert set(first) == LOG_KEYS
    assert (first["uuid"], first["attempt"], first["level"]) == (uuid, 1, "info")
    stored = app.get(f"/@jobs/{uuid}/log", headers=app.auth()).json[0]
    # The line as GET .../log shows it, with the job's uuid.
    assert {k: first[k] for k in stored} == stored
    ids = [int(e["id"]) for e in events[:-1]]
    assert ids == sorted(set(ids)), "each line's id, growing"


def test_reconnecting_a_log_stream_misses_no_line_and_repeats_none(app, tmp_path):
    params, gate = gate_params(tmp_path, before=30, after=30)
    uuid = app.submit(params)["uuid"]
    with serving(app) as address:
        path = f"/@jobs/{uuid}/log?follow=true"
        first = EventStream(address, path, bearer(app))
        seen = read_until(first, "before 12")
        first.close()
        gate.touch()
        app.wait_for(uuid, "completed")
        second = EventStream(address, path, {**bearer(app), "Last-Event-ID": seen[-1]["id"]})
        rest = second.until_close()
    assert messages(seen) + messages(rest) == stored_lines(app, uuid)
    assert messages(rest)[0] == "before 13"
    assert rest[-1]["data"] == {"reason": "finished", "reconnect": False}


def test_the_log_stream_of_a_finished_job_is_its_log_then_close(app):
    job = app.submit({"action": "dummy", "steps": 2})
    uuid = job["uuid"]
    app.wait_for(uuid, "completed")
    # A stream that ends by itself can be read whole, even through WebTest.
    response = app.get(f"/@jobs/{uuid}/log?follow=true", headers=app.auth())
    assert response.content_type == "text/event-stream"
    assert response.text.startswith("retry: 2000\n\n")
    events = parse_events(response.text)
    assert [e["event"] for e in events] == ["log", "log", "close"]
    lines = [json.loads(e["data"]) for e in events[:2]]
    assert [line["message"] for line in lines] == ["step 1 of 2 done", "step 2 of 2 done"]
    assert json.loads(events[2]["data"]) == {"reason": "finished", "reconnect": False}
    assert "id" not in events[2]
    # Resuming after its last line: just the close.
    headers = {**app.auth(), "Last-Event-ID": events[1]["id"]}
    again = app.get(f"/@jobs/{uuid}/log?follow=true", headers=headers)
    assert [e["event"] for e in parse_events(again.text)] == ["close"]


def _logged_job(app, levels: list[int], end: str = "complete") -> str:
    """A job that logged one line per level (message: its level's number), then ended."""
    uuid = app.submit({"action": "dummy"})["uuid"]
    with transaction(app.backend.engine) as conn:
        lifecycle.start(conn, uuid)
        lines = [
            {"job_uuid": uuid, "attempt": 1, "time": utcnow(), "level": level}
            | {"message": str(level)}
            for level in levels
        ]
        lifecycle.insert_lines(conn, lines)
        if end == "complete":
            assert lifecycle.complete(conn, attempt_of(uuid, 1), {})
        else:
            assert lifecycle.stopped(conn, attempt_of(uuid, 1), 1)
    return uuid


def test_a_log_stream_takes_the_logs_level_and_cursor(app_without_worker):
    app = app_without_worker
    uuid = _logged_job(app, [10, 20, 30, 40, 20, 30])
    text = app.get(f"/@jobs/{uuid}/log?follow=true&level=warning", headers=app.auth()).text
    events = parse_events(text)
    assert [json.loads(e["data"])["message"] for e in events[:-1]] == ["30", "40", "30"]
    assert [json.loads(e["data"])["level"] for e in events[:-1]] == [
        "warning",
        "error",
        "warning",
    ]
    # The cursor of a page of GET .../log: the stream goes on after that page.
    page = app.get(f"/@jobs/{uuid}/log?b_size=2", headers=app.auth())
    after = page.headers["Link"].split("cursor=", 1)[1].split(">", 1)[0]
    text = app.get(f"/@jobs/{uuid}/log?follow=true&cursor={after}", headers=app.auth()).text
    events = parse_events(text)
    assert [json.loads(e["data"])["message"] for e in events[:-1]] == ["30", "40", "20", "30"]


def test_a_stopped_job_ends_its_log_stream(app_without_worker):
    app = app_without_worker
    uuid = _logged_job(app, [20], end="stop")
    events = parse_events(app.get(f"/@jobs/{uuid}/log?follow=true", headers=app.auth()).text)
    assert [e["event"] for e in events] == ["log", "close"]
    assert json.loads(events[1]["data"]) == {"reason": "stopped", "reconnect": False}


def test_an_aborted_or_deleted_job_ends_its_log_stream(app_without_worker):
    app = app_without_worker
    aborted = app.submit({"action": "dummy"})["uuid"]
    deleted = app.submit({"action": "dummy"})["uuid"]
    with serving(app) as address:
        streams = {
            uuid: EventStream(address, f"/@jobs/{uuid}/log?follow=true", bearer(app))
            for uuid in (aborted, deleted)
        }
        wait_for_hub(app, streams=2, polls=1)
        app.post(f"/@jobs/{aborted}/abort", headers=app.auth(), status=204)
        app.delete(f"/@jobs/{deleted}", headers=app.auth(), status=204)
        assert streams[aborted].until_close() == [
            {"event": "close", "data": {"reason": "finished", "reconnect": False}}
        ]
        assert streams[deleted].until_close() == [
            {"event": "close", "data": {"reason": "deleted", "reconnect": False}}
        ]


def test_a_log_stream_has_the_jobs_authorization_and_the_stream_caps(make_app, backend):
    reset_database(backend.engine)
    app = make_app(**{"nick_jobs.stream_max_per_user": "1"})
    job = app.submit({"action": "echo", "message": "hi"}, login="alice")
    path = f"/@jobs/{job['uuid']}/log?follow=true"
    assert app.get(path, status=401).json["error"]["type"] == "Unauthorized"
    assert app.get(path, headers=app.auth("bob"), status=404).json["error"]["type"] == "Not found"
    app.wait_for(job["uuid"], "completed", login="alice")
    with serving(app) as address:
        # The all-jobs stream stays open: it holds alice's one slot.
        held = EventStream(address, "/@jobs/stream", bearer(app, "alice"))
        assert held.status == 200
        refused = EventStream(address, path, bearer(app, "alice"))
        assert refused.status == 503
        assert refused.response.getheader("Retry-After") == "5"
        assert refused.json()["error"]["type"] == "Too many streams"
        held.close()
    assert app.get(path, headers=app.auth("admin")).content_type == "text/event-stream"


@pytest.mark.parametrize(
    ("query", "headers", "message"),
    [
        ("follow=maybe", {}, "follow takes true or false."),
        ("follow=true&b_size=10", {}, "A followed log is not paged: leave out b_size."),
        (
            "follow=true",
            {"Last-Event-ID": "3.0.0"},
            "Last-Event-ID is not an event id this service wrote.",
        ),
    ],
)
def test_a_log_stream_refuses_what_it_cannot_follow(app_without_worker, query, headers, message):
    app = app_without_worker
    uuid = app.submit({"action": "dummy"})["uuid"]
    res = app.get(f"/@jobs/{uuid}/log?{query}", headers={**app.auth(), **headers}, status=400)
    assert res.json["error"] == {"type": "Bad request", "message": message}
    assert app.app.registry["nick_jobs.stream_limits"].open == 0


def test_without_follow_the_log_is_a_page(app_without_worker):
    app = app_without_worker
    uuid = _logged_job(app, [20, 30])
    for query in ("", "?follow=false"):
        res = app.get(f"/@jobs/{uuid}/log{query}", headers=app.auth())
        assert res.content_type == "application/json"
        assert [line["message"] for line in res.json] == ["20", "30"]
