"""Server-Sent Event streams: job streams, the all-jobs stream, tickets, limits, follow.

Streams are read over real HTTP from a waitress server in a thread (WebTest would wait
for the whole body), on every backend; the worker is the embedded one on SQLite and a
real ``nick-jobs worker`` process on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from waitress import create_server

from nick_jobs.db import get_engine
from nick_jobs.db.after_commit import transaction
from nick_jobs.streams import tickets
from tests.conftest import Client, reset_database


@contextlib.contextmanager
def serving(client: Client, threads: int = 16) -> Iterator[tuple[str, int]]:
    """The client's app on waitress, as ``pserve`` runs it: with production.ini's
    ``channel_request_lookahead``, so that a stream sees its client leave."""
    server = create_server(
        client.app,
        host="127.0.0.1",
        port=0,
        threads=threads,
        connection_limit=100,
        channel_request_lookahead=1,
    )
    stop = threading.Event()

    def run() -> None:
        # server.run() loops until its sockets are gone; closing them from another thread
        # would pull them from under select(). This loop closes them itself.
        while not stop.is_set():
            server.asyncore.loop(timeout=0.05, map=server._map, count=1)
        server.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield ("127.0.0.1", server.effective_port)
    finally:
        # Streams end first, then the threads that served them, then the server.
        client.app.registry["nick_jobs.stream_hub"].shutdown()
        server.task_dispatcher.shutdown(timeout=10)
        stop.set()
        thread.join(timeout=10)


class EventStream:
    """One stream read event by event, each read bounded by the socket timeout."""

    def __init__(
        self,
        address: tuple[str, int],
        path: str,
        headers: dict[str, str] | None = None,
        method: str = "GET",
        body: Any = None,
        timeout: float = 20.0,
    ) -> None:
        self.conn = http.client.HTTPConnection(*address, timeout=timeout)
        payload = json.dumps(body) if body is not None else None
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        self.conn.request(method, path, body=payload, headers=all_headers)
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.comments = 0
        self.retry: int | None = None

    def json(self) -> Any:
        return json.loads(self.response.read())

    def next(self, timeout: float = 20.0) -> dict[str, Any] | None:
        """The next event, or None when the server ended the response."""
        event: dict[str, Any] = {}
        deadline = time.monotonic() + timeout
        while True:
            # Keepalive comments (every second in the tests) bound each wait.
            assert time.monotonic() < deadline, f"no event within {timeout} s"
            line = self.response.readline()
            if not line:
                return None
            text = line.decode().rstrip("\r\n")
            if not text:
                if "event" in event:
                    return event
                continue
            if text.startswith(":"):
                self.comments += 1
                continue
            field, _, value = text.partition(": ")
            if field == "data":
                event["data"] = json.loads(value)
            elif field == "retry":
                self.retry = int(value)
            else:
                event[field] = value

    def wait_comments(self, count: int, timeout: float = 20.0) -> None:
        """Read ``count`` comment lines; an event meanwhile fails the test."""
        deadline = time.monotonic() + timeout
        seen = 0
        while seen < count:
            assert time.monotonic() < deadline, f"fewer than {count} comments in {timeout} s"
            line = self.response.readline().decode()
            assert line, "the server ended the stream"
            assert not line.startswith(("event:", "data:", "id:")), f"unexpected {line!r}"
            if line.startswith(":"):
                seen += 1
                self.comments += 1

    def until_close(self) -> list[dict[str, Any]]:
        events = []
        while (event := self.next()) is not None:
            events.append(event)
            if event["event"] == "close":
                # The server ends the response right after a close event.
                assert self.next() is None
                break
        return events

    def close(self) -> None:
        # The response's file holds the socket open too: both go, or the server never
        # sees the client leave.
        self.response.close()
        self.conn.close()


def wait_for_hub(client: Client, streams: int = 0, polls: int = 0) -> Any:
    """The app's stream hub, once it holds ``streams`` streams and has looked ``polls`` times."""
    hub = client.app.registry["nick_jobs.stream_hub"]
    deadline = time.monotonic() + 10
    while hub.open_streams < streams or hub.polls < polls:
        assert time.monotonic() < deadline, "the stream hub did not get there in 10 s"
        time.sleep(0.02)
    return hub


def bearer(client: Client, login: str = "admin") -> dict[str, str]:
    return {"Authorization": f"Bearer {client.token(login)}"}


