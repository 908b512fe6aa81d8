"""Interrupting the handler of an aborted job: the one Dramatiq middleware that raises an
exception in another thread, as Dramatiq's own ``TimeLimit`` does.

The runner's watcher decides when a handler is overdue (its job was aborted more than the
action's ``abort_grace`` ago); this middleware knows which thread runs which job's handler
and is the only place that interrupts one. An interruption lands between two Python
instructions of that thread: a blocking system call ends first.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, cast

import dramatiq
from dramatiq.broker import MessageProxy

# Public: dramatiq.middleware lists raise_thread_exception in its __all__, for middleware
# such as its TimeLimit and this one.
from dramatiq.middleware import raise_thread_exception as _raise_thread_exception

# Dramatiq leaves it unannotated; its documented signature is (thread_id, exception).
raise_thread_exception = cast(Callable[[int, type[BaseException]], None], _raise_thread_exception)


class Interrupts(dramatiq.Middleware):
    """Which thread runs which job's handler, and interrupting it on request.

    The runner enters :meth:`handler` around each handler call, in the handler's thread
    (as ``TimeLimit`` takes ``threading.get_ident()`` in ``before_process_message``);
    :meth:`interrupt` reaches a thread only while it is inside. The worker's broker has
    this middleware (the embedded worker and ``nick-jobs worker`` processes alike), so
    once a thread's message is processed or skipped, nothing of it is left here to
    interrupt. A runner used without a broker (tests, one-off runs) uses it the same way.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handlers: dict[int, str] = {}  # thread ident → uuid of the job it runs

    @contextlib.contextmanager
    def handler(self, uuid: str) -> Iterator[None]:
        """Around the handler of job ``uuid``, in its thread: while inside, it can be
        interrupted."""
        ident = threading.get_ident()
        with self._lock:
            self._handlers[ident] = uuid
        try:
            yield
        finally:
            # Taking the lock waits for an interrupt() under way: its exception lands
            # here at the latest, inside the runner's handling of the job.
            with self._lock:
                self._handlers.pop(ident, None)

    def running(self) -> dict[str, int]:
        """The jobs whose handlers run now: uuid → thread ident."""
        with self._lock:
            return {uuid: ident for ident, uuid in self._handlers.items()}

    def interrupt(self, uuid: str, exception: type[BaseException]) -> bool:
        """Raise ``exception`` in the thread running job ``uuid``'s handler; False (and
        nothing raised) when no handler of that job runs."""
        with self._lock:
            idents = [ident for ident, running in self._handlers.items() if running == uuid]
            for ident in idents:
                raise_thread_exception(ident, exception)
        return bool(idents)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        # A handler always leaves through handler()'s exit; this makes sure no thread
        # that has moved on to another message is ever reached with this one's interrupt.
        with self._lock:
            self._handlers.pop(threading.get_ident(), None)

    after_skip_message = after_process_message
