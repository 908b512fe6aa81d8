"""5-field cron expressions in a time zone: validation and the times they fire at.

Parsing and matching are croniter's; this module pins down what nick-jobs accepts and
what a schedule means around daylight-saving changes:

* exactly five fields, ``minute hour day-of-month month day-of-week`` (names such as
  ``MON-FRI`` and ``JAN`` are accepted; seconds, years and ``@daily`` are not);
* times are wall-clock times in the schedule's time zone;
* a time skipped when the clocks go forward fires at the first instant after the gap
  (``30 2 * * *`` in Europe/Amsterdam fires at 03:00 on the last Sunday of March);
* a time repeated when the clocks go back fires once, at its first occurrence, unless
  the hour field is ``*``: an hourly or faster schedule fires in both copies of the hour,
  as real time passes.

Every function takes and returns aware datetimes; results are in UTC.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterator

from croniter import CroniterBadDateError, CroniterError, croniter

FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
EXAMPLE = "0 2 * * *"


class InvalidSchedule(ValueError):
    """A cron expression or time zone nick-jobs can't use; the message says why."""


def zone(name: str) -> zoneinfo.ZoneInfo:
    """The time zone called ``name`` (``UTC``, ``Europe/Amsterdam``), or InvalidSchedule."""
    if not isinstance(name, str) or not name or len(name) > 64:
        raise InvalidSchedule("Name a time zone, e.g. 'UTC' or 'Europe/Amsterdam'.")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidSchedule(
            f"Unknown time zone {name!r}; use an IANA name such as 'UTC'."
        ) from None


def normalize(expression: str) -> str:
    """``expression`` with single spaces, if it is a valid 5-field cron expression.

    Raises InvalidSchedule with a message meant for the client.
    """
    if not isinstance(expression, str):
        raise InvalidSchedule(f"A schedule is a cron expression string, e.g. {EXAMPLE!r}.")
    parts = expression.split()
    if len(parts) != len(FIELDS):
        raise InvalidSchedule(
            f"A schedule has 5 fields ({' '.join(FIELDS)}), e.g. {EXAMPLE!r}; "
            f"{expression!r} has {len(parts)}."
        )
    normalized = " ".join(parts)
    try:
        croniter(normalized, dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    except CroniterError as exc:
        raise InvalidSchedule(f"{expression!r} is not a valid cron expression: {exc}.") from None
    # Parsing accepts dates that never come, such as the 30th of February.
    try:
        next_fire(normalized, "UTC", dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    except InvalidSchedule:
        raise InvalidSchedule(f"{expression!r} never fires.") from None
    return normalized


def _fires_in_both_copies(expression: str) -> bool:
    return expression.split()[1] == "*"


def _repeated(local: dt.datetime) -> bool:
    """Is ``local`` (fold=1) the second occurrence of a wall-clock time?"""
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()


def _iterate(
    expression: str, tz_name: str, start: dt.datetime, forward: bool
) -> Iterator[dt.datetime]:
    tz = zone(tz_name)
    it = croniter(expression, start.astimezone(tz))
    both = _fires_in_both_copies(expression)
    while True:
        try:
            local = it.get_next(dt.datetime) if forward else it.get_prev(dt.datetime)
        except CroniterBadDateError:
            raise InvalidSchedule(f"{expression!r} never fires.") from None
        if not both and _repeated(local):
            continue
        yield local.astimezone(dt.UTC)


def next_fire(expression: str, tz_name: str, after: dt.datetime) -> dt.datetime:
    """The first time strictly after ``after`` at which the schedule fires, in UTC."""
    return next(_iterate(expression, tz_name, after, forward=True))


def next_fires(expression: str, tz_name: str, after: dt.datetime, count: int) -> list[dt.datetime]:
    """The first ``count`` times strictly after ``after`` at which the schedule fires, in
    UTC: what the scheduler will do, daylight-saving changes included."""
    times = _iterate(expression, tz_name, after, forward=True)
    return [next(times) for _ in range(count)]


def last_fire(expression: str, tz_name: str, at_or_before: dt.datetime) -> dt.datetime:
    """The latest time at or before ``at_or_before`` at which the schedule fired, in UTC."""
    start = at_or_before + dt.timedelta(microseconds=1)
    return next(_iterate(expression, tz_name, start, forward=False))
