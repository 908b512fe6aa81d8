"""Waitress, with a channel whose main loop waits instead of spinning while a request
thread sends.

A request thread sends its own response: ``write_soon`` appends to the channel's output
buffer and sends it at once, holding the buffer's lock. Stock waitress calls a channel
writable whenever that buffer holds bytes, so for the length of the send (and of the
wait for the GIL after it) the main loop's ``poll()`` returns at once, finds the lock
taken, and polls again, visiting every open channel each time. Measured with 8
connections of ``GET /@jobs/{uuid}``: about 20,000 loop turns a second with no event
stream open. With 200 streams open each turn visits 200 more channels, the spinning
thread takes most of the GIL, and GET throughput fell to a third (docs/benchmarks.md §6).

Here a channel is not writable while a request thread is inside ``write_soon``: that
thread is already sending. What it leaves unsent (a slow client, a full socket buffer)
it hands to the main loop with ``pull_trigger``, as stock waitress does when the buffer
is over its high-water mark, and the loop flushes it as before.

A response with no body (``204``, ``304``) keeps an HTTP/1.1 connection open (``Task``):
stock waitress closes it for want of a ``Content-Length``, which such a response must not
have.

``production.ini`` and ``development.ini`` use it with ``use = egg:nick-jobs#main``; it
takes waitress's own settings, and ``processes``.

``processes = N`` serves from N processes, each with its own interpreter (and GIL), on
the same listening sockets: ``pserve`` binds them and loads the app, then starts N - 1
more ``pserve`` processes with the same arguments that take the sockets over instead of
binding. Only the processes with the fewest open connections accept a new one (each
publishes its count in memory they all map): left to the kernel, 8 connections opened at
once landed 6 and 2 as often as 4 and 4, and the busier process set the pace. A process
joins once it serves: while it loads the app, the others take every connection. The first
process restarts one that dies, passes a ``SIGTERM`` on (each drains as one process
would), and waits for them before it exits; a process whose first one is gone stops by
itself.
"""

from __future__ import annotations

import logging
import mmap
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, MultiSocketServer
from waitress.server import create_server as waitress_server
from waitress.task import WSGITask

log = logging.getLogger(__name__)


class Task(WSGITask):
    """A response with no body (``204``, ``304``, ``1xx``) keeps an HTTP/1.1 connection open.

    Stock waitress closes the connection after any HTTP/1.1 response without a
    ``Content-Length``, bodiless ones included, although nothing has to be delimited
    there (RFC 9110 forbids the header on 204): every ``DELETE``, logout and other
    ``204`` cost the client a new connection.
    """

    _bodiless_keep_alive = False

    def build_response_header(self) -> bytes:
        # Within it, set_close_on_finish is called for a missing length, an HTTP/1.0
        # client, or "Connection: close": only the first is waived, for bodiless 1.1.
        self._bodiless_keep_alive = (
            self.version == "1.1"
            and not self.has_body
            and not self.close_on_finish
            and self.request.headers.get("CONNECTION", "").lower() != "close"
        )
        try:
            return super().build_response_header()
        finally:
            self._bodiless_keep_alive = False

    def set_close_on_finish(self) -> None:
        if not self._bodiless_keep_alive:
            super().set_close_on_finish()


class Channel(HTTPChannel):
    task_class = Task

    # True while a request thread (or the main loop, for ``100 Continue``) runs
    # write_soon: that thread sends what it appends.
    sending = False

    def write_soon(self, data: bytes) -> int:
        self.sending = True
        try:
            return super().write_soon(data)
        finally:
            self.sending = False
            if self.total_outbufs_len:
                # Bytes the sender could not send: the main loop must now poll for them.
                self.server.pull_trigger()

    def writable(self) -> bool:
        if self.will_close or self.close_when_flushed:
            return True
        if not self.total_outbufs_len:
            return False
        # Over the high-water mark the sender waits for the main loop to flush, and is
        # woken only once the buffer is below it: at the mark exactly, it still waits.
        return not self.sending or self.total_outbufs_len >= self.adj.outbuf_high_watermark


def create_server(app: Any, **settings: Any) -> BaseWSGIServer | MultiSocketServer:
    """``waitress.create_server`` whose listening sockets open ``Channel`` channels."""
    # A channel reads on while its request runs, so waitress sees a client close and
    # ``environ["waitress.client_disconnected"]`` says so: an event stream whose client is
    # gone then ends within a second (docs/streams.md#gone-clients). At 0 (waitress's
    # default) it is noticed only when a write to the closed socket fails: keepalives later.
    settings.setdefault("channel_request_lookahead", 1)
    server = waitress_server(app, **settings)
    for listener in _listeners(server):
        if isinstance(listener, BaseWSGIServer):
            listener.channel_class = Channel
    return server