def gate_params(tmp_path: Path, **extra: Any) -> tuple[dict[str, Any], Path]:
    gate = tmp_path / f"gate-{time.monotonic_ns()}"
    return {"action": "gated", "gate": str(gate), **extra}, gate


def messages(events: list[dict[str, Any]], name: str = "log") -> list[str]:
    return [e["data"]["message"] for e in events if e["event"] == name]


# --- one job's stream -----------------------------------------------------------------


def test_a_job_stream_sends_status_progress_log_and_close(app, tmp_path):
    params, gate = gate_params(tmp_path, before=2, after=2)
    job = app.submit(params)
    with serving(app) as address:
        stream = EventStream(address, f"/@jobs/{job['uuid']}/stream", bearer(app))
        assert stream.status == 200
        assert stream.response.getheader("Content-Type") == "text/event-stream; charset=utf-8"
        assert stream.response.getheader("Cache-Control") == "no-cache, no-store"
        first = stream.next()
        # A fresh stream starts with where the job stands.
        assert first["event"] == "status"
        assert first["data"]["uuid"] == job["uuid"]
        assert first["data"]["@id"].endswith(f"/@jobs/{job['uuid']}")
        assert stream.retry == 2000
        # Once it runs, the stream says so.
        event = first
        while event["data"].get("status") != "running":
            event = stream.next()
            assert event["event"] in ("status", "progress", "log")
        gate.touch()
        events = [first, *stream.until_close()]
    names = [e["event"] for e in events]
    assert names[-1] == "close"
    assert events[-1]["data"] == {"reason": "finished", "reconnect": False}
    assert "id" not in events[-1]
    last_status = [e for e in events if e["event"] == "status"][-1]
    assert last_status["data"]["status"] == "completed"
    assert last_status["data"]["result"] == {"lines": 4}
    assert names.index("status") == 0
    assert names[-2] == "status"
    # Lines written from the moment the stream opened, each once, in order.
    lines = messages(events)
    assert lines[-2:] == ["after 1", "after 2"]
    assert lines == sorted(set(lines), key=lines.index)
    log = [e for e in events if e["event"] == "log"][-1]["data"]
    assert set(log) == {"uuid", "attempt", "time", "level", "message"}
    assert log["level"] == "info"
    assert log["attempt"] == 1
    progress = [e for e in events if e["event"] == "progress"]
    assert progress, "the handler reported steps"
    assert set(progress[-1]["data"]) == {"@id", "uuid", "attempt", "progress"}
    assert progress[-1]["data"]["progress"]["steps"][0]["name"] == "before"
    ids = [e["id"] for e in events if "id" in e]
    assert len(ids) == len(set(ids)), "every event has an id of its own"


def test_a_finished_job_streams_its_state_and_closes(app):
    job = app.submit({"action": "dummy", "steps": 2})
    app.wait_for(job["uuid"], "completed")
    # A stream that ends at once can be read whole, even through WebTest.
    response = app.get(f"/@jobs/{job['uuid']}/stream", headers=app.auth())
    assert response.content_type == "text/event-stream"
    text = response.text
    assert text.startswith("retry: 2000\n\n")
    blocks = [b for b in text.split("\n\n") if b.startswith(("id:", "event:"))]
    events = [dict(line.split(": ", 1) for line in block.split("\n")) for block in blocks]
    assert [e["event"] for e in events] == ["status", "progress", "close"]
    assert json.loads(events[0]["data"])["status"] == "completed"
    assert json.loads(events[1]["data"])["progress"]["percent"] == 100.0
    assert json.loads(events[2]["data"]) == {"reason": "finished", "reconnect": False}


