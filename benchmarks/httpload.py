"""A small HTTP/1.1 load generator: N keep-alive connections, one thread each.

It writes pre-built request bytes on a plain socket and reads the response by its
``Content-Length`` (or chunks), so the client spends little of the 2 cores it shares
with the server. Every request is timed on its own; percentiles come from those
timings. The same client drives nick-jobs and its baselines, so its own cost is on both
sides of every ratio.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

CRLF2 = b"\r\n\r\n"


def build(
    method: str,
    path: str,
    port: int,
    token: str | None = None,
    body: bytes | None = None,
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Accept: application/json"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


class Connection:
    def __init__(self, port: int, timeout: float = 30) -> None:
        self.port = port
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buf = b""

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        return sock

    def _recv(self) -> None:
        chunk = self.sock.recv(262144)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send one request; return (status, body). Reconnects once on a closed socket."""
        for attempt in (1, 2):
            if self.sock is None:
                self.sock = self._connect()
            try:
                return self._exchange(raw)
            except (ConnectionError, BrokenPipeError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _exchange(self, raw: bytes) -> tuple[int, bytes]:
        self.sock.sendall(raw)
        while (end := self.buf.find(CRLF2)) < 0:
            self._recv()
        head = self.buf[:end].decode("latin-1")
        self.buf = self.buf[end + 4 :]
        status = int(head[9:12])
        headers = {}
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "content-length" in headers:
            length = int(headers["content-length"])
            while len(self.buf) < length:
                self._recv()
            body, self.buf = self.buf[:length], self.buf[length:]
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = self._chunked()
        else:  # no length: the body runs to the end of the connection
            with contextlib.suppress(ConnectionError):
                while True:
                    self._recv()
            body = self.buf
            self.close()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, body

    def _chunked(self) -> bytes:
        parts = []
        while True:
            while (end := self.buf.find(b"\r\n")) < 0:
                self._recv()
            size = int(self.buf[:end].split(b";")[0], 16)
            self.buf = self.buf[end + 2 :]
            while len(self.buf) < size + 2:
                self._recv()
            parts.append(self.buf[:size])
            self.buf = self.buf[size + 2 :]
            if size == 0:
                return b"".join(parts)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.buf = b""


@dataclass
class LoadResult:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    started: float = 0.0  # time.time() of the first request
    elapsed: float = 0.0

    @property
    def count(self) -> int:
        return len(self.latencies_ms)

    @property
    def rps(self) -> float:
        return self.count / self.elapsed if self.elapsed else 0.0

    def bad(self, expected: tuple[int, ...]) -> int:
        return sum(n for code, n in self.statuses.items() if code not in expected) + len(
            self.errors
        )


def run(
    port: int,
    requests: Callable[[int, int], bytes],
    *,
    connections: int = 8,
    duration: float | None = None,
    count: int | None = None,
    stop: threading.Event | None = None,
    keep_bodies: bool = False,
    think_s: float = 0.0,
) -> LoadResult:
    """Drive ``connections`` closed-loop clients until ``duration``, ``count`` or ``stop``.

    ``requests(connection_index, i)`` gives the bytes of request ``i`` on a connection.
    With ``count``, the connections share it evenly.
    """
    if duration is None and count is None and stop is None:
        raise ValueError("give a duration, a count or a stop event")
    result = LoadResult()
    lock = threading.Lock()
    barrier = threading.Barrier(connections + 1)
    quotas = [None] * connections
    if count is not None:
        quotas = [
            count // connections + (1 if k < count % connections else 0) for k in range(connections)
        ]

    def client(k: int) -> None:
        conn = Connection(port)
        conn.sock = conn._connect()
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        bodies: list[bytes] = []
        errors: list[str] = []
        barrier.wait()
        deadline = time.perf_counter() + duration if duration is not None else None
        i = 0
        quota = quotas[k]
        try:
            while True:
                if quota is not None and i >= quota:
                    break
                if deadline is not None and time.perf_counter() >= deadline:
                    break
                if stop is not None and stop.is_set():
                    break
                raw = requests(k, i)
                t0 = time.perf_counter()
                try:
                    status, body = conn.request(raw)
                except OSError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    conn.close()
                    i += 1
                    continue
                latencies.append((time.perf_counter() - t0) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
                if keep_bodies or status >= 400:
                    bodies.append(body)
                i += 1
                if think_s:
                    time.sleep(think_s)
        finally:
            conn.close()
            with lock:
                result.latencies_ms.extend(latencies)
                for code, n in statuses.items():
                    result.statuses[code] = result.statuses.get(code, 0) + n
                result.errors.extend(errors)
                result.bodies.extend(bodies)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(connections)]
    for thread in threads:
        thread.start()
    barrier.wait()
    result.started = time.time()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    result.elapsed = time.perf_counter() - t0
    return result
