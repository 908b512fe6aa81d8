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

``production.ini`` and ``development.ini`` use it with ``use = egg:nick-jobs#main``; it
takes waitress's own settings.
"""

from __future__ import annotations

import logging
from typing import Any

from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, MultiSocketServer
from waitress.server import create_server as waitress_server


class Channel(HTTPChannel):
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
    server = waitress_server(app, **settings)
    listeners = server.map.values() if isinstance(server, MultiSocketServer) else [server]
    for listener in listeners:
        if isinstance(listener, BaseWSGIServer):
            listener.channel_class = Channel
    return server


def serve(app: Any, **settings: Any) -> None:
    logging.basicConfig()  # as waitress.serve: a no-op once logging is configured
    server = create_server(app, **settings)
    server.print_listen("Serving on http://{}:{}")
    server.run()


def serve_paste(app: Any, global_conf: dict[str, str], **settings: Any) -> int:
    """The ``paste.server_runner`` behind ``use = egg:nick-jobs#main``."""
    serve(app, **settings)
    return 0
