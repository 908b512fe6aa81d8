"""A small per-client sliding-window limiter for the login endpoints.

It lives in process memory: each API node limits on its own, which bounds guessing per
node; a deployment wanting one global limit puts it in the proxy in front.
"""

from __future__ import annotations

import threading
import time
from collections import deque


class RateLimiter:
    def __init__(self, limit: int, window_s: float, max_clients: int = 100_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_clients = max_clients
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, client: str, now: float | None = None) -> float | None:
        """Count one attempt; return None if allowed, else seconds until the next one is."""
        if self.limit <= 0:
            return None
        now = time.monotonic() if now is None else now
        with self._lock:
            hits = self._hits.get(client)
            if hits is None:
                if len(self._hits) >= self.max_clients:
                    self._evict(now)
                hits = self._hits[client] = deque()
            while hits and hits[0] <= now - self.window_s:
                hits.popleft()
            if len(hits) >= self.limit:
                return max(hits[0] + self.window_s - now, 0.001)
            hits.append(now)
            return None

    def _evict(self, now: float) -> None:
        stale = [c for c, h in self._hits.items() if not h or h[-1] <= now - self.window_s]
        for client in stale:
            del self._hits[client]
        if len(self._hits) >= self.max_clients:
            self._hits.clear()  # under a flood of distinct clients, forget rather than grow
