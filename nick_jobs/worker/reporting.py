"""What a running handler reports: steps, a message and log lines, written in batches.

A handler may report as often as it likes. Each report only changes memory; the state is
written by one thread per worker process, at most once a :attr:`Report.interval_s` per
job, as one transaction: an ``UPDATE`` of ``jobs.progress`` fenced on the job's uuid,
attempt and ``running`` status, plus an ``INSERT`` of the lines into ``job_logs`` (made
only when the ``UPDATE`` matched, so a job that was deleted or retried gets no lines).
When the attempt ends, the runner takes what is still buffered (:meth:`Report.take_final`)
and writes it in the transaction of the statement that ends the attempt: the progress in
that ``UPDATE`` itself, the lines only if it matched. An attempt that was aborted (or
retried, deleted) meanwhile gets them written on their own, fenced on the attempt only,
so the last lines of an aborted attempt are kept too.

A job that reports nothing costs nothing: no thread wakes for it and nothing is written.

Each line is also copied to the process log (the ``nick_jobs.job`` logger), at most
``nick_jobs.job_log_copy_rate`` lines a second per job (:class:`LogCopy`): a handler that
logs a million lines keeps them all in its own log without copying them all to the
process's.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from nick_jobs.db import lost_connection
from nick_jobs.db.meta import utcnow
from nick_jobs.jobs.lifecycle import RUNNING, insert_lines, jobs

log = logging.getLogger(__name__)
# Where a job's lines are copied, for the process log (the runner logs to it as well).
job_log = logging.getLogger("nick_jobs.job")

# Levels as the ``logging`` module numbers them; the API names them.
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
LEVELS["error"] = logging.ERROR
LEVEL_NAMES = tuple(LEVELS)

MAX_STEPS = 1000
MAX_TEXT = 10_000  # characters of a log line, a message or a step name
# Buffered log lines before the handler itself must wait for a write: a handler that logs
# in a tight loop can't fill the worker's memory.
MAX_BUFFERED_LINES = 10_000
# A level is stored as a SMALLINT.
MAX_LEVEL = 32_767
# Lines of one job copied to the process log a second (nick_jobs.job_log_copy_rate).
LOG_COPY_RATE = 10


def level_number(level: str | int) -> int:
    """``"info"`` → 20; an int is kept. Raises ``ValueError`` for an unknown name."""
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    try:
        return LEVELS[str(level).lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; use one of {LEVEL_NAMES}") from None


def level_name(number: int) -> str:
    """The API's name for a stored level: the highest named level at or below it."""
    name = "debug"
    for candidate, value in LEVELS.items():
        if number >= value:
            name = candidate
    return name


def _text(value: Any) -> str:
    # PostgreSQL stores no NUL character, in text or in jsonb; and a lone surrogate can't
    # be encoded at all. Either would make the database refuse the statement that carries
    # the text, which is the one that ends the attempt.
    text = str(value).replace("\x00", "\ufffd")
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _amount(value: float | None) -> float | None:
    # NaN and Infinity are not JSON: PostgreSQL's jsonb would refuse the whole write, and
    # with it the outcome of the attempt it rides on.
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value


def _fraction(step: dict[str, Any]) -> float:
    if step["status"] == "done":
        return 1.0
    done, total = step["done"], step["total"]
    if step["status"] == "running" and total and done is not None:
        fraction: float = done / total
        return max(0.0, min(1.0, fraction))
    return 0.0


def progress_json(steps: list[dict[str, Any]], message: str) -> dict[str, Any]:
    """The stored ``progress``: percent from the steps (each weighs the same)."""
    percent = 100.0 * sum(_fraction(s) for s in steps) / len(steps) if steps else 0.0
    return {"percent": round(percent, 2), "message": message, "steps": steps}


def _update(fenced_on_running: bool, with_progress: bool) -> sa.Update:
    where = [jobs.c.uuid == sa.bindparam("b_uuid"), jobs.c.attempt == sa.bindparam("b_attempt")]
    if fenced_on_running:
        where.append(jobs.c.status == RUNNING)
    # Only lines: the UPDATE still fences them (and locks the row against a concurrent
    # delete until they are in).
    progress = sa.bindparam("b_progress") if with_progress else jobs.c.progress
    return jobs.update().where(*where).values(progress=progress)


# Built once: (fenced on running, with progress) → statement.
_UPDATES = {(r, p): _update(r, p) for r in (True, False) for p in (True, False)}