def serve(app: Any, **settings: Any) -> None:
    logging.basicConfig()  # as waitress.serve: a no-op once logging is configured
    server = create_server(app, **settings)
    server.print_listen("Serving on http://{}:{}")
    server.run()


# For a process started by the first one: "<socket fds>;<shares fd>;<its slot>;<first pid>".
INHERITED = "NICK_JOBS_SERVER_SOCKETS"
RESTART_DELAY_S = 1.0
# How soon a process that stopped accepting looks again at the others' counts: they
# change without waking it.
RECHECK_S = 0.05
# The count of a slot whose process is not serving (gone, or still loading the app): never
# the fewest, so the others accept without waiting for it.
VACANT = 2**31 - 1


class Shares:
    """Each serving process's count of open connections, in a file all of them map."""

    def __init__(self, fd: int, slots: int, slot: int) -> None:
        self._map = mmap.mmap(fd, slots * 4)
        self.counts = memoryview(self._map).cast("i")
        self.slot = slot

    @classmethod
    def create(cls, slots: int) -> tuple[Shares, Any]:
        file = tempfile.TemporaryFile()  # noqa: SIM115 - open while the processes run
        file.truncate(slots * 4)
        shares = cls(file.fileno(), slots, 0)
        for slot in range(slots):
            shares.set(slot, VACANT)
        return shares, file

    def may_accept(self, count: int) -> bool:
        """Publish this process's ``count``; whether it is among the fewest."""
        self.counts[self.slot] = count
        return count <= min(self.counts)

    def set(self, slot: int, count: int) -> None:
        self.counts[slot] = count


def _balance(server: Any, shares: Shares) -> None:
    """Make ``server``'s listeners accept only while this process has the fewest
    connections. They look again at each turn of the loop, and while they don't accept
    a thread turns it every ``RECHECK_S``: the others' counts change without waking it."""
    listeners = [x for x in _listeners(server) if isinstance(x, BaseWSGIServer)]
    refusing = threading.Event()

    def recheck() -> None:
        while True:
            refusing.wait()
            time.sleep(RECHECK_S)
            listeners[0].pull_trigger()

    def wrap(listener: BaseWSGIServer) -> None:
        readable = listener.readable

        def balanced_readable() -> bool:
            if not readable():
                return False
            if shares.may_accept(sum(len(x.active_channels) for x in listeners)):
                refusing.clear()
                return True
            refusing.set()
            return False

        listener.readable = balanced_readable

    for listener in listeners:
        wrap(listener)
    threading.Thread(target=recheck, name="nick-jobs-server-balance", daemon=True).start()


def _listeners(server: Any) -> list[Any]:
    return list(server.map.values()) if isinstance(server, MultiSocketServer) else [server]


def serve_paste(app: Any, global_conf: dict[str, str], **settings: Any) -> int:
    """The ``paste.server_runner`` behind ``use = egg:nick-jobs#main``."""
    processes = _processes(settings.pop("processes", 1))
    inherited = os.environ.pop(INHERITED, None)
    if inherited is not None:
        for name in ("listen", "host", "port", "unix_socket"):
            settings.pop(name, None)
        fds, shares_fd, slot_text, first = inherited.split(";")
        slot = int(slot_text)
        sockets = [socket.socket(fileno=int(fd)) for fd in fds.split(",")]
        # The first process's pid as it was when it started this one: it may be gone
        # already, while this one loaded the app.
        _stop_when_orphaned(int(first))
        _one_stop_per_sigterm_pair(app)
        logging.basicConfig()
        server = create_server(app, sockets=sockets, **settings)
        _balance(server, Shares(int(shares_fd), processes, slot))
        log.info("server process %d of %d (pid %d) serving", slot + 1, processes, os.getpid())
        server.run()
    elif processes > 1 and not _reloading() and not _embedded_queue(app):
        serve_processes(app, processes, _command(global_conf), **settings)
    else:
        serve(app, **settings)
    return 0


def _processes(value: Any) -> int:
    try:
        processes = int(value)
    except ValueError:
        processes = 0
    if processes < 1:
        raise ValueError(f"processes takes a whole number of processes, 1 or more, not {value!r}")
    return processes


def _reloading() -> bool:
    # Under ``pserve --reload`` the reloader restarts one process; more would each reload.
    try:
        import hupper
    except ImportError:
        return False
    return hupper.is_active()


def _embedded_queue(app: Any) -> bool:
    """Whether ``app`` queues its jobs in its own memory (``stub://``), where another
    process would never see them."""
    registry = getattr(app, "registry", None)
    settings = registry.get("nick_jobs.settings") if registry is not None else None
    if settings is not None and settings.embedded_broker:
        log.warning("processes: one process serves, as the queue (stub://) lives in it")
        return True
    return False