def test_reconnecting_with_last_event_id_misses_nothing_and_repeats_nothing(app, tmp_path):
    params, gate = gate_params(tmp_path, before=30, after=30)
    job = app.submit(params)
    uuid = job["uuid"]
    with serving(app) as address:
        # Read the first part of the job's life, then drop the connection mid-job.
        first = EventStream(address, f"/@jobs/{uuid}/stream", bearer(app))
        seen = [first.next()]
        while "before 30" not in messages(seen):
            seen.append(first.next())
        first.close()
        gate.touch()
        app.wait_for(uuid, "completed")
        # Everything after the last id, once.
        second = EventStream(
            address, f"/@jobs/{uuid}/stream", {**bearer(app), "Last-Event-ID": seen[-1]["id"]}
        )
        rest = second.until_close()
    lines = messages(seen) + messages(rest)
    stored = [
        line["message"]
        for line in app.get(f"/@jobs/{uuid}/log?b_size=1000", headers=app.auth()).json
    ]
    # The stream opened when the job had maybe written lines already: the ones it saw
    # are the stored ones from some point on, without a gap or a repeat.
    assert lines == stored[len(stored) - len(lines) :]
    assert lines[-30:] == [f"after {n}" for n in range(1, 31)]
    statuses = [e["data"]["status"] for e in seen + rest if e["event"] == "status"]
    assert statuses[-1] == "completed"
    assert len(statuses) == len(set(statuses)), "no status twice"
    # Progress the client had already is not sent again; the final one is.
    progress = [e["data"]["progress"] for e in seen + rest if e["event"] == "progress"]
    assert all(a != b for a, b in itertools.pairwise(progress))


def test_resuming_a_finished_job_with_its_last_id_just_closes(app):
    job = app.submit({"action": "dummy", "steps": 1})
    app.wait_for(job["uuid"], "completed")
    with serving(app) as address:
        events = EventStream(address, f"/@jobs/{job['uuid']}/stream", bearer(app)).until_close()
        last_id = [e for e in events if "id" in e][-1]["id"]
        again = EventStream(
            address, f"/@jobs/{job['uuid']}/stream", {**bearer(app), "Last-Event-ID": last_id}
        ).until_close()
    assert again == [{"event": "close", "data": {"reason": "finished", "reconnect": False}}]


def test_a_deleted_job_closes_its_stream(app_without_worker):
    app = app_without_worker
    job = app.submit({"action": "dummy"})
    with serving(app) as address:
        stream = EventStream(address, f"/@jobs/{job['uuid']}/stream", bearer(app))
        assert stream.next()["data"]["status"] == "created"
        app.delete(f"/@jobs/{job['uuid']}", headers=app.auth(), status=204)
        assert stream.until_close() == [
            {"event": "close", "data": {"reason": "deleted", "reconnect": False}}
        ]


def test_an_aborted_job_streams_aborted_then_closes(app_without_worker):
    app = app_without_worker
    job = app.submit({"action": "dummy"})
    with serving(app) as address:
        stream = EventStream(address, f"/@jobs/{job['uuid']}/stream", bearer(app))
        assert stream.next()["data"]["status"] == "created"
        app.post(f"/@jobs/{job['uuid']}/abort", headers=app.auth(), status=204)
        events = stream.until_close()
    assert [e["event"] for e in events] == ["status", "close"]
    assert events[0]["data"]["status"] == "aborted"


def test_a_stream_has_the_jobs_own_authorization(app_without_worker):
    app = app_without_worker
    job = app.submit({"action": "echo", "message": "hi"}, login="alice")
    path = f"/@jobs/{job['uuid']}/stream"
    body = app.get(path, status=401).json
    assert body["error"]["type"] == "Unauthorized"
    assert app.get(path, headers=app.auth("bob"), status=404).json["error"]["type"] == "Not found"
    with serving(app) as address:
        for login in ("alice", "admin"):
            stream = EventStream(address, path, bearer(app, login))
            assert stream.status == 200
            assert stream.next()["data"]["uuid"] == job["uuid"]
            stream.close()


@pytest.mark.parametrize("value", ["nonsense", "1.2", "1.2.3.4", "-5.0.0", "x" * 300])
def test_a_last_event_id_this_service_did_not_write_is_a_400(app_without_worker, value):
    app = app_without_worker
    job = app.submit({"action": "dummy"})
    headers = {**app.auth(), "Last-Event-ID": value}
    body = app.get(f"/@jobs/{job['uuid']}/stream", headers=headers, status=400).json
    assert body["error"]["type"] == "Bad request"
    assert "Last-Event-ID" in body["error"]["message"]
    body = app.get("/@jobs/stream", headers=headers, status=400).json
    assert body["error"]["type"] == "Bad request"


# --- the all-jobs stream --------------------------------------------------------------


def feed_until(stream: EventStream, count: int) -> list[dict[str, Any]]:
    return [stream.next() for _ in range(count)]


