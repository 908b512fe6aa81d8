"""The server ``pserve`` runs: waitress whose main loop does not spin while a request
thread sends, and still delivers every byte to slow clients."""

from __future__ import annotations

import collections
import configparser
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, MultiSocketServer

from nick_jobs.server import Channel, create_server, serve_paste

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def running(
    app, channel_class: type[HTTPChannel] = Channel, sndbuf: int | None = None, **settings
) -> Iterator[tuple[int, BaseWSGIServer]]:
    """``app`` served on a free port by ``create_server``, its channels ``channel_class``
    (and their sockets' send buffer ``sndbuf`` bytes)."""
    server = create_server(app, listen="127.0.0.1:0", threads=4, **settings)
    server.channel_class = channel_class
    if sndbuf:
        server.adj.socket_options = [
            *server.adj.socket_options,
            (socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf),
        ]
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            server.asyncore.loop(timeout=server.adj.asyncore_loop_timeout, map=server._map, count=1)
        server.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield int(server.effective_port), server
    finally:
        server.task_dispatcher.shutdown(timeout=10)
        stop.set()
        # The loop may have turned, seen the stop and closed the trigger already.
        with contextlib.suppress(OSError):
            server.pull_trigger()
        thread.join(timeout=10)


def request(port: int, path: str = "/", rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    return sock


def read_exactly(sock: socket.socket, size: int, buffered: bytes = b"") -> bytes:
    data = bytearray(buffered)
    while len(data) < size:
        chunk = sock.recv(min(65536, size - len(data)))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The response head, and what arrived after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def test_the_shipped_ini_files_serve_with_this_server() -> None:
    (runner,) = entry_points(group="paste.server_runner", name="main").select(
        module="nick_jobs.server"
    )
    assert runner.load() is serve_paste
    for name in ("production.ini", "development.ini"):
        config = configparser.ConfigParser(interpolation=None)
        config.read(ROOT / name)
        assert config["server:main"]["use"] == "egg:nick-jobs#main", name


def test_every_listening_socket_opens_channels_that_wait() -> None:
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "0")])
        return [b""]

    server = create_server(app, listen="127.0.0.1:0 127.0.0.1:0", threads=1)
    try:
        assert isinstance(server, MultiSocketServer)
        listeners = [s for s in server.map.values() if isinstance(s, BaseWSGIServer)]
        assert len(listeners) == 2
        assert all(listener.channel_class is Channel for listener in listeners)
    finally:
        server.close()


def loop_turns_during_a_send(channel_class: type[HTTPChannel], window_s: float) -> int:
    """How often the main loop handles a write on a channel while its request thread is
    stuck inside a send, over ``window_s`` seconds."""
    in_send = threading.Event()
    release = threading.Event()
    turns = collections.Counter()

    class Gated(channel_class):
        def send(self, data, do_close=True):
            if threading.current_thread().name.startswith("waitress-") and not in_send.is_set():
                in_send.set()
                release.wait(10)
            return super().send(data, do_close)

        def handle_write(self):
            turns["write"] += 1
            super().handle_write()

    body = b"x" * 1000

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    with running(app, Gated) as (port, server):
        sock = request(port)
        assert in_send.wait(10)
        before = turns["write"]
        # Any other event (here the trigger; in production, other connections) makes the
        # loop look again at which channels are writable.
        server.pull_trigger()
        # A measuring window, not a wait for an event: the count over it is the result.
        time.sleep(window_s)
        during = turns["write"] - before
        release.set()
        head, rest = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200")
        assert read_exactly(sock, len(body), rest) == body
        sock.close()
    return during


def test_the_main_loop_waits_while_a_request_thread_sends() -> None:
    # Stock waitress: the channel looks writable the whole time, so the loop spins.
    assert loop_turns_during_a_send(HTTPChannel, 0.2) > 100
    assert loop_turns_during_a_send(Channel, 0.2) == 0


# With small socket buffers on both sides a send takes only part of a large chunk.
SMALL_BUFFERS = {"sndbuf": 32768}


