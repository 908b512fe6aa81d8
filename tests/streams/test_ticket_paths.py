"""What a stream ticket opens: the all-jobs stream, one job's stream and one job's followed
log, each exactly the path it was issued for; a stream named from the API's root under a
path prefix; and ``last_event_id``, the ``Last-Event-ID`` of a reader that can't send
headers (an ``EventSource`` opened anew with a fresh ticket).

Finished jobs' streams end by themselves, so WebTest reads them whole; the all-jobs stream
never ends and is read over real HTTP (``tests/streams/test_streams.py``). Every backend.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from nick_jobs.db.after_commit import transaction
from nick_jobs.db.meta import utcnow
from nick_jobs.jobs import lifecycle
from tests.conftest import Client, attempt_of
from tests.streams.test_streams import EventStream, serving

TICKET_MESSAGE = (
    'Give the stream to open as {"stream": "/@jobs/<uuid>/stream"}, '
    '{"stream": "/@jobs/stream"} or {"stream": "/@jobs/<uuid>/log?follow=true"}.'
)


def finished_job(app: Client, messages: list[str], login: str = "admin") -> str:
    """A completed job of ``login`` that logged ``messages``, one line each."""
    uuid = app.submit({"action": "echo", "message": "hi"}, login=login)["uuid"]
    with transaction(app.backend.engine) as conn:
        lifecycle.start(conn, uuid)
        lines = [
            {"job_uuid": uuid, "attempt": 1, "time": utcnow(), "level": 20, "message": message}
            for message in messages
        ]
        lifecycle.insert_lines(conn, lines)
        assert lifecycle.complete(conn, attempt_of(uuid, 1, action="echo", actor=login), {})
    return uuid


def events(text: str) -> list[dict[str, Any]]:
    blocks = [b for b in text.split("\n\n") if b.startswith(("id:", "event:"))]
    parsed = [dict(line.split(": ", 1) for line in block.split("\n")) for block in blocks]
    for event in parsed:
        event["data"] = json.loads(event["data"])
    return parsed


def log_messages(text: str) -> list[str]:
    return [e["data"]["message"] for e in events(text) if e["event"] == "log"]


def ticket_for(app: Client, stream: str, login: str = "admin", **kw: Any) -> dict[str, Any]:
    return app.post_json(
        "/@stream-tickets", {"stream": stream}, headers=app.auth(login), status=201, **kw
    ).json


# --- the followed log ----------------------------------------------------------------------


def test_a_ticket_opens_a_jobs_followed_log(app_without_worker):
    app = app_without_worker
    uuid = finished_job(app, ["one", "two"], login="alice")
    answer = ticket_for(app, f"/@jobs/{uuid}/log?follow=true", login="alice")
    assert answer["url"] == (
        f"http://localhost:8080/@jobs/{uuid}/log?follow=true&ticket={answer['ticket']}"
    )
    # The URL it answers with is the stream, read without any header.
    opened = app.get(answer["url"].removeprefix("http://localhost:8080"))
    assert opened.content_type == "text/event-stream"
    assert log_messages(opened.text) == ["one", "two"]
    assert events(opened.text)[-1]["data"] == {"reason": "finished", "reconnect": False}


def test_a_log_ticket_opens_that_log_followed_and_nothing_else(app_without_worker):
    app = app_without_worker
    job, other = finished_job(app, ["a"]), finished_job(app, ["b"])
    ticket = ticket_for(app, f"/@jobs/{job}/log?follow=true")["ticket"]
    assert log_messages(app.get(f"/@jobs/{job}/log?follow=true&ticket={ticket}").text) == ["a"]
    refused = [
        f"/@jobs/{other}/log?follow=true&ticket={ticket}",  # another job's log
        f"/@jobs/{job}/log?ticket={ticket}",  # the plain log page
        f"/@jobs/{job}/log?follow=false&ticket={ticket}",
        f"/@jobs/{job}/log?follow=1&ticket={ticket}",  # a stream, but not as the ticket says
        f"/@jobs/{job}/stream?ticket={ticket}",  # the job's other stream
        f"/@jobs/{job}/log/?follow=true&ticket={ticket}",  # not the same path
        f"/@jobs/{job}?ticket={ticket}",
        f"/@jobs/{job}/history?ticket={ticket}",
    ]
    for url in refused:
        body = app.get(url, status=401).json
        assert body["error"]["type"] == "Unauthorized", url
    # Nor a prefix the ticket was not issued under, nor a method other than GET.
    app.get(f"/x/@jobs/{job}/log?follow=true&ticket={ticket}", status=(401, 404))
    app.post(f"/@jobs/{job}/log?follow=true&ticket={ticket}", status=(401, 404, 405))
    # And a ticket for the job's stream does not open its log.
    stream_ticket = ticket_for(app, f"/@jobs/{job}/stream")["ticket"]
    app.get(f"/@jobs/{job}/log?follow=true&ticket={stream_ticket}", status=401)
    app.get(f"/@jobs/{job}/stream?ticket={stream_ticket}", status=200)


def test_a_users_ticket_opens_no_log_of_anothers_job(app_without_worker):
    app = app_without_worker
    admins = finished_job(app, ["admin's line"], login="admin")
    alices = finished_job(app, ["alice's line"], login="alice")
    # A ticket names a path, not a permission: the stream's own check refuses it.
    ticket = ticket_for(app, f"/@jobs/{admins}/log?follow=true", login="alice")["ticket"]
    body = app.get(f"/@jobs/{admins}/log?follow=true&ticket={ticket}", status=404).json
    assert body["error"]["type"] == "Not found"
    assert "admin's line" not in json.dumps(body)
    ticket = ticket_for(app, f"/@jobs/{alices}/log?follow=true", login="bob")["ticket"]
    app.get(f"/@jobs/{alices}/log?follow=true&ticket={ticket}", status=404)
    # An administrator sees every job's log.
    ticket = ticket_for(app, f"/@jobs/{alices}/log?follow=true", login="admin")["ticket"]
    text = app.get(f"/@jobs/{alices}/log?follow=true&ticket={ticket}").text
    assert log_messages(text) == ["alice's line"]


@pytest.mark.parametrize(
    "stream",
    [
        "/@jobs/{uuid}/log",
        "/@jobs/{uuid}/log?follow=false",
        "/@jobs/{uuid}/log?follow=1",
        "/@jobs/not-a-uuid/log?follow=true",
        "/@jobs/{uuid}/history",
        "/@jobs/{uuid}",
        "/@jobs/{uuid}/stream/log?follow=true",
        "http://[/@jobs/stream",  # not even a URL
    ],
)
def test_a_ticket_request_names_a_stream_it_can_open(app_without_worker, stream):
    app = app_without_worker
    uuid = finished_job(app, [])
    body = {"stream": stream.format(uuid=uuid)}
    error = app.post_json("/@stream-tickets", body, headers=app.auth(), status=400).json
    assert error == {"error": {"type": "Bad request", "message": TICKET_MESSAGE}}


# --- a stream named from the API's root --------------------------------------------------


def test_a_stream_named_from_the_root_is_bound_under_the_path_prefix(app_without_worker):
    app = app_without_worker
    uuid = finished_job(app, ["one"])
    prefixed = {"SCRIPT_NAME": "/api"}
    for path, query in [
        (f"/@jobs/{uuid}/stream", ""),
        (f"/@jobs/{uuid}/log", "?follow=true"),
        ("/@jobs/stream", ""),
    ]:
        # Named from the root, as a client that knows only its base URL names it, or by
        # the whole path the server sees: the same stream either way.
        for given in (path, "/api" + path, "http://localhost:8080/api" + path):
            answer = ticket_for(app, given + query, extra_environ=prefixed)
            ticket_query = f"{query}&" if query else "?"
            opens = f"{path}{ticket_query}ticket={answer['ticket']}"
            assert answer["url"] == "http://localhost:8080/api" + opens
            if path != "/@jobs/stream":  # which never ends: WebTest can't read it
                opened = app.get(opens, extra_environ=prefixed)
                assert opened.content_type == "text/event-stream"
            # Without the prefix the server sees another path, which the ticket doesn't open.
            app.get(opens, status=401)


# --- last_event_id -------------------------------------------------------------------------


def test_last_event_id_resumes_a_log_stream_like_the_header(app_without_worker):
    app = app_without_worker
    uuid = finished_job(app, ["one", "two", "three"])
    path = f"/@jobs/{uuid}/log?follow=true"
    ids = [e["id"] for e in events(app.get(path, headers=app.auth()).text) if "id" in e]
    assert len(ids) == 3
    by_query = app.get(f"{path}&last_event_id={ids[0]}", headers=app.auth()).text
    by_header = app.get(path, headers={**app.auth(), "Last-Event-ID": ids[0]}).text
    assert log_messages(by_query) == log_messages(by_header) == ["two", "three"]
    # With a ticket, which is where it is needed.
    ticket = ticket_for(app, path)["ticket"]
    resumed = app.get(f"{path}&ticket={ticket}&last_event_id={ids[1]}").text
    assert log_messages(resumed) == ["three"]
    # The header wins: an EventSource reconnecting by itself sends the later id it reached.
    both = app.get(
        f"{path}&last_event_id={ids[0]}", headers={**app.auth(), "Last-Event-ID": ids[1]}
    )
    assert log_messages(both.text) == ["three"]


def test_last_event_id_resumes_a_job_stream(app_without_worker):
    app = app_without_worker
    uuid = finished_job(app, ["one"])
    path = f"/@jobs/{uuid}/stream"
    fresh = events(app.get(path, headers=app.auth()).text)
    assert [e["event"] for e in fresh] == ["status", "close"]
    ticket = ticket_for(app, path)["ticket"]
    resumed = app.get(f"{path}?ticket={ticket}&last_event_id={fresh[0]['id']}").text
    # Nothing changed since that status: only the close of the finished job.
    assert [e["event"] for e in events(resumed)] == ["close"]


def test_last_event_id_resumes_the_all_jobs_stream_with_a_ticket(app_without_worker):
    app = app_without_worker
    first, second = finished_job(app, []), finished_job(app, [])
    with serving(app) as address:
        # From the start of the change counter: both jobs as they are now, in change order.
        ticket = ticket_for(app, "/@jobs/stream")["ticket"]
        stream = EventStream(address, f"/@jobs/stream?ticket={ticket}&last_event_id=0")
        assert stream.status == 200
        seen = [stream.next(), stream.next()]
        stream.close()
        assert [(e["data"]["uuid"], e["data"]["status"]) for e in seen] == [
            (first, "completed"),
            (second, "completed"),
        ]
        # After the first one's id: the second one only.
        ticket = ticket_for(app, "/@jobs/stream")["ticket"]
        path = f"/@jobs/stream?ticket={ticket}&last_event_id={seen[0]['id']}"
        stream = EventStream(address, path)
        event = stream.next()
        stream.close()
    assert (event["data"]["uuid"], event["id"]) == (second, seen[1]["id"])


@pytest.mark.parametrize(
    "path", ["/@jobs/{uuid}/stream", "/@jobs/{uuid}/log?follow=true", "/@jobs/stream"]
)
def test_a_last_event_id_the_service_did_not_write_is_refused(app_without_worker, path):
    app = app_without_worker
    uuid = finished_job(app, [])
    url = path.format(uuid=uuid)
    url += ("&" if "?" in url else "?") + "last_event_id=nonsense"
    body = app.get(url, headers=app.auth(), status=400).json
    assert body == {
        "error": {
            "type": "Bad request",
            "message": "last_event_id is not an event id this service wrote.",
        }
    }