class LogCopy:
    """Copies one job's lines to the process log, at most ``rate`` a second (0: all).

    A window opens at the first line past the previous one's second; what did not fit
    in a window is counted, and one line says how many when the next window opens or
    the attempt ends, at the level of the loudest line it counts. Lines the process log
    would drop anyway (below the ``nick_jobs.job`` logger's level) use none of the rate.
    """

    WINDOW_S = 1.0

    def __init__(self, uuid: str, rate: int = LOG_COPY_RATE) -> None:
        self.uuid = uuid
        self.rate = rate
        self.lock = threading.Lock()  # a handler may log from threads of its own
        self.window_start = -math.inf
        self.copied = 0
        self.left_out = 0
        self.left_out_level = logging.NOTSET

    def line(self, level: int, message: str) -> None:
        if not job_log.isEnabledFor(level):
            return
        if self.rate <= 0:
            job_log.log(level, "job %s: %s", self.uuid, message)
            return
        with self.lock:
            now = time.monotonic()
            if now - self.window_start >= self.WINDOW_S:
                summary = self._take_summary()
                self.window_start, self.copied = now, 0
            else:
                summary = None
            copy = self.copied < self.rate
            if copy:
                self.copied += 1
            else:
                self.left_out += 1
                self.left_out_level = max(self.left_out_level, level)
        # Logged outside the lock: a slow log handler holds up this job's thread only.
        if summary is not None:
            self._log_summary(*summary)
        if copy:
            job_log.log(level, "job %s: %s", self.uuid, message)

    def finish(self) -> None:
        """The attempt is over: say how many lines its last window left out."""
        with self.lock:
            summary = self._take_summary()
        if summary is not None:
            self._log_summary(*summary)

    def _take_summary(self) -> tuple[int, int] | None:
        if not self.left_out:
            return None
        summary = (self.left_out, self.left_out_level)
        self.left_out, self.left_out_level = 0, logging.NOTSET
        return summary

    def _log_summary(self, count: int, level: int) -> None:
        job_log.log(
            level,
            "job %s: %d log lines left out of the process log (it gets %d a second); "
            "the job's log has them all",
            self.uuid,
            count,
            self.rate,
        )


@dataclass
class Final:
    """What an attempt reported and was not written yet when it ended.

    The runner writes it with the statement that ends the attempt: ``progress`` (None:
    unchanged) in that ``UPDATE``, the ``lines`` (``job_logs`` rows) only if it matched,
    in the same statement or transaction (:func:`nick_jobs.jobs.lifecycle.complete`).
    """

    progress: dict[str, Any] | None
    lines: list[dict[str, Any]]