def test_the_all_jobs_stream_shows_each_user_their_jobs_and_admins_all(app_without_worker):
    app = app_without_worker
    with serving(app) as address:
        mine = EventStream(address, "/@jobs/stream", bearer(app, "alice"))
        everything = EventStream(address, "/@jobs/stream", bearer(app, "admin"))
        assert mine.status == everything.status == 200
        # Both streams subscribed, and the hub looking for changes.
        wait_for_hub(app, streams=2, polls=2)
        bobs = app.submit({"action": "echo", "message": "b"}, login="bob")
        alices = app.submit({"action": "echo", "message": "a"}, login="alice")
        seen_by_admin = feed_until(everything, 2)
        seen_by_alice = feed_until(mine, 1)
        # Changes closer together than a poll may come as one event with the latest
        # state: this one waits until the creation was seen.
        app.post(f"/@jobs/{alices['uuid']}/abort", headers=app.auth("alice"), status=204)
        seen_by_admin += feed_until(everything, 1)
        seen_by_alice += feed_until(mine, 1)
    assert [(e["data"]["uuid"], e["data"]["status"]) for e in seen_by_alice] == [
        (alices["uuid"], "created"),
        (alices["uuid"], "aborted"),
    ]
    assert {e["data"]["uuid"] for e in seen_by_admin} == {bobs["uuid"], alices["uuid"]}
    assert all(e["event"] == "status" for e in seen_by_admin + seen_by_alice)
    ids = [int(e["id"]) for e in seen_by_admin]
    assert ids == sorted(ids)
    assert len(set(ids)) == 3


def test_the_all_jobs_stream_resumes_from_last_event_id(app_without_worker):
    app = app_without_worker
    with serving(app) as address:
        feed = EventStream(address, "/@jobs/stream", bearer(app))
        wait_for_hub(app, polls=2)
        first = app.submit({"action": "dummy"})
        event = feed.next()
        assert event["data"]["uuid"] == first["uuid"]
        feed.close()
        # Missed while disconnected:
        second = app.submit({"action": "dummy"})
        app.post(f"/@jobs/{first['uuid']}/abort", headers=app.auth(), status=204)
        resumed = EventStream(
            address, "/@jobs/stream", {**bearer(app), "Last-Event-ID": event["id"]}
        )
        missed = feed_until(resumed, 2)
    assert [(e["data"]["uuid"], e["data"]["status"]) for e in missed] == [
        (second["uuid"], "created"),
        (first["uuid"], "aborted"),
    ]


def test_two_api_nodes_see_the_same_streams(backend, make_app, tmp_path):
    """Two app instances on one database: a job submitted and run through one node is
    streamed by the other, and its all-jobs stream sees it too."""
    reset_database(backend.engine)
    node_a, node_b = make_app(), make_app()
    params, gate = gate_params(tmp_path, before=1, after=1)
    with serving(node_b) as address:
        feed = EventStream(address, "/@jobs/stream", bearer(node_b))
        wait_for_hub(node_b, polls=2)
        job = node_a.submit(params)
        stream = EventStream(address, f"/@jobs/{job['uuid']}/stream", bearer(node_b))
        assert feed.next()["data"]["uuid"] == job["uuid"]
        gate.touch()
        events = [stream.next(), *stream.until_close()]
    assert events[-2]["data"]["status"] == "completed"
    assert messages(events)[-1] == "after 1"


# --- follow, tickets, limits, lifetime, keepalive, shutdown ---------------------------


def test_submit_with_follow_answers_with_the_new_jobs_stream(app):
    with serving(app) as address:
        stream = EventStream(
            address,
            "/@jobs?follow=true",
            bearer(app),
            method="POST",
            body={"params": {"action": "dummy", "steps": 2}},
        )
        assert stream.status == 201
        location = stream.response.getheader("Location")
        assert stream.response.getheader("Content-Type").startswith("text/event-stream")
        events = stream.until_close()
    assert events[0]["event"] == "status"
    assert events[0]["data"]["@id"] == location
    assert [e for e in events if e["event"] == "status"][-1]["data"]["status"] == "completed"
    assert events[-1]["data"]["reason"] == "finished"
    # Every line of the new job, however fast it ran.
    assert messages(events) == ["step 1 of 2 done", "step 2 of 2 done"]


