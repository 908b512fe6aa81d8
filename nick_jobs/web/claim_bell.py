"""Waking the claims that wait in this process when a remote job comes.

A claim that found no job waits (nick_jobs.web.views.consumers.WaitingClaim) and looks
again every 50 ms: what a job submitted through another process costs it. A job
submitted through this one rings the bell once its transaction has committed, and the
waiting claims look at once: the consumer has its job a few milliseconds after the
submit, not half a polling interval later (docs/benchmarks.md, claim latency).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from nick_jobs.db.after_commit import after_commit

REGISTRY_KEY = "nick_jobs.claim_bell"


class ClaimBell:
    """Counts the rings; a waiter sleeps until the count moves past what it has seen."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._rung = 0

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


def claim_bell(registry: Mapping[str, Any]) -> ClaimBell:
    bell: ClaimBell = registry[REGISTRY_KEY]
    return bell


def ring_after_commit(registry: Mapping[str, Any], conn: Session | sa.Connection) -> None:
    """Ring once the transaction on ``conn`` has committed (at once on one that
    autocommits): a claim that looks before would not see the job."""
    after_commit(conn, claim_bell(registry).ring)
