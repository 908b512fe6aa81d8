"""Consumers: run the jobs of remote actions in this process, over the consumer API.

>>> from nick_jobs_client import Client, Consumer
>>> def reindex(context):                                      # doctest: +SKIP
...     for n, batch in enumerate(batches(context.params["site"])):
...         context.check()            # raises when the job is aborted or asked to stop
...         index(batch)
...         context.progress(100 * n / total, f"batch {n}")
...     return {"indexed": total}
>>> client = Client("https://jobs.example.com", token)          # doctest: +SKIP
>>> Consumer(client, ["reindex"], reindex, concurrency=4).run(handle_signals=True)  # doctest: +SKIP

A :class:`Consumer` claims jobs (``POST /@jobs/@claim``, waiting for one when there is
none) and runs ``handler(context)`` for each on a thread of its own, at most
``concurrency`` at a time. A thread checks in on every running job before its lease runs
out (about every third of the lease), taking along the progress and log lines reported
since the last check-in. The handler's return value (a dict, or ``None`` for ``{}``)
completes the job; an exception fails it, with the exception's class name as the error
type and its text as the message (and its traceback in the job's log, unless it is a
:exc:`JobFailed`).

A job aborted meanwhile, or lost (its lease ran out and the job went on without this
consumer), is reported on no more: the handler's next :meth:`JobContext.check` raises
:exc:`JobAborted`. A job asked to stop (an action that is ``resumable``) makes
:meth:`JobContext.check` raise :exc:`JobStopped`; the handler lets it through (or raises
it itself) once it has called :meth:`JobContext.save_checkpoint`, and the job is
``stopped`` with that checkpoint, which the resumed job's handler finds in
:attr:`JobContext.checkpoint`.

:meth:`Consumer.stop` (and, with ``run(handle_signals=True)`` in the main thread,
``SIGTERM`` or ``SIGINT``) stops claiming, gives the running jobs up to ``grace`` seconds
to end, then releases those still running: they wait again as new attempts, for any
consumer. A second signal ends the grace at once. A claim that is waiting for jobs when
the stop comes is let answer (within ``wait`` seconds), and what it brings is released.

The lease's expiry is read with this machine's clock, which should be in time with the
server's (NTP).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from types import FrameType
from typing import Any

from nick_jobs_client.client import (
    LOG_LEVELS,
    Client,
    ClientError,
    ServerUnavailable,
    error_message,
)

__all__ = [
    "Consumer",
    "Handler",
    "JobAborted",
    "JobContext",
    "JobFailed",
    "JobStopped",
    "OnEnd",
]

log = logging.getLogger(__name__)

# The server's limits: characters of a log line or message, lines in one check-in.
MAX_TEXT = 10_000
MAX_LINES = 1000
# The server's shortest lease; a lease that looks shorter (a clock ahead of the server's)
# is taken as this long, so check-ins come often rather than late.
MIN_LEASE_S = 5.0
MAX_CLAIM = 100
MAX_WAIT_S = 30.0
# How often run()'s waits look at the signals that came.
SIGNAL_POLL_S = 0.1
MIN_CLAIM_INTERVAL_S = 1.0


class JobAborted(Exception):
    """The job is no longer this consumer's: it was aborted, its lease ran out and the job
    went on without it, or the consumer released it when stopping. Stop working on it;
    nothing more is reported."""


class JobStopped(Exception):
    """The job was asked to stop. Let it through the handler (after
    :meth:`JobContext.save_checkpoint`): the job becomes ``stopped`` with the checkpoint,
    to be resumed from it."""


class JobFailed(Exception):
    """Raise it (or a subclass) to fail the job with its text as the message, and its
    class name as the error type, without a traceback in the job's log: a failure the
    handler foresaw. Any other exception logs its traceback too, at level error."""


#: The keys of a job's params that are not the action's params: the action, the
#: scheduled job that made the job, and the claims it was submitted with.
ENVELOPE = frozenset({"action", "scheduled_job", "claims"})


class JobContext:
    """What a handler gets for one claimed job.

    Its methods may be called from any thread of the handler's.
    """

    def __init__(self, job: Mapping[str, Any]) -> None:
        self.job: dict[str, Any] = dict(job)
        """The job's JSON as the claim gave it (``uuid``, ``attempt``, ``params``,
        ``lease``, ...)."""
        self.uuid: str = self.job["uuid"]
        self.attempt: int = int(self.job.get("attempt") or 1)
        self.params: dict[str, Any] = {
            key: value
            for key, value in (self.job.get("params") or {}).items()
            if key not in ENVELOPE
        }
        """The job's params, without what the service put beside them (:data:`ENVELOPE`);
        ``job["params"]`` has them all."""
        self.checkpoint: Any = self.job.get("checkpoint")
        """The checkpoint a resumed job stopped at (``None`` for a fresh job)."""
        self._lock = threading.Lock()
        self._progress: dict[str, Any] | None = None
        self._lines: list[dict[str, str]] = []
        self._saved = False
        self._saved_checkpoint: Any = None
        self._ended: str | None = None
        self._stop_requested = False
        self._interrupted = threading.Event()
        self._on_abort: list[Callable[[], None]] = []

    # --- reporting -------------------------------------------------------------------

    def progress(self, percent: float | None = None, message: str | None = None) -> None:
        """Report the job's progress (``percent`` from 0 to 100, and/or a message); a
        check-in within about a second sends the last one reported."""
        if percent is not None and not 0 <= percent <= 100:
            raise ValueError(f"percent is 0 to 100, not {percent}")
        value: dict[str, Any] = {"percent": percent}
        if message is not None:
            value["message"] = message[:MAX_TEXT]
        with self._lock:
            self._progress = value

    def log(self, message: str, level: str = "info") -> None:
        """Add a line to the job's log (``level``: debug, info, warning or error); a
        check-in within about a second sends it."""
        if level not in LOG_LEVELS:
            raise ValueError(f"level is one of {', '.join(LOG_LEVELS)}, not {level!r}")
        with self._lock:
            self._lines.append({"level": level, "message": str(message)[:MAX_TEXT]})

    def save_checkpoint(self, value: Any) -> None:
        """Where the job is (any JSON): what it stops at when asked to stop."""
        with self._lock:
            self._saved, self._saved_checkpoint = True, value

    # --- being told to end ------------------------------------------------------------

    def check(self) -> None:
        """Raise :exc:`JobAborted` when the job is no longer this consumer's, or
        :exc:`JobStopped` when it was asked to stop; else return at once."""
        with self._lock:
            ended, stop = self._ended, self._stop_requested
        if ended is not None:
            raise JobAborted(f"job {self.uuid} was {ended}")
        if stop:
            raise JobStopped(f"job {self.uuid} was asked to stop")

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; return ``True`` early when the job is aborted or asked
        to stop (:meth:`check` then says which)."""
        return self._interrupted.wait(seconds)

    @property
    def stop_requested(self) -> bool:
        with self._lock:
            return self._stop_requested

    @property
    def aborted(self) -> bool:
        """Whether the job is no longer this consumer's (aborted, lost or released)."""
        with self._lock:
            return self._ended is not None

    def on_abort(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (on a thread of the consumer's) when the job is aborted,
        lost or released: to end work that can't call :meth:`check`, a child process
        say. Called at once if that happened already."""
        with self._lock:
            if self._ended is None:
                self._on_abort.append(callback)
                return
        callback()

    # --- the consumer's side ----------------------------------------------------------

    def _take(self) -> tuple[dict[str, Any] | None, list[dict[str, str]]]:
        with self._lock:
            progress, lines = self._progress, self._lines[:MAX_LINES]
            self._progress, self._lines = None, self._lines[MAX_LINES:]
        return progress, lines

    def _give_back(self, progress: dict[str, Any] | None, lines: list[dict[str, str]]) -> None:
        with self._lock:
            if self._progress is None:
                self._progress = progress
            self._lines[:0] = lines

    def _pending(self) -> bool:
        with self._lock:
            return self._progress is not None or bool(self._lines)

    def _checkpoint_to_send(self) -> Any:
        with self._lock:
            return self._saved_checkpoint if self._saved else self.checkpoint

    def _request_stop(self) -> None:
        with self._lock:
            self._stop_requested = True
        self._interrupted.set()

    def _end(self, how: str) -> None:
        with self._lock:
            if self._ended is not None:
                return
            self._ended = how
            callbacks, self._on_abort = self._on_abort, []
        self._interrupted.set()
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("a callback of job %s failed", self.uuid)


#: What a consumer runs for each job: its return value completes the job.
Handler = Callable[[JobContext], Mapping[str, Any] | None]
#: ``on_end(job, outcome, message)``: a job has ended for this consumer. ``outcome`` is
#: ``completed``, ``failed``, ``stopped``, ``aborted``, ``lost`` or ``released``;
#: ``message`` says why for the last four.
OnEnd = Callable[[dict[str, Any], str, str | None], None]


#: How soon a job's reports (progress, log lines) go to the server, in seconds.
REPORT_S = 1.0


class _Claimed:
    """A job this consumer holds: its lease, when to check in, and whether it is done."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.context = JobContext(job)
        self.uuid = self.context.uuid
        self.lease: str = job["lease"]["id"]
        left = _seconds_left(job["lease"].get("expires"))
        self.interval = max(left if left is not None else MIN_LEASE_S, MIN_LEASE_S) / 3
        now = time.monotonic()
        self.next_checkin = now + self.interval
        self.last_checkin = now
        self.expires = now + (left if left is not None else MIN_LEASE_S)
        # One report at a time, and none after the job is done for this consumer.
        self.lock = threading.Lock()
        self.done = False

    def renewed(self, lease: Mapping[str, Any] | None) -> None:
        now = time.monotonic()
        left = _seconds_left(lease.get("expires")) if lease else None
        if left is not None:
            self.expires = now + left
        self.next_checkin = now + self.interval
        self.last_checkin = now

    def due(self) -> float:
        """When to check in next: a third of the lease after the last check-in, or
        :data:`REPORT_S` after it when progress or log lines wait, so that a remote job
        is followed as closely as a Python worker's (about a second)."""
        if self.context._pending():
            return min(self.next_checkin, self.last_checkin + REPORT_S)
        return self.next_checkin


class _Completion:
    """A job's completion waiting to go, and, once it went, what came of it."""

    def __init__(self, claimed: _Claimed, result: dict[str, Any]) -> None:
        self.claimed = claimed
        self.result = result
        self.sent = False
        # None: completed; else what its own POST /@jobs/{uuid}/complete would have raised.
        # Until its batch's answer says otherwise, it did not go: a sender that failed
        # unexpectedly leaves no job taken for completed.
        self.error: ClientError | None = ClientError("its batch complete was not sent")


class _Completions:
    """The completions of a consumer's jobs, sent together (``POST /@jobs/@complete``).

    The first job to end sends its completion at once; the jobs that end while that
    request is out go together in the next one, up to :data:`MAX_CLAIM` a request. So a
    job is never held back to fill a batch, and a consumer of many short jobs sends a
    fraction of the requests, each of which costs the server a fraction of what one
    complete a job does (docs/benchmarks.md).
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self._cond = threading.Condition()
        self._queue: list[_Completion] = []
        self._sending = False

    def complete(self, claimed: _Claimed, result: dict[str, Any]) -> None:
        """Complete ``claimed`` with ``result``; raise what its own complete would have."""
        mine = _Completion(claimed, result)
        with self._cond:
            self._queue.append(mine)
        while True:
            with self._cond:
                while self._sending and not mine.sent:
                    self._cond.wait()
                if mine.sent:
                    break
                batch, self._queue = self._queue[:MAX_CLAIM], self._queue[MAX_CLAIM:]
                self._sending = True
            try:
                self._send(batch)
            finally:
                with self._cond:
                    for completion in batch:
                        completion.sent = True
                    self._sending = False
                    self._cond.notify_all()
        if mine.error is not None:
            raise mine.error

    def _send(self, batch: list[_Completion]) -> None:
        """Send ``batch``, again while the server is unreachable and the leases last; set
        each completion's outcome. A repeat whose first try went through finds the job
        no longer running: that is its completion."""
        items = [
            {"uuid": c.claimed.uuid, "lease": c.claimed.lease, "result": c.result} for c in batch
        ]
        tries = 0
        while True:
            try:
                answers = self.client.complete_jobs(items)
            except ServerUnavailable as exc:
                tries += 1
                if time.monotonic() + tries > min(c.claimed.expires for c in batch):
                    for completion in batch:
                        completion.error = exc
                    return
                time.sleep(min(0.5 * tries, 5.0))
                continue
            except ClientError as exc:
                # Refused as a whole (a token that ran out, say): as each job's own would be.
                for completion in batch:
                    completion.error = exc
                return
            by_uuid = {a.get("uuid"): a for a in answers if isinstance(a, dict)}
            for completion in batch:
                completion.error = _refusal(by_uuid.get(completion.claimed.uuid), tries)
            return


def _refusal(answer: dict[str, Any] | None, tries: int) -> ClientError | None:
    """What a job's own complete would have raised, for its answer in a batch complete."""
    if answer is None:
        return ClientError("the server's answer left this job out")
    if answer.get("completed"):
        return None
    error: dict[str, Any] = answer.get("error") or {}
    if not isinstance(error, dict):
        error = {}
    if error.get("type") == "Validation error":
        status = HTTPStatus.BAD_REQUEST
    else:
        status = HTTPStatus.CONFLICT
        if tries and error.get("status") != "running":
            return None  # an earlier try completed it; its answer was lost
    body = {"error": error}
    return ClientError(error_message(status, status.phrase, body), status=status, body=body)


def _seconds_left(expires: Any) -> float | None:
    if not isinstance(expires, str):
        return None
    try:
        when = dt.datetime.fromisoformat(expires.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return (when - dt.datetime.now(dt.UTC)).total_seconds()


class Consumer:
    """Runs ``handler`` for each job of the remote ``actions`` that ``client`` claims.

    ``concurrency`` jobs at most at a time (1 to 100). ``labels`` and ``claims`` go with
    each claim (see :meth:`Client.claim_jobs`). ``wait`` is how long a claim waits for a
    job (0 to 30 seconds), ``grace`` how long a stop waits for the running jobs before
    releasing them. ``on_end`` (see :data:`OnEnd`) hears of each job as it ends.
    """

    def __init__(
        self,
        client: Client,
        actions: Sequence[str],
        handler: Handler,
        *,
        concurrency: int = 1,
        labels: Mapping[str, str] | None = None,
        claims: Mapping[str, str] | None = None,
        grace: float = 30.0,
        wait: float = 20.0,
        on_end: OnEnd | None = None,
    ) -> None:
        if isinstance(actions, str):
            actions = [actions]
        if not actions:
            raise ValueError("a consumer runs one action or more")
        if not 1 <= concurrency <= MAX_CLAIM:
            raise ValueError(f"concurrency is 1 to {MAX_CLAIM}, not {concurrency}")
        if not 0 <= wait <= MAX_WAIT_S:
            raise ValueError(f"wait is 0 to {MAX_WAIT_S:g} seconds, not {wait}")
        if grace < 0:
            raise ValueError(f"grace is 0 seconds or more, not {grace}")
        self.client = client
        self.actions = list(actions)
        self.handler = handler
        self.concurrency = concurrency
        self.labels = dict(labels or {})
        self.claims = dict(claims or {})
        self.grace = grace
        self.wait = wait
        self.on_end = on_end
        self._cond = threading.Condition()
        self._running: dict[str, _Claimed] = {}
        self._stopping = threading.Event()
        self._stop_at: float | None = None
        self._hurry = False
        # When SIGTERM or SIGINT came, appended by the signal handler (which takes no lock).
        self._signals: list[float] = []
        self._checkins_done = threading.Event()
        self._completions = _Completions(client)

    # --- running ---------------------------------------------------------------------

    def run(self, *, handle_signals: bool = False) -> None:
        """Claim and run jobs until :meth:`stop`; return once the running jobs have ended
        or been released.

        With ``handle_signals``, and when called in the main thread, ``SIGTERM`` and
        ``SIGINT`` stop it (a second one ends the grace at once); the previous handlers
        are back when it returns. A claim refused for good (``401``, ``403``, an action
        that is not remote: ``400``) stops it too, and raises that :class:`ClientError`.
        """
        previous = self._install_signals() if handle_signals else {}
        checkins = threading.Thread(
            target=self._checkin_loop, name="nick-jobs-checkins", daemon=True
        )
        checkins.start()
        try:
            self._claim_loop()
        finally:
            self.stop()
            try:
                self._drain()
            finally:
                self._checkins_done.set()
                checkins.join()
                for signum, handler in previous.items():
                    signal.signal(signum, handler)

    def stop(self) -> None:
        """Stop claiming; running jobs get ``grace`` seconds to end. Returns at once:
        :meth:`run` returns when that is done."""
        with self._cond:
            if self._stop_at is None:
                self._stop_at = time.monotonic()
            self._stopping.set()
            self._cond.notify_all()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def running_jobs(self) -> list[str]:
        """The uuids of the jobs whose handlers run now."""
        with self._cond:
            return list(self._running)

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            # A signal handler runs between two bytecodes of the main thread, which may
            # hold any lock at that moment: it takes none, and run() heeds the list.
            self._signals.append(time.monotonic())

        return {signum: signal.signal(signum, on_signal) for signum in _STOP_SIGNALS}

    def _heed_signals(self) -> None:
        """A first signal stops the consumer, as of when it came; a second ends the grace."""
        if not self._signals:
            return
        with self._cond:
            if self._stop_at is None:
                self._stop_at = self._signals[0]
                log.warning(
                    "stopping: no more claims; the running jobs have %g s to end (a second "
                    "signal releases them at once)",
                    self.grace,
                )
            self._stopping.set()
            self._hurry = self._hurry or len(self._signals) > 1

    def _pause(self, seconds: float) -> None:
        """Sleep up to ``seconds``, ended early by a stop."""
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._stopping.wait(min(left, SIGNAL_POLL_S))
            self._heed_signals()

    def _claim_loop(self) -> None:
        failures = 0
        while True:
            with self._cond:
                while not self._stopping.is_set() and len(self._running) >= self.concurrency:
                    self._cond.wait(SIGNAL_POLL_S)
                    self._heed_signals()
                if self._stopping.is_set():
                    return
                free = self.concurrency - len(self._running)
            started = time.monotonic()
            try:
                jobs = self.client.claim_jobs(
                    self.actions,
                    labels=self.labels,
                    claims=self.claims,
                    limit=free,
                    wait=self.wait,
                )
            except ServerUnavailable as exc:
                failures += 1
                delay = exc.retry_after or min(2.0 ** (failures - 1), 30.0)
                log.warning("can't claim jobs (%s); trying again in %g s", exc.message, delay)
                self._pause(delay)
                continue
            failures = 0
            self._heed_signals()
            for job in jobs:
                self._start(job)
            if not jobs:
                # A claim that did not wait (wait=0, or a server that waits less): no
                # more than one a second.
                self._pause(MIN_CLAIM_INTERVAL_S - (time.monotonic() - started))

    def _drain(self) -> None:
        """Wait out the grace for the running jobs, then release those still running."""
        with self._cond:
            deadline = (self._stop_at or time.monotonic()) + self.grace
            while self._running and not self._hurry:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, SIGNAL_POLL_S))
                self._heed_signals()
                deadline = (self._stop_at or time.monotonic()) + self.grace
            left_running = list(self._running.values())
        if left_running:
            log.warning(
                "releasing %d job(s) still running after the %g s grace",
                len(left_running),
                self.grace,
            )
        for claimed in left_running:
            self._release(claimed)

    def _start(self, job: dict[str, Any]) -> None:
        claimed = _Claimed(job)
        with self._cond:
            late = self._stopping.is_set()
            if not late:
                self._running[claimed.uuid] = claimed
        if late:
            # Claimed by a claim that was waiting when the stop came.
            self._release(claimed)
            return
        threading.Thread(
            target=self._run_job, args=(claimed,), name=f"nick-jobs-{claimed.uuid}", daemon=True
        ).start()

    def _run_job(self, claimed: _Claimed) -> None:
        context = claimed.context
        try:
            outcome: tuple[str, Any, str | None]
            try:
                result = self.handler(context)
            except JobStopped as exc:
                if context.stop_requested:
                    outcome = ("stopped", context._checkpoint_to_send(), None)
                else:
                    outcome = ("failed", type(exc).__name__, _text(exc))
            except BaseException as exc:  # a handler's SystemExit fails its job as well
                if isinstance(exc, JobAborted) and context.aborted:
                    return
                if not isinstance(exc, JobFailed):
                    context.log(traceback.format_exc().rstrip(), "error")
                outcome = ("failed", type(exc).__name__, _text(exc))
            else:
                if result is None:
                    result = {}
                if not isinstance(result, Mapping):
                    kind = type(result).__name__
                    outcome = ("failed", "TypeError", f"the handler returned a {kind}, not a dict")
                elif (unsendable := _not_json(result)) is not None:
                    outcome = ("failed", "TypeError", f"the handler's result {unsendable}")
                else:
                    outcome = ("completed", dict(result), None)
            self._report(claimed, *outcome)
        except Exception:
            log.exception("reporting on job %s failed", claimed.uuid)
        finally:
            with self._cond:
                self._running.pop(claimed.uuid, None)
                self._cond.notify_all()

    # --- reports ---------------------------------------------------------------------

    def _report(self, claimed: _Claimed, outcome: str, value: Any, message: str | None) -> None:
        uuid, lease = claimed.uuid, claimed.lease
        with claimed.lock:
            if claimed.done:
                return
            # What the handler reported since the last check-in goes first.
            if claimed.context._pending() and not self._checkin_now(claimed):
                return
            try:
                if outcome == "completed":
                    try:
                        self._completions.complete(claimed, value)
                    except ClientError as exc:
                        if exc.status != 400:
                            raise
                        outcome, value, message = "failed", "InvalidResult", exc.message
                if outcome == "failed":
                    self._send(claimed, self.client.fail_claimed, uuid, lease, value, message)
                elif outcome == "stopped":
                    self._send(claimed, self.client.stopped_claimed, uuid, lease, value)
            except ClientError as exc:
                self._lost(claimed, exc)
                return
            self._ended(claimed, outcome, message)

    def _send(self, claimed: _Claimed, call: Callable[..., None], *args: Any) -> None:
        """``call(*args)``, again while the server is unreachable and the lease lasts. A
        repeat whose first try went through is refused, with the job's status."""
        tries = 0
        while True:
            try:
                call(*args)
                return
            except ServerUnavailable:
                tries += 1
                if time.monotonic() + tries > claimed.expires:
                    raise
                time.sleep(min(0.5 * tries, 5.0))
            except ClientError as exc:
                if tries and exc.status == 409 and exc.error.get("status") != "running":
                    return
                raise

    def _release(self, claimed: _Claimed) -> None:
        with claimed.lock:
            if claimed.done:
                return
            claimed.context._end("released")
            if claimed.context._pending():
                self._checkin_now(claimed)
            if claimed.done:
                return
            try:
                self._send(claimed, self.client.release_claimed, claimed.uuid, claimed.lease)
            except ClientError as exc:
                self._lost(claimed, exc)
                return
            self._ended(claimed, "released", "the consumer stopped before the job ended")

    def _lost(self, claimed: _Claimed, exc: ClientError) -> None:
        status = exc.error.get("status")
        message = f"{exc.message}" + (f" (it is {status})" if status else "")
        log.warning("job %s: %s", claimed.uuid, message)
        claimed.context._end("lost")
        self._ended(claimed, "lost", message)

    def _ended(self, claimed: _Claimed, outcome: str, message: str | None) -> None:
        claimed.done = True
        if self.on_end is not None:
            try:
                self.on_end(claimed.context.job, outcome, message)
            except Exception:
                log.exception("on_end failed for job %s", claimed.uuid)

    # --- check-ins -------------------------------------------------------------------

    def _checkin_loop(self) -> None:
        while not self._checkins_done.is_set():
            with self._cond:
                running = list(self._running.values())
            now = time.monotonic()
            for claimed in running:
                if claimed.due() <= now:
                    with claimed.lock:
                        if not claimed.done:
                            self._checkin_now(claimed)
            with self._cond:
                due = [c.due() for c in self._running.values() if not c.done]
            # At most a second: a job claimed, or reports made, meanwhile are seen soon.
            pause = min([*due, time.monotonic() + REPORT_S]) - time.monotonic()
            self._checkins_done.wait(max(pause, 0.01))

    def _checkin_now(self, claimed: _Claimed) -> bool:
        """Check in (holding ``claimed.lock``); ``False`` when the job is no longer this
        consumer's."""
        context = claimed.context
        progress, lines = context._take()
        try:
            answer = self.client.checkin(claimed.uuid, claimed.lease, progress=progress, log=lines)
        except ServerUnavailable as exc:
            context._give_back(progress, lines)
            claimed.next_checkin = time.monotonic() + min(claimed.interval, 1.0)
            log.warning("can't check in on job %s (%s)", claimed.uuid, exc.message)
            return True
        except ClientError as exc:
            if exc.status in {404, 409}:
                self._lost(claimed, exc)
                return False
            # Not this job's fault (a 401 when the token ran out, say): try again later.
            log.warning("checking in on job %s failed: %s", claimed.uuid, exc.message)
            claimed.next_checkin = time.monotonic() + claimed.interval
            return True
        if answer.get("abort"):
            context._end("aborted")
            self._ended(claimed, "aborted", "the job was aborted")
            return False
        claimed.renewed(answer.get("lease"))
        if answer.get("stop"):
            context._request_stop()
        return True


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _not_json(result: Mapping[str, Any]) -> str | None:
    """Why ``result`` can't be sent as JSON, or None: checked before it joins a batch."""
    try:
        json.dumps(result)
    except (TypeError, ValueError) as exc:
        return f"is not JSON: {exc}"
    return None


def _text(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:MAX_TEXT]