def test_follow_takes_true_or_false(app_without_worker):
    app = app_without_worker
    body = {"params": {"action": "dummy"}}
    error = app.post_json("/@jobs?follow=maybe", body, headers=app.auth(), status=400).json
    assert error["error"]["message"] == "follow takes true or false."
    # follow=false is a plain submit.
    assert app.post_json("/@jobs?follow=false", body, headers=app.auth(), status=201).json["uuid"]


def test_a_refused_follow_creates_no_job(make_app, backend):
    reset_database(backend.engine)
    app = make_app(**{"nick_jobs.stream_max_per_user": "0"})
    body = {"params": {"action": "dummy"}}
    response = app.post_json("/@jobs?follow=true", body, headers=app.auth(), status=503)
    assert response.headers["Retry-After"] == "5"
    assert response.json["error"]["type"] == "Too many streams"
    assert app.get("/@jobs", headers=app.auth()).json == []


def test_streams_are_capped_per_user_and_per_process(make_app, backend, unconsumed_queue):
    reset_database(backend.engine)
    app = make_app(
        **{
            "nick_jobs.stream_max_per_user": "2",
            "nick_jobs.stream_max_per_process": "3",
            "nick_jobs.embedded_worker_threads": "0",
            "nick_jobs.queue": unconsumed_queue,
        }
    )
    job = app.submit({"action": "echo", "message": "hi"}, login="alice")
    path = f"/@jobs/{job['uuid']}/stream"
    with serving(app) as address:
        open_ = [EventStream(address, path, bearer(app, "alice")) for _ in range(2)]
        assert [s.status for s in open_] == [200, 200]
        refused = EventStream(address, path, bearer(app, "alice"))
        assert refused.status == 503
        assert refused.response.getheader("Retry-After") == "5"
        assert refused.json()["error"] == {
            "type": "Too many streams",
            "message": "You have 2 streams open already; try again shortly.",
        }
        admin = EventStream(address, path, bearer(app, "admin"))
        assert admin.status == 200
        full = EventStream(address, "/@jobs/stream", bearer(app, "bob"))
        assert full.status == 503
        assert "as many streams open as it allows" in full.json()["error"]["message"]
        # A plain request still answers while the streams hold their threads.
        assert app.get(path.rsplit("/", 1)[0], headers=app.auth("alice")).json["uuid"]
        # A stream that ends gives its slot back.
        open_[0].close()
        limits = app.app.registry["nick_jobs.stream_limits"]
        deadline = time.monotonic() + 5
        while limits.open > 2:
            assert time.monotonic() < deadline, "the closed stream's slot did not come back"
            time.sleep(0.05)
        assert EventStream(address, path, bearer(app, "alice")).status == 200


def raw_stream(address: tuple[str, int], path: str, token: str) -> tuple[socket.socket, int]:
    """A stream opened on a bare socket, read up to its status line: closing the socket is
    all a client that goes away does."""
    sock = socket.create_connection(address, timeout=10)
    request = f"GET {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\r\n"
    sock.sendall(request.encode())
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, "the server closed the connection before its status line"
        head += chunk
    return sock, int(head.split(b" ", 2)[1])


def test_a_gone_clients_stream_slot_is_free_within_5_s(make_app, backend, unconsumed_queue):
    """Streams opened up to both caps and closed by their clients give their slots back
    within 5 s, although no event or keepalive (every 15 s) is due to be written."""
    reset_database(backend.engine)
    app = make_app(
        **{
            "nick_jobs.stream_max_per_user": "2",
            "nick_jobs.stream_max_per_process": "3",
            "nick_jobs.stream_keepalive": "15",
            "nick_jobs.embedded_worker_threads": "0",
            "nick_jobs.queue": unconsumed_queue,
        }
    )
    job = app.submit({"action": "echo", "message": "hi"}, login="alice")
    job_path, feed_path = f"/@jobs/{job['uuid']}/stream", "/@jobs/stream"
    wanted = [(job_path, "alice"), (job_path, "alice"), (feed_path, "bob")]
    with serving(app) as address:
        opened = [raw_stream(address, path, app.token(login)) for path, login in wanted]
        assert [status for _, status in opened] == [200, 200, 200]
        # Both caps are reached: alice's, and the process's for anyone else.
        for path, login in [(job_path, "alice"), (feed_path, "admin")]:
            sock, status = raw_stream(address, path, app.token(login))
            sock.close()
            assert status == 503
        for sock, _ in opened:
            sock.close()
        deadline = time.monotonic() + 5
        reopened = []
        for path, login in wanted:
            while True:
                sock, status = raw_stream(address, path, app.token(login))
                if status == 200:
                    reopened.append(sock)
                    break
                sock.close()
                assert status == 503
                assert time.monotonic() < deadline, "a closed stream's slot was not free in 5 s"
                time.sleep(0.1)
        for sock in reopened:
            sock.close()


