"""The autocommit connections of requests that read, kept between requests.

Each request that reads (its identity, a job, a page) used to check a connection out of
SQLAlchemy's pool and back in: a ``Connection`` object, the pool's queue and its events,
about a sixth of the CPU of a job's ``GET`` in-process. A request now takes one that
another request gave back a moment ago, as it is, and gives it back when its response is
made. One that sat here longer than ``idle_s`` is pinged first, as the pool pings one
that sat idle there (:func:`~nick_jobs.models.ping_when_idle`); one that is broken,
closed or does not answer is dropped, and one left in a transaction is rolled back
first. At most ``keep`` wait here; the others go back to the pool at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa


class ReadConnections:
    def __init__(
        self,
        engine: sa.Engine,
        keep: int,
        idle_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.keep = keep
        self.idle_s = idle_s
        self.clock = clock
        # A stack of (connection, when it was given back): the one used last is taken
        # first. list.append and list.pop are atomic, so threads need no lock here.
        self._idle: list[tuple[sa.Connection, float]] = []
        sa.event.listen(engine, "engine_disposed", lambda _engine: self.close())

    def take(self) -> sa.Connection:
        while self._idle:
            try:
                conn, given_back = self._idle.pop()
            except IndexError:  # another thread took the last one
                break
            if not usable(conn):
                conn.close()
            elif self.clock() - given_back < self.idle_s or self._pings(conn):
                return conn
            else:
                conn.invalidate()
                conn.close()
        return self.engine.connect()

    def _pings(self, conn: sa.Connection) -> bool:
        """Whether a connection that sat idle still answers (as the pool's check-out
        asks one that sat idle there)."""
        try:
            self.engine.dialect.do_ping(conn.connection.dbapi_connection)
        except Exception:
            return False
        return True

    def give_back(self, conn: sa.Connection) -> None:
        if len(self._idle) >= self.keep or not usable(conn):
            if not conn.closed and not conn.invalidated and _broken(conn):
                conn.invalidate()
            conn.close()
            return
        if conn.in_transaction():
            # A statement run through SQLAlchemy begins one, even on an autocommit
            # connection (where ending it sends nothing); what the pool's return would do.
            conn.rollback()
        self._idle.append((conn, self.clock()))

    def close(self) -> None:
        """Give every waiting connection back to the pool."""
        while self._idle:
            try:
                conn, _ = self._idle.pop()
            except IndexError:  # another thread took the last one
                return
            conn.close()

    def __len__(self) -> int:
        return len(self._idle)


def usable(conn: sa.Connection) -> bool:
    return not conn.closed and not conn.invalidated and not _broken(conn)


def _broken(conn: sa.Connection) -> bool:
    driver = conn.connection.driver_connection
    return bool(getattr(driver, "broken", False) or getattr(driver, "closed", False))
