"""Timestamps in job JSON: UTC, milliseconds, ``Z``, as JavaScript's ``toISOString()``."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from nick_jobs.jobs.serialize import isoformat

MOMENT = dt.datetime(2026, 3, 29, 0, 30, 5, 123456, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "value",
    [
        MOMENT,
        MOMENT.astimezone(zoneinfo.ZoneInfo("UTC")),
        MOMENT.astimezone(zoneinfo.ZoneInfo("Europe/Paris")),  # +01:00, a DST night
        MOMENT.astimezone(zoneinfo.ZoneInfo("America/St_Johns")),  # -02:30
        MOMENT.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=45))),
        MOMENT.replace(tzinfo=None),  # naive: taken as UTC
    ],
    ids=["utc", "zoneinfo-utc", "paris", "st-johns", "kathmandu-like", "naive"],
)
def test_any_zone_is_written_as_utc_with_milliseconds(value: dt.datetime) -> None:
    assert isoformat(value) == "2026-03-29T00:30:05.123Z"


def test_whole_seconds_still_have_milliseconds() -> None:
    assert isoformat(MOMENT.replace(microsecond=0)) == "2026-03-29T00:30:05.000Z"


def test_none_stays_none() -> None:
    assert isoformat(None) is None