def test_a_stream_ends_at_its_lifetime_and_asks_to_reconnect(make_app, backend, unconsumed_queue):
    reset_database(backend.engine)
    app = make_app(
        **{
            # Twenty keep-alives' worth of lifetime: two come even when a loaded machine
            # leaves the stream's thread waiting for most of it.
            "nick_jobs.stream_max_lifetime": "2",
            "nick_jobs.stream_keepalive": "0.1",
            "nick_jobs.embedded_worker_threads": "0",
            "nick_jobs.queue": unconsumed_queue,
        }
    )
    job = app.submit({"action": "dummy"})
    with serving(app) as address:
        stream = EventStream(address, f"/@jobs/{job['uuid']}/stream", bearer(app))
        events = [stream.next(), *stream.until_close()]
    assert events[0]["event"] == "status"
    assert events[-1] == {"event": "close", "data": {"reason": "lifetime", "reconnect": True}}
    # Silence was filled with comments that keep proxies from cutting the stream.
    assert stream.comments >= 2


def test_shutting_down_closes_streams_with_a_reconnect(app_without_worker):
    app = app_without_worker
    job = app.submit({"action": "dummy"})
    with serving(app) as address:
        stream = EventStream(address, f"/@jobs/{job['uuid']}/stream", bearer(app))
        assert stream.next()["event"] == "status"
        wait_for_hub(app, streams=1).shutdown()
        assert stream.until_close() == [
            {"event": "close", "data": {"reason": "shutdown", "reconnect": True}}
        ]


def test_a_ticket_opens_one_stream_without_a_header(app_without_worker):
    app = app_without_worker
    job = app.submit({"action": "echo", "message": "hi"}, login="alice")
    path = f"/@jobs/{job['uuid']}/stream"
    answer = app.post_json(
        "/@stream-tickets", {"stream": path}, headers=app.auth("alice"), status=201
    ).json
    assert set(answer) == {"ticket", "expires", "url"}
    assert answer["url"] == f"http://localhost:8080{path}?ticket={answer['ticket']}"
    with serving(app) as address:
        stream = EventStream(address, f"{path}?ticket={answer['ticket']}")
        assert stream.status == 200
        assert stream.next()["data"]["uuid"] == job["uuid"]
        stream.close()
    # Bound to that stream: not another one, not the API, never a bearer token.
    other = app.submit({"action": "echo", "message": "hi"}, login="alice")
    app.get(f"/@jobs/{other['uuid']}/stream?ticket={answer['ticket']}", status=401)
    app.get(f"/@jobs/{job['uuid']}?ticket={answer['ticket']}", status=401)
    as_bearer = {"Authorization": f"Bearer {answer['ticket']}"}
    app.get(f"/@jobs/{job['uuid']}", headers=as_bearer, status=401)


def test_a_ticket_for_the_all_jobs_stream(app_without_worker):
    app = app_without_worker
    answer = app.post_json(
        "/@stream-tickets", {"stream": "http://example.org/@jobs/stream"}, headers=app.auth()
    ).json
    assert answer["url"].endswith(f"/@jobs/stream?ticket={answer['ticket']}")
    with serving(app) as address:
        stream = EventStream(address, f"/@jobs/stream?ticket={answer['ticket']}")
        assert stream.status == 200
        stream.close()


def test_a_ticket_expires_and_dies_with_its_token(app_without_worker):
    app = app_without_worker
    job = app.submit({"action": "dummy"})
    path = f"/@jobs/{job['uuid']}/stream"
    settings = app.app.registry["nick_jobs.settings"]
    old = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=settings.streams.ticket_ttl_s + 1)
    from nick_jobs.users import tokens

    token = app.token()
    expired, _ = tickets.issue(settings, "admin", tokens.fingerprint(token), path, old)
    body = app.get(f"{path}?ticket={expired}", status=401).json
    assert body["error"]["type"] == "Unauthorized"
    # Asked with a token that is then logged out: the ticket goes with it.
    headers = {"Authorization": f"Bearer {token}"}
    ticket = app.post_json("/@stream-tickets", {"stream": path}, headers=headers).json["ticket"]
    app.post("/@logout", headers=headers, status=204)
    app.get(f"{path}?ticket={ticket}", status=401)