class TriggerProbe:
    """A channel's view of its server whose ``pull_trigger``, called while a request
    thread is inside the channel's ``write_soon``, returns only once the main loop has
    looked at the channel again. That is the race to lose: the loop looks while the
    sender is still sending, finds nothing to poll for, and only a later trigger wakes it.
    """

    def __init__(self, server: BaseWSGIServer, channel: ProbedChannel) -> None:
        self._server = server
        self._channel = channel

    def __getattr__(self, name: str):
        return getattr(self._server, name)

    def pull_trigger(self) -> None:
        channel = self._channel
        if not (channel.sending and threading.current_thread().name.startswith("waitress-")):
            self._server.pull_trigger()
            return
        with channel.looked:
            seen = channel.looks
            self._server.pull_trigger()
            assert channel.looked.wait_for(lambda: channel.looks > seen, timeout=10)


class ProbedChannel(Channel):
    def __init__(self, server, *args, **kwargs) -> None:
        self.looks = 0
        self.looked = threading.Condition()
        super().__init__(server, *args, **kwargs)
        self.server = TriggerProbe(server, self)

    def writable(self) -> bool:
        if self.sending and self.total_outbufs_len:
            with self.looked:
                self.looks += 1
                self.looked.notify_all()
        return super().writable()


def test_bytes_a_sender_leaves_behind_reach_a_slow_client_while_its_stream_waits() -> None:
    # The first chunk can't fit the socket buffers, so the request thread leaves most of
    # it behind and then blocks until the client has read all of it: the main loop must
    # send the rest with nothing else to wake it (its poll timeout is 60 s here).
    size = 4 * 1024 * 1024
    release = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", str(size + 3))])

        def body():
            yield b"a" * size
            release.wait(20)
            yield b"end"

        return body()

    settings = {"asyncore_loop_timeout": 60, **SMALL_BUFFERS}
    with running(app, ProbedChannel, **settings) as (port, _):
        sock = request(port, rcvbuf=16384)
        head, rest = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200")
        assert read_exactly(sock, size, rest) == b"a" * size
        release.set()
        assert read_exactly(sock, 3) == b"end"
        sock.close()


@pytest.mark.parametrize("watermark", [65536, 1024 * 1024])
def test_a_body_over_the_high_watermark_arrives_whole(watermark: int) -> None:
    # Over the high-water mark the request thread waits inside write_soon for the main
    # loop to flush: the channel must look writable to the loop then, or both would wait
    # for ever.
    chunk = bytes(range(256)) * 4096  # 1 MiB
    chunks = 6

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", str(len(chunk) * chunks))])
        return (chunk for _ in range(chunks))

    settings = {"outbuf_high_watermark": watermark, "asyncore_loop_timeout": 60}
    with running(app, **settings, **SMALL_BUFFERS) as (port, _):
        sock = request(port, rcvbuf=16384)
        head, rest = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200")
        assert read_exactly(sock, len(chunk) * chunks, rest) == chunk * chunks
        sock.close()


def _exchange(sock: socket.socket, raw: bytes) -> bytes:
    sock.sendall(raw)
    head, rest = read_head(sock)
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    read_exactly(sock, length, rest)
    return head


def test_a_response_without_a_body_keeps_the_connection_open() -> None:
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/gone":
            start_response("204 No Content", [])
            return [b""]
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    with running(app) as (port, _server):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            for _ in range(2):
                head = _exchange(sock, b"DELETE /gone HTTP/1.1\r\nHost: x\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 204")
                assert b"connection: close" not in head.lower()
                assert b"content-length" not in head.lower()
                # The same connection serves the next request.
                assert _exchange(sock, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").startswith(
                    b"HTTP/1.1 200"
                )
        # Asked to close, or from an HTTP/1.0 client, a 204 still closes.
        for raw in (
            b"DELETE /gone HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"DELETE /gone HTTP/1.0\r\nHost: x\r\n\r\n",
        ):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                head = _exchange(sock, raw)
                assert b" 204 " in head
                assert sock.recv(1) == b""  # closed by the server
