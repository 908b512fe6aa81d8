"""Ports for the tests: a free one, waiting for a process to listen, and a TCP forwarder
the tests switch off and on, to take a database or a broker away."""

from __future__ import annotations

import contextlib
import errno
import socket
import subprocess
import threading
import time
from pathlib import Path


def free_port() -> int:
    """A port nothing listens on (connecting to it is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(
    port: int, proc: subprocess.Popen, log: Path, what: str, timeout: float = 30
) -> None:
    """Return once ``proc`` listens on ``port``; fail with its log if it exits first or
    does not listen within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not listen on {port} in {timeout:g} s")
        time.sleep(0.05)


class Proxy:
    """Forwards ``127.0.0.1:port`` to ``target``; ``down()`` closes it and cuts every link."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.server: socket.socket | None = None
        self.acceptor: threading.Thread | None = None
        self.links: list[socket.socket] = []
        self.lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def up(self) -> Proxy:
        # The port was free when chosen; after a down() it can be briefly held (by the
        # listener closing, or as another socket's local port): retry to a deadline.
        deadline = time.monotonic() + 10
        while True:
            try:
                server = socket.create_server(("127.0.0.1", self.port))
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        server.settimeout(0.05)
        self.server = server
        self.acceptor = threading.Thread(target=self._accept, args=(server,), daemon=True)
        self.acceptor.start()
        return self

    def down(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()
            # Its thread leaves accept() within its timeout; the listener is gone then.
            if self.acceptor is not None:
                self.acceptor.join(timeout=5)
        with self.lock:
            links, self.links = self.links, []
        for sock in links:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, server: socket.socket) -> None:
        while self.server is server:
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self.lock:
                self.links += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def black_hole():
    """A port that accepts connections and never answers (a hung server)."""
    server = socket.create_server(("127.0.0.1", 0), backlog=16)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()
