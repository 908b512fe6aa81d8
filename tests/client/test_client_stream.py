"""``Client.stream_job``, ``stream_jobs`` and ``submit_and_stream`` against a live server.

A :class:`Relay` (a plain TCP relay) stands between the client and the server where a test
needs to cut the connection under the client and see what it sends when it comes back.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from nick_jobs_client import Client, ClientError, Event, EventStream, ServerUnavailable
from tests.client.test_client import LiveServer, live_server

RETRY_MS = 100  # the servers' reconnection delay (retry:), short for quick tests


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    directory = tmp_path_factory.mktemp("stream")
    with live_server(directory, **{"nick_jobs.stream_retry_ms": str(RETRY_MS)}) as live:
        yield live


@pytest.fixture(scope="module")
def admin(server) -> Client:
    return server.client("admin", timeout=10)


def read_until(stream: EventStream, done, timeout: float = 20) -> list[Event]:
    """Events from ``stream`` up to and including the first one ``done(event)`` accepts.

    The stream's own read timeout (the client's) bounds each wait; this bounds the whole.
    """
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    for event in stream:
        events.append(event)
        if done(event):
            return events
        assert time.monotonic() < deadline, [e.event for e in events]
    return events


def log_messages(events: list[Event]) -> list[str]:
    return [e.json["message"] for e in events if e.event == "log"]


def statuses(events: list[Event]) -> list[str]:
    return [e.json["status"] for e in events if e.event == "status"]


def steps_done(n: int, total: int) -> list[str]:
    return [f"step {i} of {total} done" for i in range(1, n + 1)]


# --- one job ---------------------------------------------------------------------------


def test_submit_and_stream_shows_the_job_from_submission_to_close(admin):
    stream = admin.submit_and_stream(
        "dummy", {"sleep": 1, "steps": 4, "result": {"answer": 42}}, title="Followed"
    )
    with stream:
        assert stream.uuid
        events = list(stream)
    assert stream.retry == RETRY_MS
    first = events[0]
    assert first.event == "status"
    assert (first.json["uuid"], first.json["title"]) == (stream.uuid, "Followed")
    assert log_messages(events) == steps_done(4, 4)
    final = [e for e in events if e.event == "status"][-1].json
    assert (final["status"], final["result"]) == ("completed", {"answer": 42})
    assert final == admin.get_job(stream.uuid)
    progress = [e.json for e in events if e.event == "progress"]
    assert progress, "progress events"
    assert {p["uuid"] for p in progress} == {stream.uuid}
    assert progress[-1]["progress"]["percent"] == 100
    assert [s["name"] for s in progress[-1]["progress"]["steps"]] == [
        "step 1",
        "step 2",
        "step 3",
        "step 4",
    ]
    # Every event but close has an id; close ends the stream.
    assert all(e.id for e in events[:-1])
    assert (events[-1].event, events[-1].id) == ("close", None)
    assert events[-1].json == {"reason": "finished", "reconnect": False}


def test_a_finished_jobs_stream_is_its_status_then_close(admin):
    uuid = admin.submit_job("dummy", {"steps": 2})["uuid"]
    job = admin.wait_for_job(uuid, ("completed",), timeout=15)
    with admin.stream_job(uuid) as stream:
        events = list(stream)
    assert [e.event for e in events] == ["status", "progress", "close"]
    assert events[0].json == job
    assert events[1].json["progress"] == job["progress"]
    assert events[2].json == {"reason": "finished", "reconnect": False}


def test_last_event_id_gives_only_what_came_after(admin):
    stream = admin.submit_and_stream("dummy", {"sleep": 1, "steps": 4})
    with stream:
        seen = read_until(stream, lambda e: e.event == "log")
    assert log_messages(seen) == steps_done(1, 4)
    resume_from = stream.last_event_id
    assert resume_from == seen[-1].id
    admin.wait_for_job(stream.uuid, ("completed",), timeout=15)

    with admin.stream_job(stream.uuid, last_event_id=resume_from) as resumed:
        rest = list(resumed)
    assert log_messages(rest) == ["step 2 of 4 done", "step 3 of 4 done", "step 4 of 4 done"]
    assert statuses(rest)[-1] == "completed"
    assert rest[-1].json == {"reason": "finished", "reconnect": False}


def test_a_stopped_job_keeps_its_stream_open_and_deleting_it_closes_it(admin):
    uuid = admin.submit_job("dummy", {"sleep": 300, "steps": 3000})["uuid"]
    admin.wait_for_job(uuid, ("running",), timeout=15)
    admin.stop_job(uuid)
    admin.wait_for_job(uuid, ("stopped",), timeout=15)
    with admin.stream_job(uuid) as stream:
        first = next(stream)
        assert (first.event, first.json["status"]) == ("status", "stopped")
        admin.delete_job(uuid)
        rest = list(stream)
    assert rest[-1].event == "close"
    assert rest[-1].json == {"reason": "deleted", "reconnect": False}


def test_stream_refusals_raise_at_once(server, admin):
    missing = "6f0c2b1e-3d4a-4b5c-8d6e-7f8091a2b3c4"
    with pytest.raises(ClientError) as info:
        admin.stream_job(missing)
    assert (info.value.status, info.value.type) == (404, "Not found")

    uuid = admin.submit_job("dummy")["uuid"]
    with pytest.raises(ClientError) as info:
        admin.stream_job(uuid, last_event_id="not-an-id")
    assert info.value.status == 400
    assert str(info.value) == "Last-Event-ID is not an event id this service wrote."

    with pytest.raises(ClientError) as info:
        server.client("alice").stream_job(uuid)  # another user's job
    assert info.value.status == 404

    with pytest.raises(ClientError) as info:
        admin.submit_and_stream("dummy", {"steps": -1})
    assert info.value.status == 400
    assert "params.steps" in str(info.value)

    with pytest.raises(ClientError) as info:
        Client(server.url).stream_jobs()
    assert info.value.status == 401


# --- all jobs --------------------------------------------------------------------------


def test_stream_jobs_sends_each_change_from_now_on(admin):
    before = admin.submit_job("dummy")["uuid"]
    admin.wait_for_job(before, ("completed",), timeout=15)
    with admin.stream_jobs() as stream:
        uuid = admin.submit_job("dummy", {"sleep": 1, "steps": 2})["uuid"]

        def finished(event: Event) -> bool:
            return event.json.get("uuid") == uuid and event.json.get("status") == "completed"

        events = read_until(stream, finished)
    assert {e.event for e in events} == {"status"}
    assert all(e.id and e.id.isdigit() for e in events)
    assert before not in {e.json["uuid"] for e in events}  # no snapshot of older jobs
    mine = [e.json["status"] for e in events if e.json["uuid"] == uuid]
    assert "running" in mine
    assert mine[-1] == "completed"
    assert events[-1].json == admin.get_job(uuid)


# --- reconnecting ----------------------------------------------------------------------


class Relay:
    """A TCP relay to ``port``: ``cut()`` drops every connection it carries, as a network
    or a proxy would; ``received`` holds the bytes each connection's client sent."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.received: list[bytearray] = []
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.port))
            received = bytearray()
            with self.lock:
                self.received.append(received)
                self.sockets += [downstream, upstream]
            threading.Thread(
                target=self._pump, args=(downstream, upstream, received), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(upstream, downstream, None), daemon=True
            ).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket, record: bytearray | None) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                if record is not None:
                    record += chunk
                target.sendall(chunk)
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def requests(self) -> list[str]:
        with self.lock:
            return [bytes(r).decode("latin-1") for r in self.received]

    def close(self) -> None:
        # shutdown() wakes the thread blocked in accept(); close() alone would not, and
        # the socket would go on accepting.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.cut()


