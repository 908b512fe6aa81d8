"""How many streams a process and a user may hold open at once.

Each open stream occupies a server thread for its whole life; the caps keep enough
threads free for plain requests and stop one user from taking them all.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client.core import Metric


class StreamLimits:
    def __init__(self, max_per_process: int, max_per_user: int) -> None:
        self.max_per_process = max_per_process
        self.max_per_user = max_per_user
        self._lock = threading.Lock()
        self._open = 0
        self._per_user: Counter[str] = Counter()

    def acquire(self, user: str) -> str | None:
        """Take a slot for ``user``; None when granted, else why not (for the 503)."""
        with self._lock:
            if self._open >= self.max_per_process:
                return "This server has as many streams open as it allows"
            if self._per_user[user] >= self.max_per_user:
                return f"You have {self.max_per_user} streams open already"
            self._open += 1
            self._per_user[user] += 1
            return None

    def release(self, user: str) -> None:
        with self._lock:
            self._open -= 1
            self._per_user[user] -= 1
            if self._per_user[user] <= 0:
                del self._per_user[user]

    @property
    def open(self) -> int:
        return self._open


class OpenStreamsCollector:
    """``nick_jobs_open_streams``: the streams this process holds open now."""

    def __init__(self, limits: StreamLimits) -> None:
        self.limits = limits

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        gauge = GaugeMetricFamily(
            "nick_jobs_open_streams", "Server-Sent Event streams open on this API process."
        )
        gauge.add_metric([], self.limits.open)
        yield gauge
