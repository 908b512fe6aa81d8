"""What a running handler reports: steps, a message and log lines, written in batches.

A handler may report as often as it likes. Each report only changes memory; the state is
written by one thread per worker process, at most once a :attr:`Report.interval_s` per
job, as one transaction: an ``UPDATE`` of ``jobs.progress`` fenced on the job's uuid,
attempt and ``running`` status, plus one multi-row ``INSERT`` into ``job_logs`` (made
only when the ``UPDATE`` matched, so a job that was deleted or retried gets no lines).
When the job ends, whatever is still buffered is written once more, fenced on the attempt
only, so the last lines of a failed or aborted attempt are kept too.

A job that reports nothing costs nothing: no thread wakes for it and nothing is written.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import sqlalchemy as sa

from .models import JobLog, utcnow
from .transitions import RUNNING, jobs

log = logging.getLogger(__name__)
job_logs = JobLog.__table__

# Levels as the ``logging`` module numbers them; the API names them.
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
LEVELS["error"] = logging.ERROR
LEVEL_NAMES = tuple(LEVELS)

MAX_STEPS = 1000
MAX_TEXT = 10_000  # characters of a log line, a message or a step name
# Buffered log lines before the handler itself must wait for a write: a handler that logs
# in a tight loop can't fill the worker's memory.
MAX_BUFFERED_LINES = 10_000
# Rows per INSERT statement: 5 parameters a row stays under every database's limit.
INSERT_CHUNK = 1000


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
    # PostgreSQL stores no NUL character, in text or in jsonb.
    text = str(value).replace("\x00", "\ufffd")
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _fraction(step: dict[str, Any]) -> float:
    if step["status"] == "done":
        return 1.0
    done, total = step["done"], step["total"]
    if step["status"] == "running" and total and done is not None:
        return max(0.0, min(1.0, done / total))
    return 0.0


def progress_json(steps: list[dict[str, Any]], message: str) -> dict[str, Any]:
    """The stored ``progress``: percent from the steps (each weighs the same)."""
    percent = 100.0 * sum(_fraction(s) for s in steps) / len(steps) if steps else 0.0
    return {"percent": round(percent, 2), "message": message, "steps": steps}


def _update(fenced_on_running: bool):
    where = [jobs.c.uuid == sa.bindparam("b_uuid"), jobs.c.attempt == sa.bindparam("b_attempt")]
    if fenced_on_running:
        where.append(jobs.c.status == RUNNING)
    return jobs.update().where(*where)


_WHILE_RUNNING = _update(True)
_AT_THE_END = _update(False)


class Report:
    """The progress of one attempt of one job, and its log lines not written yet."""

    def __init__(self, engine: sa.Engine, uuid: str, attempt: int, interval_s: float) -> None:
        self.engine = engine
        self.uuid = uuid
        self.attempt = attempt
        self.interval_s = interval_s
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
        line = {
            "job_uuid": self.uuid,
            "attempt": self.attempt,
            "time": utcnow(),
            "level": level,
            "message": _text(message),
        }
        with self.lock:
            self.lines.append(line)
            full = len(self.lines) >= MAX_BUFFERED_LINES
            if not self.registered:
                self.registered = True
                FLUSHER.add(self)
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
            self.last_write = time.monotonic()
            progress, lines = self._take()
            if progress is None and not lines:
                return
            statement = _AT_THE_END if final else _WHILE_RUNNING
            values = {"progress": progress} if progress is not None else {}
            if not values:
                # Only lines: the UPDATE still fences them (and locks the row against a
                # concurrent delete until they are in).
                values = {"progress": jobs.c.progress}
            try:
                with self.engine.begin() as conn:
                    params = {"b_uuid": self.uuid, "b_attempt": self.attempt}
                    matched = conn.execute(statement.values(values), params).rowcount == 1
                    if matched:
                        for start in range(0, len(lines), INSERT_CHUNK):
                            chunk = lines[start : start + INSERT_CHUNK]
                            conn.execute(job_logs.insert().values(chunk))
            except sa.exc.DataError:
                log.exception("job %s: the database refused its progress or log lines", self.uuid)
                return
            except Exception:
                if final:
                    log.exception("job %s: its last progress and log lines are lost", self.uuid)
                    return
                log.exception("job %s: could not write its progress; trying again", self.uuid)
                self._give_back(progress, lines)
                return
            if not matched:
                self.gone = True

    def close(self) -> None:
        """The attempt is over: write what is left, and stop the periodic writes."""
        if self.closed:
            return
        self.closed = True
        if self.registered:
            FLUSHER.discard(self)
            self.write(final=True)


class _Flusher:
    """One thread per process writes the reports that are due."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.reports: set[Report] = set()
        self.thread: threading.Thread | None = None

    def add(self, report: Report) -> None:
        with self.cond:
            self.reports.add(report)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(
                    target=self._loop, name="nick-jobs-progress", daemon=True
                )
                self.thread.start()
            self.cond.notify()

    def discard(self, report: Report) -> None:
        with self.cond:
            self.reports.discard(report)

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.reports:
                    self.cond.wait()
                reports = list(self.reports)
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
                self.cond.wait(timeout=max(wait, 0.01))


FLUSHER = _Flusher()
