"""A small sliding-window counter of failed logins, by key (an address, an account, or
both).

It lives in process memory: each API node limits on its own, which bounds guessing per
node; a deployment wanting one global limit puts it in the proxy in front.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from dataclasses import dataclass, field


class RateLimiter:
    """At most ``limit`` events per key in any ``window_s`` seconds; 0 switches it off."""

    def __init__(self, limit: int, window_s: float, max_clients: int = 100_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_clients = max_clients
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, key: str, now: float | None = None) -> float | None:
        """None if ``key`` is below its limit, else the seconds until it is again.

        Counts nothing: what is counted is decided once the attempt's outcome is known
        (:meth:`record`)."""
        if self.limit <= 0:
            return None
        now = time.monotonic() if now is None else now
        with self._lock:
            hits = self._hits.get(key)
            if hits is None:
                return None
            self._expire(hits, now)
            if len(hits) >= self.limit:
                return max(hits[0] + self.window_s - now, 0.001)
            return None

    def record(self, key: str, now: float | None = None) -> None:
        """Count one event (a failed attempt) for ``key``."""
        if self.limit <= 0:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            hits = self._hits.get(key)
            if hits is None:
                if len(self._hits) >= self.max_clients:
                    self._evict(now)
                hits = self._hits[key] = deque()
            self._expire(hits, now)
            hits.append(now)
            # Refused attempts are not counted, yet a flood of racing failures could
            # grow one key past its limit: only the newest ``limit`` ever matter.
            while len(hits) > self.limit:
                hits.popleft()

    def forget(self, key: str, stamp: float) -> None:
        """Uncount the event :meth:`record` counted at ``stamp``."""
        with self._lock:
            hits = self._hits.get(key)
            if hits is not None:
                with contextlib.suppress(ValueError):
                    hits.remove(stamp)

    def _expire(self, hits: deque[float], now: float) -> None:
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()

    def _evict(self, now: float) -> None:
        stale = [c for c, h in self._hits.items() if not h or h[-1] <= now - self.window_s]
        for client in stale:
            del self._hits[client]
        if len(self._hits) >= self.max_clients:
            self._hits.clear()  # under a flood of distinct clients, forget rather than grow


@dataclass
class LoginAttempt:
    """One ``@login`` attempt, counted as a failure unless :meth:`uncount` is called."""

    retry_after: float | None
    at: float = 0.0
    counted: list[tuple[RateLimiter, str]] = field(default_factory=list)

    def uncount(self) -> None:
        """Not a failure after all: the password was right (or never checked)."""
        for limiter, key in self.counted:
            limiter.forget(key, self.at)


class LoginLimits:
    """Failed logins, counted three ways over one window:

    * per client address *and* account (``per_client``, the tight limit): a client
      guessing at one account is slowed, and only at that account, so the others behind
      the same proxy address still log in;
    * per account, from every address (``per_account``): a guess spread over many
      addresses is slowed too;
    * per address, at every account (``per_address``): one address trying a password on
      many accounts is slowed.

    An attempt is refused (unchecked) while any of its three counts is at its limit. An
    attempt in progress counts as a failure, so that simultaneous guesses can't all slip
    under a limit; a successful one is uncounted.
    """

    def __init__(
        self, per_client: int, per_account: int, per_address: int, window_s: float
    ) -> None:
        self.client = RateLimiter(per_client, window_s)
        self.account = RateLimiter(per_account, window_s)
        self.address = RateLimiter(per_address, window_s)
        self._lock = threading.Lock()

    def start(self, address: str, login: str, now: float | None = None) -> LoginAttempt:
        now = time.monotonic() if now is None else now
        keys = [
            (self.client, f"{address}\0{login}"),
            (self.account, login),
            (self.address, address),
        ]
        with self._lock:
            waits = [w for limiter, key in keys if (w := limiter.blocked(key, now)) is not None]
            if waits:
                return LoginAttempt(max(waits))
            for limiter, key in keys:
                limiter.record(key, now)
        return LoginAttempt(None, now, keys)