class Report:
    """The progress of one attempt of one job, and its log lines not written yet."""

    def __init__(
        self,
        engine: sa.Engine,
        uuid: str,
        attempt: int,
        interval_s: float,
        log_copy_rate: int = LOG_COPY_RATE,
    ) -> None:
        self.engine = engine
        self.uuid = uuid
        self.attempt = attempt
        self.interval_s = interval_s
        self.copy = LogCopy(uuid, log_copy_rate)
        self.lock = threading.Lock()  # guards the fields below
        self.steps: dict[str, dict[str, Any]] = {}
        self.message = ""
        self.lines: list[dict[str, Any]] = []
        self.changed = False  # progress changed since the last write
        self.registered = False
        self.closed = False
        # One write at a time, so an older state never lands after a newer one.
        self.write_lock = threading.Lock()
        self.last_write = time.monotonic()
        # Set when a write found the job no longer running: its context checks at once.
        self.gone = False

    # --- changes, from the handler's thread --------------------------------------------

    def _touch(self) -> None:
        self.changed = True
        if not self.registered:
            self.registered = True
            FLUSHER.add(self)

    def _current(self) -> dict[str, Any] | None:
        for step in reversed(self.steps.values()):
            if step["status"] == "running":
                return step
        return None

    def _get(self, name: str) -> dict[str, Any]:
        step = self.steps.get(name)
        if step is None:
            if len(self.steps) >= MAX_STEPS:
                raise ValueError(f"a job reports at most {MAX_STEPS} steps")
            step = {"name": name, "done": None, "total": None, "status": "pending"}
            self.steps[name] = step
        return step

    def plan(self, names: list[str]) -> None:
        with self.lock:
            for name in names:
                self._get(_text(name))
            self._touch()

    def step(
        self, name: str | None, done: float | None, total: float | None, message: str | None
    ) -> None:
        with self.lock:
            current = self._current() if name is None else None
            step = current or self._get("main" if name is None else _text(name))
            if step["status"] != "running":
                # Steps run one after the other: starting one ends the one before.
                for other in self.steps.values():
                    if other["status"] == "running" and other is not step:
                        other["status"] = "done"
                        if other["total"] is not None:
                            other["done"] = other["total"]
                step["status"] = "running"
            total, done = _amount(total), _amount(done)
            if total is not None:
                step["total"] = total
            if done is not None:
                step["done"] = done
            finite = step["total"] is not None and step["done"] is not None
            if finite and step["done"] >= step["total"]:
                step["status"] = "done"
            if message is not None:
                self.message = _text(message)
            self._touch()

    def set_message(self, text: str) -> None:
        with self.lock:
            self.message = _text(text)
            self._touch()

    def add_line(self, level: int, message: str) -> None:
        """Add a line to the job's log, and copy it to the process log (:class:`LogCopy`)."""
        line = {
            "job_uuid": self.uuid,
            "attempt": self.attempt,
            "time": utcnow(),
            "level": max(-MAX_LEVEL, min(MAX_LEVEL, level)),
            "message": _text(message),
        }
        with self.lock:
            self.lines.append(line)
            full = len(self.lines) >= MAX_BUFFERED_LINES
            if not self.registered:
                self.registered = True
                FLUSHER.add(self)
        self.copy.line(level, message)
        if full:
            self.write()  # back-pressure: the handler waits for this one write

    # --- writing ------------------------------------------------------------------------

    def pending(self) -> bool:
        return self.changed or bool(self.lines)

    def _take(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        with self.lock:
            progress = None
            if self.changed:
                steps = [dict(s) for s in self.steps.values()]
                progress = progress_json(steps, self.message)
                self.changed = False
            lines, self.lines = self.lines, []
        return progress, lines

    def _give_back(self, progress: dict[str, Any] | None, lines: list[dict[str, Any]]) -> None:
        with self.lock:
            if progress is not None:
                self.changed = True
            self.lines[:0] = lines

    def write(self, final: bool = False) -> None:
        """Write what changed: one transaction, or nothing when nothing changed."""
        with self.write_lock:
            if self.closed and not final:
                return  # the attempt is over: what is left goes with its outcome
            self.last_write = time.monotonic()
            progress, lines = self._take()
            self._write(progress, lines, final)

    def _write(
        self, progress: dict[str, Any] | None, lines: list[dict[str, Any]], final: bool
    ) -> None:
        if progress is None and not lines:
            return
        statement = _UPDATES[(not final, progress is not None)]
        params = {"b_uuid": self.uuid, "b_attempt": self.attempt, "b_progress": progress}
        try:
            with self.engine.begin() as conn:
                matched = conn.execute(statement, params).rowcount == 1
                if matched:
                    insert_lines(conn, lines)
        except sa.exc.DataError:
            log.exception("job %s: the database refused its progress or log lines", self.uuid)
            return
        except Exception as exc:
            if final:
                log.exception("job %s: its last progress and log lines are lost", self.uuid)
                return
            if lost_connection(exc):
                # Once a second per job while the database is away: one line, not a trace.
                log.warning(
                    "job %s: could not write its progress (%s); trying again",
                    self.uuid,
                    str(exc).splitlines()[0],
                )
            else:
                log.exception("job %s: could not write its progress; trying again", self.uuid)
            self._give_back(progress, lines)
            return
        if not matched:
            self.gone = True

    def take_final(self) -> Final | None:
        """The attempt is over: stop the periodic writes and hand over what is left.

        The caller writes it with the attempt's outcome, or gives it to
        :meth:`write_final`. None when nothing is left to write.
        """
        if self.closed:
            return None
        self.closed = True
        self.copy.finish()
        if not self.registered:
            return None
        FLUSHER.discard(self)
        # Waits for a write in flight, so an older state never lands after this one.
        with self.write_lock:
            progress, lines = self._take()
        if progress is None and not lines:
            return None
        return Final(progress, lines)

    def write_final(self, final: Final) -> None:
        """Write what :meth:`take_final` gave when the outcome could not take it (the
        attempt was aborted meanwhile): fenced on the attempt only, so the last lines of an
        aborted attempt are kept, and those of an attempt that was replaced are not."""
        with self.write_lock:
            self._write(final.progress, final.lines, final=True)

    def close(self) -> None:
        """The attempt is over: write what is left, and stop the periodic writes."""
        final = self.take_final()
        if final is not None:
            self.write_final(final)


class _Flusher:
    """One thread per process writes the reports that are due.

    The thread is woken only when a new report falls due before it would wake anyway, so
    the many short jobs of a busy worker, each reporting a little and finishing within a
    second, cost it no wake-up: what they reported goes with their outcome.
    """

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.reports: set[Report] = set()
        self.thread: threading.Thread | None = None
        # When the waiting thread wakes by itself (inf: only when told); None while it
        # works, when the count of added reports tells it to look again.
        self.wake_at: float | None = None
        self.added = 0

    def add(self, report: Report) -> None:
        with self.cond:
            self.reports.add(report)
            self.added += 1
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(
                    target=self._loop, name="nick-jobs-progress", daemon=True
                )
                self.thread.start()
            if self.wake_at is not None and report.last_write + report.interval_s < self.wake_at:
                self.cond.notify()

    def discard(self, report: Report) -> None:
        with self.cond:
            self.reports.discard(report)

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.reports:
                    self.wake_at = math.inf
                    self.cond.wait()
                self.wake_at = None
                reports, seen = list(self.reports), self.added
            now = time.monotonic()
            wait = 1.0
            for report in reports:
                if report.closed or not report.pending():
                    wait = min(wait, report.interval_s)
                    continue
                due = report.last_write + report.interval_s
                if due <= now:
                    try:
                        report.write()
                    except Exception:
                        log.exception("job %s: writing its progress failed", report.uuid)
                    wait = min(wait, report.interval_s)
                else:
                    wait = min(wait, due - now)
            with self.cond:
                if self.added != seen:
                    continue  # reports came while this round ran: look at them first
                wait = max(wait, 0.01)
                self.wake_at = time.monotonic() + wait
                self.cond.wait(timeout=wait)
                self.wake_at = None


FLUSHER = _Flusher()
