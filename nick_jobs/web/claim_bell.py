"""Waking the claims that wait for a remote job when one comes, in every API process.

A claim that found no job waits (nick_jobs.web.views.consumers.WaitingClaim). A job
submitted, handed back, retried, resumed or restarted through an API process rings the
bell once its transaction has committed, and the claims waiting there look at once: the
consumer has its job a few milliseconds after the submit.

On PostgreSQL the ring also reaches the other processes: the job lifecycle announces
each remote job made claimable with a ``NOTIFY`` in the transaction that made it
(:data:`nick_jobs.jobs.lifecycle.CLAIMS_CHANNEL`), which PostgreSQL delivers at commit
(never for one that rolls back), whichever process made it: an API process, the
scheduler, the sweeper, ``pshell``. Each process whose claims wait hears it through a
:class:`Listener`. Apart from the bells, a waiting claim looks every
``nick_jobs.claim_poll_interval``: for jobs that became claimable with no bell (a
retry's backoff or a claim window that ended; on SQLite, a job the scheduler made or the
sweeper rescued) and while a listener can't reach the database.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from nick_jobs.db.after_commit import after_commit
from nick_jobs.jobs.lifecycle import CLAIMS_CHANNEL

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

REGISTRY_KEY = "nick_jobs.claim_bell"


class ClaimBell:
    """Counts the rings; a waiter sleeps until the count moves past what it has seen.

    With an ``engine`` on PostgreSQL it has a :attr:`listener` for the rings of the
    other processes, started by :meth:`wanted`.
    """

    def __init__(self, engine: sa.Engine | None = None) -> None:
        self._condition = threading.Condition()
        self._rung = 0
        self.listener: Listener | None = None
        if engine is not None and engine.dialect.name == "postgresql":
            self.listener = Listener(engine, self)

    @property
    def rung(self) -> int:
        return self._rung

    def ring(self) -> None:
        with self._condition:
            self._rung += 1
            self._condition.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for a ring after ``seen``; return the count."""
        with self._condition:
            if self._rung == seen:
                self._condition.wait(timeout)
            return self._rung

    def wanted(self) -> None:
        """A claim is about to wait in this process: hear the other processes' rings."""
        if self.listener is not None:
            self.listener.wanted()

    def close(self, timeout: float = 5.0) -> None:
        """Stop listening, and close the listener's connection (an application that is
        done with; a claim that waits afterwards starts it again)."""
        if self.listener is not None:
            self.listener.close(timeout)


class Listener:
    """This process's ear for the claim bells of the other processes (``LISTEN``).

    The first claim that waits starts it. It holds one connection of its own, outside
    the pool, and rings the process's bell at each notification, and once each time it
    has begun to listen: a job that came while it wasn't listening is found by that look.
    It closes its connection once no claim has waited here for :attr:`linger_s`
    seconds; the next claim that waits starts it again. A connection that fails is
    opened again after a growing wait, while the waiting claims' own looks go on.
    """

    #: Seconds without a waiting claim after which the connection is closed.
    linger_s = 60.0
    #: How often at most it checks whether it is still wanted.
    check_s = 1.0
    retry_first_s = 0.5
    retry_max_s = 10.0

    def __init__(self, engine: sa.Engine, bell: ClaimBell) -> None:
        self.engine = engine
        self.bell = bell
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wanted_at = 0.0
        self._closing = threading.Event()  # wakes a wait before the next try
        #: Set while the listener listens: a ring of another process reaches this one.
        self.listening = threading.Event()

    def wanted(self) -> None:
        with self._lock:
            self._wanted_at = time.monotonic()
            self._closing.clear()
            # Not alive: it failed for good, or the process was forked since it started.
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="nick-jobs-claim-listener", daemon=True
                )
                self._thread.start()

    def close(self, timeout: float) -> None:
        with self._lock:
            self._wanted_at = -math.inf
            thread = self._thread
        self._closing.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _done(self) -> bool:
        """Whether no claim has waited for ``linger_s``; if so, the thread is let go (a
        claim that waits after this starts another)."""
        with self._lock:
            if time.monotonic() - self._wanted_at < self.linger_s:
                return False
            self._thread = None
            return True

    def _run(self) -> None:
        wait = self.retry_first_s
        while not self._done():
            try:
                self._listen()
                return
            except Exception as exc:
                reason = (str(exc).splitlines() or [repr(exc)])[0]
                log.warning(
                    "could not listen for the claim bells of other processes (%s); "
                    "trying again in %.1f s",
                    reason,
                    wait,
                )
            self._closing.wait(wait)
            wait = min(wait * 2, self.retry_max_s)

    def _listen(self) -> None:
        """Listen until no claim waits any more; raises when the connection fails."""
        pooled = self.engine.raw_connection()
        # psycopg's: a PostgreSQL engine of nick-jobs has no other driver.
        conn = cast("psycopg.Connection[Any]", pooled.driver_connection)
        # Its own for as long as it listens, and closed for good afterwards.
        pooled.detach()
        try:
            conn.autocommit = True
            conn.execute(f"LISTEN {CLAIMS_CHANNEL}")
            self.listening.set()
            self.bell.ring()
            while True:
                for _ in conn.notifies(timeout=self.check_s):
                    self.bell.ring()
                if self._done():
                    return
        finally:
            self.listening.clear()
            with contextlib.suppress(Exception):
                pooled.close()


def claim_bell(registry: Mapping[str, Any]) -> ClaimBell:
    bell: ClaimBell = registry[REGISTRY_KEY]
    return bell


def ring_after_commit(registry: Mapping[str, Any], conn: Session | sa.Connection) -> None:
    """Ring in this process once the transaction on ``conn`` has committed (at once on
    one that autocommits): a claim that looks before would not see the job. The other
    processes hear the lifecycle's announcement (on PostgreSQL) at the same moment."""
    after_commit(conn, claim_bell(registry).ring)
