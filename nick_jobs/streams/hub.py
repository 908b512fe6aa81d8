"""One poller per API process that turns database changes into stream events.

Every API node, worker and scheduler writes job state to the database, so the database
is where a node learns what changed, whichever process changed it. While at least one
stream is open, the hub's thread looks every ``poll_interval`` with a few short queries
through the autocommit read pool, whatever the number of streams:

- for job streams, the subscribed jobs' rows by uuid (status via ``jobs.changed``,
  progress by checksum) and their new log lines by id (one writer per job at a time, so
  a job's line ids are its commit order);
- for the all-jobs stream, the ``jobs.changed`` values above a watermark. On PostgreSQL
  a counter value is taken before its transaction commits, so a lower value can become
  visible after a higher one; the hub re-reads a short window (``SETTLE_S``) and
  remembers which values it delivered, so a late commit is delivered once, not lost.

Streams wait on their own queues and hold no connection. With no stream open the thread
sleeps and no query runs.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from nick_jobs.db.meta import table
from nick_jobs.jobs.model import FINISHED_STATUSES, Job, JobLog, JobStatus
from nick_jobs.settings import StreamSettings
from nick_jobs.streams.sse import JobCursor, progress_checksum

log = logging.getLogger(__name__)

jobs = table(Job)
job_logs = table(JobLog)

# A job's log lines read per poll, over all subscribed jobs; a longer backlog continues
# on the next poll (and the job's close waits for it).
LOG_BATCH = 5000
# How long a change counter value may stay invisible before the hub stops waiting for it:
# far above the time between taking a value and committing (one statement on the
# worker, one request on the API).
SETTLE_S = 2.0
FEED_BATCH = 20_000
FEED_BACKFILL = 1000

# What tells whether a watched job changed: small columns only, as this runs every poll
# for every watched job; the whole row is read only for the jobs whose status changed.
_CHANGES_BY_UUID = sa.select(
    jobs.c.uuid, jobs.c.changed, jobs.c.status, jobs.c.attempt, jobs.c.progress
).where(jobs.c.uuid.in_(sa.bindparam("b_uuids", expanding=True)))
_JOBS_BY_UUID = sa.select(jobs).where(jobs.c.uuid.in_(sa.bindparam("b_uuids", expanding=True)))
_NEWEST_LINES = (
    sa.select(job_logs.c.job_uuid, sa.func.max(job_logs.c.id).label("id"))
    .where(job_logs.c.job_uuid.in_(sa.bindparam("b_uuids", expanding=True)))
    .group_by(job_logs.c.job_uuid)
)
_LINES = (
    sa.select(
        job_logs.c.id,
        job_logs.c.job_uuid,
        job_logs.c.attempt,
        job_logs.c.time,
        job_logs.c.level,
        job_logs.c.message,
    )
    .where(
        job_logs.c.job_uuid.in_(sa.bindparam("b_uuids", expanding=True)),
        job_logs.c.id > sa.bindparam("b_after"),
    )
    .order_by(job_logs.c.id)
    .limit(LOG_BATCH)
)
_NEWEST_CHANGE = sa.select(sa.func.max(jobs.c.changed))
_CHANGES = (
    sa.select(jobs.c.changed)
    .where(jobs.c.changed > sa.bindparam("b_after"))
    .order_by(jobs.c.changed)
    .limit(FEED_BATCH)
)
_CHANGED_JOBS = (
    sa.select(jobs)
    .where(jobs.c.changed.in_(sa.bindparam("b_values", expanding=True)))
    .order_by(jobs.c.changed)
)
_CHANGED_SINCE = (
    sa.select(jobs)
    .where(jobs.c.changed > sa.bindparam("b_after"))
    .order_by(jobs.c.changed)
    .limit(FEED_BACKFILL)
)

# What a subscriber's queue carries: (event name, payload, event id).
Event = tuple[str, Any, str | None]


class Subscription:
    """One open stream's inbox. The hub puts events; the stream's thread takes them."""

    def __init__(self, max_queued: int) -> None:
        self._queue: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._max_queued = max_queued
        self.closed = False

    def put(self, event: Event) -> None:
        if self.closed:
            return
        if self._queue.qsize() >= self._max_queued:
            # A client that doesn't read can't make the server buffer without end: it
            # is told to reconnect, and resumes from its last event id.
            self.close("overflow", reconnect=True)
            return
        self._queue.put(event)

    def close(self, reason: str, reconnect: bool) -> None:
        if not self.closed:
            self._queue.put(("close", {"reason": reason, "reconnect": reconnect}, None))
            self.closed = True

    def get(self, timeout: float) -> Event | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None


class JobSubscription(Subscription):
    # A job stream: status, progress and log lines.
    lines_only = False

    def __init__(self, uuid: str, cursor: JobCursor, max_queued: int) -> None:
        super().__init__(max_queued)
        self.uuid = uuid
        self.cursor = cursor


class LogSubscription(JobSubscription):
    """A job's log lines alone (``GET /@jobs/{uuid}/log?follow=true``), each line's id
    its event id, then a close once the job has ended."""

    lines_only = True

    def __init__(self, uuid: str, after: int, min_level: int, max_queued: int) -> None:
        super().__init__(uuid, JobCursor(log_id=after), max_queued)
        self.min_level = min_level


class FeedSubscription(Subscription):
    def __init__(self, after: int | None, allowed: Callable[[Any], bool], max_queued: int) -> None:
        super().__init__(max_queued)
        # None: live from now on; a number: first what came after it (Last-Event-ID).
        self.after = after
        self.high = after or 0
        self.allowed = allowed


class StreamHub:
    def __init__(self, engine: Callable[[], sa.Engine], settings: StreamSettings) -> None:
        self._engine = engine
        self.settings = settings
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._jobs: dict[str, set[JobSubscription]] = {}
        self._feeds: set[FeedSubscription] = set()
        self._thread: threading.Thread | None = None
        self._shut_down = False
        self._failing = False
        self._reset_feed()
        self.polls = 0  # for tests and metrics: how many times the hub has looked

    # --- subscribing ---------------------------------------------------------------

    def subscribe_job(self, uuid: str, cursor: JobCursor) -> JobSubscription:
        sub = JobSubscription(uuid, cursor, self.settings.max_queued_events)
        with self._lock:
            if self._shut_down:
                sub.close("shutdown", reconnect=True)
                return sub
            self._jobs.setdefault(uuid, set()).add(sub)
            self._start()
        return sub

    def subscribe_log(self, uuid: str, after: int, min_level: int = 0) -> LogSubscription:
        """The lines of job ``uuid`` after line id ``after``, at or above ``min_level``."""
        sub = LogSubscription(uuid, after, min_level, self.settings.max_queued_events)
        with self._lock:
            if self._shut_down:
                sub.close("shutdown", reconnect=True)
                return sub
            self._jobs.setdefault(uuid, set()).add(sub)
            self._start()
        return sub

    def subscribe_feed(self, after: int | None, allowed: Callable[[Any], bool]) -> FeedSubscription:
        sub = FeedSubscription(after, allowed, self.settings.max_queued_events)
        with self._lock:
            if self._shut_down:
                sub.close("shutdown", reconnect=True)
                return sub
            self._feeds.add(sub)
            self._start()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if isinstance(sub, JobSubscription):
                subs = self._jobs.get(sub.uuid)
                if subs is not None:
                    subs.discard(sub)
                    if not subs:
                        del self._jobs[sub.uuid]
            else:
                self._feeds.discard(sub)

    @property
    def open_streams(self) -> int:
        with self._lock:
            return len(self._feeds) + sum(len(s) for s in self._jobs.values())

    def shutdown(self) -> None:
        """End every stream with a close event that asks its client to reconnect."""
        with self._lock:
            self._shut_down = True
            subs = [*self._feeds, *(s for group in self._jobs.values() for s in group)]
            self._jobs.clear()
            self._feeds.clear()
            self._wake.notify_all()
        for sub in subs:
            sub.close("shutdown", reconnect=True)

    # --- the poller ----------------------------------------------------------------

    def _start(self) -> None:
        # Called with the lock held.
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="nick-jobs-streams", daemon=True)
            self._thread.start()
        self._wake.notify_all()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._shut_down and not (self._jobs or self._feeds):
                    self._reset_feed()
                    self._wake.wait()
                if self._shut_down:
                    return
            started = time.monotonic()
            try:
                self.poll()
            except Exception:
                # The database is down or busy: streams stay open (keepalives go on) and
                # catch up from their cursors once it answers again. Said once, not ten
                # times a second.
                if not self._failing:
                    log.warning("streams: the database did not answer", exc_info=True)
                self._failing = True
            else:
                if self._failing:
                    log.warning("streams: the database answers again")
                self._failing = False
            pause = self.settings.poll_interval_s - (time.monotonic() - started)
            if pause > 0:
                with self._lock:
                    if not self._shut_down:
                        self._wake.wait(pause)

    def poll(self) -> None:
        with self._lock:
            job_subs = {uuid: list(subs) for uuid, subs in self._jobs.items()}
            feeds = list(self._feeds)
        if not job_subs and not feeds:
            return
        with self._engine().connect() as conn:
            if job_subs:
                self._poll_jobs(conn, job_subs)
            if feeds:
                self._poll_feed(conn, feeds)
        self.polls += 1

    def _poll_jobs(self, conn: sa.Connection, job_subs: dict[str, list[JobSubscription]]) -> None:
        uuids = list(job_subs)
        fresh = [u for u, subs in job_subs.items() if any(s.cursor.log_id is None for s in subs)]
        if fresh:
            newest = dict(conn.execute(_NEWEST_LINES, {"b_uuids": fresh}).all())
            for uuid in fresh:
                for sub in job_subs[uuid]:
                    if sub.cursor.log_id is None:
                        sub.cursor.log_id = newest.get(uuid, 0)
        # The rows first, then the lines: a line written before a job finished is then
        # always read no later than the finish itself, so it goes out before "close".
        rows = {row.uuid: row for row in conn.execute(_CHANGES_BY_UUID, {"b_uuids": uuids})}
        changed = [
            uuid
            for uuid, row in rows.items()
            # A log stream's cursor has no status: it never asks for the whole row.
            if any(not s.lines_only and row.changed > s.cursor.changed for s in job_subs[uuid])
        ]
        if changed:
            rows.update(
                (row.uuid, row) for row in conn.execute(_JOBS_BY_UUID, {"b_uuids": changed})
            )
        after = min(s.cursor.log_id or 0 for subs in job_subs.values() for s in subs)
        lines = conn.execute(_LINES, {"b_uuids": uuids, "b_after": after}).all()
        more_lines = len(lines) == LOG_BATCH
        by_job: dict[str, list[Any]] = collections.defaultdict(list)
        for line in lines:
            by_job[line.job_uuid].append(line)
        for uuid, subs in job_subs.items():
            row = rows.get(uuid)
            for sub in subs:
                if row is None:
                    sub.close("deleted", reconnect=False)
                    continue
                if isinstance(sub, LogSubscription):
                    self._deliver_lines(sub, row, by_job.get(uuid, ()), more_lines)
                else:
                    self._deliver_job(sub, row, by_job.get(uuid, ()), more_lines)

    @staticmethod
    def _deliver_job(sub: JobSubscription, row: Any, lines: Any, more_lines: bool) -> None:
        cursor = sub.cursor
        finished = row.status in FINISHED_STATUSES
        status_changed = row.changed > cursor.changed
        checksum = progress_checksum(row.progress)
        progress_changed = row.progress is not None and checksum != cursor.progress

        def status() -> None:
            cursor.changed = row.changed
            sub.put(("status", row, cursor.event_id()))

        # A stream's first event is the job's status; after that, a finish goes last,
        # behind the lines and progress written before it.
        if status_changed and (not finished or cursor.changed < 0):
            status()
        if progress_changed:
            cursor.progress = checksum
            sub.put(("progress", row, cursor.event_id()))
        for line in lines:
            if line.id > (cursor.log_id or 0):
                cursor.log_id = line.id
                sub.put(("log", line, cursor.event_id()))
        if finished:
            if row.changed > cursor.changed:
                status()
            if not more_lines:
                sub.close("finished", reconnect=False)

    @staticmethod
    def _deliver_lines(sub: LogSubscription, row: Any, lines: Any, more_lines: bool) -> None:
        cursor = sub.cursor
        for line in lines:
            if line.id > (cursor.log_id or 0):
                # A line below the stream's level moves the cursor all the same: resuming
                # from the last id sent does not read it again.
                cursor.log_id = line.id
                if line.level >= sub.min_level:
                    sub.put(("log", line, str(line.id)))
        # The row was read before the lines: every line written before the job ended has
        # gone out by now (unless the batch was full: the close waits for the next look).
        if more_lines:
            return
        if row.status in FINISHED_STATUSES:
            sub.close("finished", reconnect=False)
        elif row.status == JobStatus.STOPPED:
            sub.close("stopped", reconnect=False)

    # --- the all-jobs feed ---------------------------------------------------------

    def _reset_feed(self) -> None:
        self._feed_low: int | None = None
        self._feed_seen: set[int] = set()
        self._feed_marks: collections.deque[tuple[float, int]] = collections.deque()

    def _poll_feed(self, conn: sa.Connection, feeds: list[FeedSubscription]) -> None:
        now = time.monotonic()
        if self._feed_low is None:
            self._feed_low = conn.execute(_NEWEST_CHANGE).scalar() or 0
            self._feed_marks.append((now, self._feed_low))
            for feed in feeds:
                if feed.after is None:
                    feed.high = self._feed_low
        low = self._feed_low
        values = conn.execute(_CHANGES, {"b_after": low}).scalars().all()
        new = [v for v in values if v not in self._feed_seen]
        for feed in feeds:
            if feed.after is not None:
                self._backfill(conn, feed, low)
        if new:
            for row in conn.execute(_CHANGED_JOBS, {"b_values": new}):
                self._feed_seen.add(row.changed)
                for feed in feeds:
                    self._deliver_feed(feed, row)
        if values:
            self._feed_marks.append((now, max(values[-1], self._feed_marks[-1][1])))
        # Values older than the settle time are final: forget them, move the watermark.
        while len(self._feed_marks) > 1 and self._feed_marks[1][0] <= now - SETTLE_S:
            self._feed_marks.popleft()
        if self._feed_marks[0][0] <= now - SETTLE_S and self._feed_marks[0][1] > low:
            self._feed_low = self._feed_marks[0][1]
            self._feed_seen = {v for v in self._feed_seen if v > self._feed_low}

    def _backfill(self, conn: sa.Connection, feed: FeedSubscription, low: int) -> None:
        """What a resuming client missed: changes after its id the hub has passed already."""
        after, feed.after = feed.after, None
        if after is None:
            return
        for row in conn.execute(_CHANGED_SINCE, {"b_after": after}):
            if row.changed <= low or row.changed in self._feed_seen:
                self._deliver_feed(feed, row)

    @staticmethod
    def _deliver_feed(feed: FeedSubscription, row: Any) -> None:
        if feed.after is not None or not feed.allowed(row):
            return
        # The id only grows, even for a late commit with a lower value: a client resumes
        # from the highest value it has seen, and nothing above it is sent twice.
        feed.high = max(feed.high, row.changed)
        feed.put(("status", row, str(feed.high)))
