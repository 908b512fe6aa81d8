"""sse: many open job streams on one API process, a plain GET load beside them, and how
fast a state change reaches its stream (PostgreSQL + Redis).

One ``pserve production.ini`` process, stock waitress with its settings as shipped (the
target is for the streams of one process). ``streams`` jobs are submitted and left
waiting (no worker consumes their queue), then:

* baseline: ``GET /@jobs/{uuid}`` load with no stream open;
* subject: the same load with one stream open on each job (``sse_streams`` of them);
* the API process's RSS with the streams open;
* event latency: each of ``events`` jobs is aborted through the API, one at a time; the
  time from sending the abort to reading its ``status`` event on the job's stream.

The streams are read by one thread with a selector, so the client costs little CPU.
"""

from __future__ import annotations

import json
import selectors
import socket
import threading
import time

from . import httpload
from .harness import Run, log, median, percentile, rss_kib

NAME = "sse"
SERVICES = {"postgresql", "redis"}
STREAMS = 200  # the figure: 200 open streams on one API process
EVENTS = {"quick": 40, "full": 150}
EXTRA: dict[str, str] = {}


class Streams:
    """Raw sockets reading ``text/event-stream`` responses; records when each job's
    ``aborted`` status arrived."""

    def __init__(self, port: int, token: str, uuids: list[str]) -> None:
        self.selector = selectors.DefaultSelector()
        self.arrived: dict[str, float] = {}
        self.open: set[str] = set()
        self.stop = threading.Event()
        self.buffers: dict[socket.socket, bytes] = {}
        for uuid in uuids:
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            request = (
                f"GET /@jobs/{uuid}/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Accept: text/event-stream\r\nAuthorization: Bearer {token}\r\n\r\n"
            )
            sock.sendall(request.encode())
            sock.setblocking(False)
            self.buffers[sock] = b""
            self.selector.register(sock, selectors.EVENT_READ, uuid)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stop.is_set():
            for key, _ in self.selector.select(timeout=0.05):
                sock, uuid = key.fileobj, key.data
                try:
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    continue
                now = time.perf_counter()
                if not chunk:
                    self.selector.unregister(sock)
                    continue
                data = self.buffers[sock] + chunk
                if b'"status":"created"' in data:
                    self.open.add(uuid)
                if b'"status":"aborted"' in data and uuid not in self.arrived:
                    self.arrived[uuid] = now
                # Keep only the tail: an event never spans more than the last chunk or two.
                self.buffers[sock] = data[-4096:]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        for sock in list(self.buffers):
            sock.close()


def run(run: Run) -> dict[str, float]:
    run.need(*SERVICES)
    run.create_database()
    mode = run.mode
    count = STREAMS
    events = EVENTS[mode.name]
    run.truncate_jobs()
    ini = run.nick_ini(
        "sse",
        broker="redis",
        app={
            "nick_jobs.stream_max_per_process": str(count + 10),
            "nick_jobs.stream_max_per_user": str(count + 10),
            **EXTRA,
        },
    )
    server = run.serve(ini, "sse-server")
    token = run.token(ini)
    submit = httpload.build(
        "POST", "/@jobs", server.port, token, json.dumps({"params": {"action": "dummy"}}).encode()
    )
    created = httpload.run(
        server.port, lambda k, i: submit, connections=4, count=count, keep_bodies=True
    )
    uuids = [json.loads(body)["uuid"] for body in created.bodies]
    gets = [httpload.build("GET", f"/@jobs/{u}", server.port, token) for u in uuids]

    def get_load() -> httpload.LoadResult:
        result = httpload.run(
            server.port,
            lambda k, i: gets[(k * 7919 + i) % len(gets)],
            connections=mode.http_connections,
            duration=mode.http_seconds,
        )
        if result.bad((200,)):
            raise RuntimeError(f"GET failed: {result.statuses} {result.bodies[:1]}")
        return result

    get_load()  # warm-up
    rss_before = rss_kib(server.proc.pid)
    baseline_p99, baseline_rps = [], []
    for _ in range(mode.repeats):
        loaded = get_load()
        baseline_p99.append(percentile(loaded.latencies_ms, 99))
        baseline_rps.append(loaded.rps)

    streams = Streams(server.port, token, uuids)
    deadline = time.monotonic() + 60
    while len(streams.open) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(streams.open)} of {count} streams opened")
        time.sleep(0.05)
    subject_p99 = []
    subject_rps = []
    for _ in range(mode.repeats):
        loaded = get_load()
        subject_p99.append(percentile(loaded.latencies_ms, 99))
        subject_rps.append(loaded.rps)
    rss_streams = rss_kib(server.proc.pid)
    log(
        f"sse: GET p99 {median(subject_p99):.1f} ms with {count} streams open, "
        f"{median(baseline_p99):.1f} ms with none"
    )

    latencies = []
    conn = httpload.Connection(server.port)
    for uuid in uuids[:events]:
        sent = time.perf_counter()
        status, body = conn.request(
            httpload.build("POST", f"/@jobs/{uuid}/abort", server.port, token)
        )
        if status != 204:
            raise RuntimeError(f"abort answered {status}: {body[:200]!r}")
        wait_until = time.monotonic() + 10
        while uuid not in streams.arrived:
            if time.monotonic() > wait_until:
                raise RuntimeError(f"no aborted event for {uuid} within 10 s")
            time.sleep(0.001)
        latencies.append((streams.arrived[uuid] - sent) * 1000)
        time.sleep(mode.latency_gap_s / 4)  # spread the aborts over the hub's polls
    conn.close()
    streams.close()
    run.stop(server.proc)
    log(
        f"sse: {count} streams; GET p99 {median(subject_p99):.1f} ms with them, "
        f"{median(baseline_p99):.1f} ms without; event p50 {percentile(latencies, 50):.0f} ms "
        f"p95 {percentile(latencies, 95):.0f} ms; RSS {rss_before / 1024:.0f} → "
        f"{rss_streams / 1024:.0f} MB"
    )
    return {
        "sse_streams": float(count),
        "sse_get_p99_ms": median(subject_p99),
        "sse_get_baseline_p99_ms": median(baseline_p99),
        "sse_get_rps": median(subject_rps),
        "sse_get_baseline_rps": median(baseline_rps),
        "sse_event_p50_ms": percentile(latencies, 50),
        "sse_event_p95_ms": percentile(latencies, 95),
        "sse_api_rss_mb": rss_streams / 1024,
        "sse_api_rss_growth_mb": (rss_streams - rss_before) / 1024,
    }