@pytest.mark.parametrize(
    "body",
    [{}, {"stream": 5}, {"stream": "/@jobs"}, {"stream": "/@jobs/not-a-uuid/stream"}, []],
)
def test_a_ticket_request_names_a_stream(app_without_worker, body):
    app = app_without_worker
    error = app.post_json("/@stream-tickets", body, headers=app.auth(), status=400).json
    assert error["error"]["type"] in ("Bad request", "Invalid JSON")
    app.post_json("/@stream-tickets", {"stream": "/@jobs/stream"}, status=401)


def test_the_open_stream_count_is_a_metric(app_without_worker):
    app = app_without_worker
    job = app.submit({"action": "dummy"})
    with serving(app) as address:
        stream = EventStream(address, f"/@jobs/{job['uuid']}/stream", bearer(app))
        assert stream.next()["event"] == "status"
        text = app.get("/metrics", headers=app.auth()).text
        assert "nick_jobs_open_streams 1.0" in text
        stream.close()


def test_a_stream_survives_a_database_outage_and_catches_up(pg_url):
    """The hub's queries fail while the database is away; the stream stays open with its
    keepalives, and the change made meanwhile arrives once the database answers."""
    from nick_jobs import main
    from nick_jobs.jobs import lifecycle
    from tests.conftest import base_settings
    from tests.netutil import Proxy

    reset_database(get_engine(pg_url))
    host_port, _, database = pg_url.rpartition("@")[2].partition("/")
    proxy = Proxy(int(host_port.rsplit(":", 1)[1])).up()
    url = f"{pg_url.rpartition('@')[0]}@{proxy.address}/{database}"
    settings = base_settings(
        **{"sqlalchemy.url": url, "nick_jobs.broker_url": "stub://"},
        **{"nick_jobs.embedded_worker_threads": "0", "nick_jobs.stream_keepalive": "0.2"},
    )
    wsgi = main({}, **settings)
    app = Client(wsgi, extra_environ={"HTTP_HOST": "localhost:8080"})
    direct = get_engine(pg_url)
    try:
        job = app.submit({"action": "dummy"})
        with serving(app) as address:
            stream = EventStream(address, f"/@jobs/{job['uuid']}/stream", bearer(app))
            assert stream.next()["data"]["status"] == "created"
            hub = wsgi.registry["nick_jobs.stream_hub"]
            polls = hub.polls
            proxy.down()
            # Aborted behind the API's back, on a connection of its own.
            with transaction(direct) as conn:
                lifecycle.abort(conn, job["uuid"], by="admin")
            # Keepalives go on while the database is away, and nothing else comes.
            stream.wait_comments(3)
            assert hub.polls <= polls + 1, "no poll succeeds meanwhile"
            proxy.up()
            events = stream.until_close()
        assert [e["event"] for e in events] == ["status", "close"]
        assert events[0]["data"]["status"] == "aborted"
    finally:
        proxy.down()
        for key in ("nick_jobs.engine", "nick_jobs.read_engine"):
            wsgi.registry[key].dispose()
        direct.dispose()


def test_the_all_jobs_stream_starts_when_it_is_asked_for(make_app, backend, unconsumed_queue):
    """A job that comes and goes while the stream is being set up, before the process
    first looks for changes, is still sent."""
    reset_database(backend.engine)
    app = make_app(
        **{
            "nick_jobs.stream_poll_interval": "0.5",
            "nick_jobs.embedded_worker_threads": "0",
            "nick_jobs.queue": unconsumed_queue,
        }
    )
    with serving(app) as address:
        feed = EventStream(address, "/@jobs/stream", bearer(app))
        job = app.submit({"action": "dummy"})
        app.post(f"/@jobs/{job['uuid']}/abort", headers=app.auth(), status=204)
        events = [feed.next()]
        while events[-1]["data"]["status"] != "aborted":
            events.append(feed.next())
    assert {e["data"]["uuid"] for e in events} == {job["uuid"]}