@pytest.fixture
def relay(server) -> Iterator[Relay]:
    relay = Relay(int(server.url.rsplit(":", 1)[1]))
    yield relay
    relay.close()


def test_a_dropped_connection_resumes_with_last_event_id(admin, relay):
    client = Client(relay.url, admin.token, timeout=10)
    stream = client.submit_and_stream("dummy", {"sleep": 1.5, "steps": 5})
    with stream:
        before = read_until(stream, lambda e: e.event == "log")
        relay.cut()
        after = list(stream)
    events = before + after
    assert log_messages(events) == steps_done(5, 5)  # each line once, in order
    assert statuses(after)[-1] == "completed"
    assert after[-1].json == {"reason": "finished", "reconnect": False}
    requests = relay.requests()
    assert len(requests) == 2
    assert requests[0].startswith("POST /@jobs?follow=true ")
    assert requests[1].startswith(f"GET /@jobs/{stream.uuid}/stream ")
    # The second connection asked for what came after the last event the first one
    # delivered (bytes already on their way when the cut came still arrive).
    sent = dict(line.split(": ", 1) for line in requests[1].split("\r\n\r\n")[0].split("\r\n")[1:])
    ids = [e.id for e in events]
    assert sent["Last-Event-ID"] in ids
    assert ids.index(sent["Last-Event-ID"]) >= len(before) - 1


def test_a_server_that_stays_away_ends_the_stream_with_server_unavailable(admin, relay):
    client = Client(relay.url, admin.token, timeout=10, backoff=0.01)
    uuid = admin.submit_job("dummy", {"sleep": 300, "steps": 3000})["uuid"]
    stream = client.stream_job(uuid, reconnects=2)
    with stream:
        assert next(stream).event == "status"
        relay.close()  # no more connections either
        started = time.monotonic()
        with pytest.raises(ServerUnavailable, match="can't reach"):
            list(stream)
    # Two waits of the server's retry: (100 ms), the second doubled.
    assert time.monotonic() - started >= 0.3
    admin.abort_job(uuid)


# --- limits and lifetime ---------------------------------------------------------------


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory) -> Iterator[LiveServer]:
    """Streams that end every 0.7 s (asking to reconnect), and two streams per user: a
    stream that reconnects may still hold its old slot for a moment."""
    settings = {
        "nick_jobs.stream_retry_ms": str(RETRY_MS),
        "nick_jobs.stream_max_lifetime": "0.7",
        "nick_jobs.stream_max_per_user": "2",
    }
    with live_server(tmp_path_factory.mktemp("short"), **settings) as live:
        yield live


def test_a_close_that_asks_to_reconnect_is_resumed_without_a_gap(short_lived):
    client = short_lived.client("admin", timeout=10)
    stream = client.submit_and_stream("dummy", {"sleep": 2.5, "steps": 5})
    with stream:
        events = list(stream)
    closes = [e.json for e in events if e.event == "close"]
    assert {"reason": "lifetime", "reconnect": True} in closes
    assert closes[-1] == {"reason": "finished", "reconnect": False}
    assert log_messages(events) == steps_done(5, 5)
    assert statuses(events)[-1] == "completed"


def test_too_many_streams_is_a_503_with_retry_after(short_lived):
    client = short_lived.client("alice", timeout=10)
    with client.stream_jobs(), client.stream_jobs(), pytest.raises(ServerUnavailable) as info:
        client.stream_jobs()
    assert (info.value.status, info.value.retry_after) == (503, 5.0)
    assert info.value.type == "Too many streams"
    assert str(info.value) == "You have 2 streams open already; try again shortly."
