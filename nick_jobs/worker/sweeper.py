"""The sweeper: no job is silently lost when a worker dies or a message never arrives.

Each round, in one place at a time:

* running jobs whose heartbeat is older than ``nick_jobs.lease`` are rescued: retried
  when their action's ``max_retries`` allows another attempt, else failed ``WorkerLost``;
* created jobs whose message went out more than ``nick_jobs.resend_grace`` ago (broker
  down at commit, process killed between commit and send) are sent again; as many of
  the last sent as the queue holds undelivered messages are taken as still queued (a
  backlog that drains slower than the grace is not sent twice).

A heartbeat that could not be written because the database itself was away says nothing
about its worker: after this sweeper failed to reach the database, or after a PostgreSQL
server (re)started, no job is rescued until a lease has passed, time for the workers'
heartbeats to catch up.

Duplicate messages are harmless (a worker starts a job only from ``created``), and every
rescue is one conditional UPDATE, so even two rounds at once could not rescue a job
twice. On PostgreSQL a transaction-level advisory lock still keeps rounds apart, so the
work is done once; on SQLite the embedded process is the only one.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dramatiq
import sqlalchemy as sa

from nick_jobs.db import lost_connection
from nick_jobs.db.after_commit import transaction
from nick_jobs.db.meta import utcnow
from nick_jobs.jobs import lifecycle
from nick_jobs.jobs.actions import get_registry
from nick_jobs.jobs.remote_actions import Actions
from nick_jobs.ops import metrics
from nick_jobs.settings import registry_settings

log = logging.getLogger(__name__)

# pg_try_advisory_xact_lock key: a fixed number every nick-jobs process agrees on.
ADVISORY_LOCK_KEY = 0x6E69636B_6A6F6273 >> 1  # "nickjobs", fits a signed bigint


_LOCK_AND_UPTIME = sa.select(
    sa.func.pg_try_advisory_xact_lock(ADVISORY_LOCK_KEY),
    sa.func.pg_postmaster_start_time(),
)


@dataclass
class SweepResult:
    ran: bool = True  # False when another process held the lock
    retried: int = 0
    failed: int = 0
    resent: int = 0
    unsent: int = 0  # could not reach the broker: sent again after the next grace period

    @property
    def rescued(self) -> int:
        return self.retried + self.failed

    def __str__(self) -> str:
        if not self.ran:
            return "another sweeper is running; skipped"
        text = (
            f"rescued {self.rescued} (retried {self.retried}, failed {self.failed}), "
            f"re-sent {self.resent}"
        )
        return text + (f", could not send {self.unsent}" if self.unsent else "")


class _CountingSend:
    """The queue's send, counting for a round what went out and what could not.

    After one failure (logged where the send was asked for) the broker is taken as down
    for the rest of the round: the other sends are skipped and counted, and the round's
    summary line says how many. Their jobs stay created and are sent again once the
    grace period has passed.
    """

    def __init__(self, send: lifecycle.Send, result: SweepResult) -> None:
        self.send = send
        self.result = result

    def __call__(self, uuid: str, action: str, delay_s: float = 0.0) -> None:
        if self.result.unsent:
            self.result.unsent += 1
            return
        try:
            self.send(uuid, action, delay_s)
        except Exception:
            self.result.unsent += 1
            raise
        self.result.resent += 1


class Sweeper:
    """Rescues lost jobs and re-sends lost messages, for the app of ``registry``."""

    def __init__(self, registry: Mapping[str, Any]) -> None:
        self.settings = registry_settings(registry)
        self.engine: sa.Engine = registry["nick_jobs.engine"]
        self.queue = registry["nick_jobs.queue"]
        self.actions = get_registry(registry)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # When a round last failed to reach the database (monotonic), if it did.
        self._unreachable_at: float | None = None

    def _holding_off(self, up_s: float | None) -> bool:
        """Whether the heartbeats may be stale because the database was away: then a
        lease must pass before they say a worker is lost."""
        lease = self.settings.lease_s
        if up_s is not None and up_s < lease:
            return True
        failed = self._unreachable_at
        return failed is not None and time.monotonic() - failed < lease

    def run_once(self, now: dt.datetime | None = None) -> SweepResult:
        """One round; ``now`` (an aware UTC datetime) is for tests."""
        now = now or utcnow()
        settings = self.settings
        result = SweepResult()
        # Counted before the jobs are read: a message delivered in between only takes its
        # job out of "created"; one sent in between can at worst make a duplicate.
        waiting = self.queue.waiting()
        send = _CountingSend(self.queue.send, result)
        try:
            with transaction(self.engine) as conn:
                # Seconds the database has been up at ``now``, where it says (PostgreSQL).
                up_s = None
                if conn.dialect.name == "postgresql":
                    locked, up_since = conn.execute(_LOCK_AND_UPTIME).one()
                    if not locked:
                        return SweepResult(ran=False)
                    up_s = (now - up_since).total_seconds()
                if self._holding_off(up_s):
                    rescued = lifecycle.Rescued([], [])
                else:
                    # A remote action's retries are in its definition, in the database.
                    actions = Actions(self.actions, conn)

                    def max_retries(action_name: str) -> int:
                        action = actions.get(action_name)
                        return action.max_retries if action is not None else 0

                    rescued = lifecycle.rescue_lost(
                        conn, settings.lease_s, now, max_retries=max_retries, send=send
                    )
                # Broker unreachable (None): the sends would fail too; grace alone.
                lifecycle.stale_created(
                    conn, settings.resend_grace_s, now, waiting=waiting or 0, send=send
                )
        except (sa.exc.DBAPIError, sa.exc.TimeoutError) as exc:
            if lost_connection(exc):
                self._unreachable_at = time.monotonic()
            raise
        # The messages went out once the round committed (the lifecycle sends them), each
        # rescue with its log line.
        result.retried, result.failed = len(rescued.retried), len(rescued.failed)
        metrics.record_sweep(result)
        if result.rescued or result.resent or result.unsent:
            log.info("sweep: %s", result)
        return result

    # --- in a thread of its own ---------------------------------------------------------

    def start(self, interval_s: float | None = None) -> None:
        """Run a round every ``interval_s`` (``nick_jobs.sweep_interval``) in a daemon thread."""
        interval = self.settings.sweep_interval_s if interval_s is None else interval_s
        if interval <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, args=(interval,), name="nick-jobs-sweeper", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.run_once()
            except Exception as exc:
                if lost_connection(exc):
                    first = str(exc).splitlines()[0]
                    log.warning("sweep failed, the database is unreachable: %s", first)
                else:
                    log.exception("sweep failed; trying again in %g s", interval)


class EmbeddedSweeperMiddleware(dramatiq.Middleware):
    """Runs the sweeper for as long as the embedded worker runs (start-up to stop)."""

    def __init__(self, sweeper: Sweeper) -> None:
        self.sweeper = sweeper

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.sweeper.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.sweeper.stop()