def _command(global_conf: dict[str, str]) -> list[str]:
    """How this process was started, to start the others the same way."""
    if os.path.basename(sys.argv[0]).startswith("pserve"):
        return [sys.executable, *sys.argv]
    return [sys.executable, "-m", "pyramid.scripts.pserve", global_conf["__file__"]]


def serve_processes(app: Any, processes: int, command: list[str], **settings: Any) -> None:
    """Serve ``app`` here and from ``processes - 1`` more processes on the same sockets."""
    logging.basicConfig()
    server = create_server(app, **settings)
    fds = [x.socket.fileno() for x in _listeners(server) if isinstance(x, BaseWSGIServer)]
    shares, shares_file = Shares.create(processes)
    _balance(server, shares)
    group = ProcessGroup(command, fds, processes - 1, shares, shares_file.fileno())
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        # Passed on once: the drain signals this process again when it is done, and a
        # second SIGTERM would stop the others at once.
        group.signal_once(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise SystemExit(0)  # waitress's loop stops on it

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)
    group.start()
    server.print_listen("Serving on http://{}:{}" + f" from {processes} processes")
    try:
        server.run()
    finally:
        group.stop()


class ProcessGroup:
    """The processes the first one starts, kept at ``count`` until :meth:`stop`."""

    def __init__(
        self, command: list[str], fds: list[int], count: int, shares: Shares, shares_fd: int
    ) -> None:
        self.command = command
        self.fds = fds
        self.count = count
        self.shares = shares
        self.shares_fd = shares_fd
        self.procs: list[subprocess.Popen] = []
        self._stopping = threading.Event()
        self._signalled = False
        self._lock = threading.Lock()

    def start(self) -> None:
        for slot in range(1, self.count + 1):
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        # Until it serves (loading the app takes seconds), the others accept every
        # connection: a count of 0 here would make them wait for it.
        self.shares.set(slot, VACANT)
        sockets = ",".join(str(fd) for fd in self.fds)
        env = {**os.environ, INHERITED: f"{sockets};{self.shares_fd};{slot};{os.getpid()}"}
        proc = subprocess.Popen(self.command, env=env, pass_fds=[*self.fds, self.shares_fd])
        with self._lock:
            self.procs.append(proc)
        threading.Thread(
            target=self._watch, args=(proc, slot), name="nick-jobs-server-watch", daemon=True
        ).start()

    def _watch(self, proc: subprocess.Popen, slot: int) -> None:
        code = proc.wait()
        # A process that is gone must not look like the least busy: nobody would accept.
        self.shares.set(slot, VACANT)
        with self._lock:
            self.procs.remove(proc)
        if self._stopping.is_set():
            return
        log.error("server process %d exited with %s; starting another", proc.pid, code)
        if not self._stopping.wait(RESTART_DELAY_S):
            self._spawn(slot)

    def signal_once(self, signum: int) -> None:
        with self._lock:
            if self._signalled:
                return
            self._signalled = True
            procs = list(self.procs)
        self._stopping.set()
        for proc in procs:
            proc.send_signal(signum)

    def stop(self, timeout_s: float = 120) -> None:
        """Stop the others (a ``SIGTERM`` unless they had one) and wait for them."""
        self.signal_once(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        with self._lock:
            procs = list(self.procs)
        for proc in procs:
            try:
                proc.wait(max(deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _one_stop_per_sigterm_pair(app: Any, window_s: float = 2.0) -> None:
    """Take a ``SIGTERM`` that follows another within ``window_s`` as the same stop.

    Signalled together with the first process (``killall``, a unit without
    ``KillMode=mixed``), a process gets the first one's ``SIGTERM`` too, which the drain
    would take for a second one, meaning "stop at once". The drain's own last signal,
    once it is done, still goes through.
    """
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous) or threading.current_thread() is not threading.main_thread():
        return
    registry = getattr(app, "registry", None)
    drain = registry.get("nick_jobs.drain") if registry is not None else None
    first: list[float] = []

    def on_sigterm(signum: int, frame: Any) -> None:
        now = time.monotonic()
        if drain is not None and drain.drained:
            previous(signum, frame)
        elif first and now - first[0] < window_s:
            log.info("SIGTERM again within %g s: the same stop", window_s)
        else:
            first[:] = [now]
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


def _stop_when_orphaned(parent: int, interval_s: float = 1.0) -> None:
    """Drain and stop this process (a ``SIGTERM`` to itself) once its first one is gone,
    killed so that it could not pass a signal on."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        log.warning("the first server process is gone; stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="nick-jobs-server-orphan", daemon=True).start()
