"""``GET /@scheduled-jobs/@preview``: the next firings of a cron rule, as the scheduler
computes them, for a form to show before the rule is saved."""

from __future__ import annotations

import datetime as dt
import itertools
import zoneinfo

import pytest

from nick_jobs.db.meta import utcnow
from nick_jobs.scheduling import cron
from tests.conftest import Client

PREVIEW = "/@scheduled-jobs/@preview"


def parse(value: str) -> dt.datetime:
    assert value.endswith("Z"), value
    assert len(value) == len("2022-04-08T16:00:00.000Z"), value
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def preview(app: Client, status: int = 200, login: str = "admin", **query: str):
    return app.get(PREVIEW, params=query, headers=app.auth(login), status=status)


def test_the_next_five_firings_in_utc_by_default(app: Client):
    before = utcnow()
    body = preview(app, schedule="*/10 * * * *").json
    after = utcnow()
    assert set(body) == {"schedule", "timezone", "next"}
    assert body["schedule"] == "*/10 * * * *"
    assert body["timezone"] == "UTC"
    times = [parse(value) for value in body["next"]]
    assert len(times) == 5
    # The first firing after the moment the request was answered, then the next ones.
    assert times[0] in {cron.next_fire("*/10 * * * *", "UTC", when) for when in (before, after)}
    assert times[0] > before
    for earlier, later in itertools.pairwise(times):
        assert later - earlier == dt.timedelta(minutes=10)
        assert later == cron.next_fire("*/10 * * * *", "UTC", earlier)
    assert all(time.minute % 10 == 0 and time.second == 0 for time in times)


def test_a_zone_reads_the_rule_on_its_wall_clock(app: Client):
    body = preview(app, schedule="0 9 * * MON-FRI", timezone="Europe/Amsterdam", count="20").json
    assert body["timezone"] == "Europe/Amsterdam"
    assert body["schedule"] == "0 9 * * MON-FRI"
    amsterdam = zoneinfo.ZoneInfo("Europe/Amsterdam")
    local = [parse(value).astimezone(amsterdam) for value in body["next"]]
    assert len(local) == 20
    assert all((time.hour, time.minute, time.weekday() < 5) == (9, 0, True) for time in local)
    assert local == sorted(set(local))


def test_the_rule_comes_back_as_the_scheduler_stores_it(app: Client):
    body = preview(app, schedule="  30   2 * *    0 ", count="1").json
    assert body["schedule"] == "30 2 * * 0"
    assert len(body["next"]) == 1


def test_it_is_the_schedulers_own_arithmetic_across_a_dst_change(app: Client):
    # 02:30 does not exist on the last Sunday of March in Amsterdam: cron.py fires at 03:00.
    body = preview(app, schedule="30 2 * * *", timezone="Europe/Amsterdam", count="20").json
    times = [parse(value) for value in body["next"]]
    start = times[0] - dt.timedelta(seconds=1)
    assert times == cron.next_fires("30 2 * * *", "Europe/Amsterdam", start, 20)


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ({"schedule": "* * *"}, "schedule", "A schedule has 5 fields"),
        ({"schedule": "61 * * * *"}, "schedule", "is not a valid cron expression"),
        ({"schedule": "0 0 31 2 *"}, "schedule", "never fires"),
        ({"schedule": "@daily"}, "schedule", "A schedule has 5 fields"),
        ({}, "schedule", "Missing data for required field."),
        ({"schedule": "0 * * * *", "timezone": "Mars/Olympus"}, "timezone", "Unknown time zone"),
        ({"schedule": "0 * * * *", "count": "0"}, "count", "greater than or equal to 1"),
        ({"schedule": "0 * * * *", "count": "21"}, "count", "less than or equal to 20"),
        ({"schedule": "0 * * * *", "count": "five"}, "count", "Not a valid integer."),
        ({"schedule": "0 * * * *", "colour": "blue"}, "colour", "Unknown field."),
    ],
)
def test_a_bad_rule_zone_or_count_is_a_validation_error(app: Client, query, field, message):
    response = app.get(PREVIEW, params=query, headers=app.auth(), status=400)
    error = response.json["error"]
    assert error["type"] == "Validation error"
    assert list(error["fields"]) == [field]
    assert message in " ".join(error["fields"][field])


def test_a_parameter_given_twice_is_refused(app: Client):
    response = app.get(
        f"{PREVIEW}?schedule=0+*+*+*+*&schedule=5+*+*+*+*", headers=app.auth(), status=400
    )
    assert response.json["error"]["fields"] == {"schedule": ["Not a valid string."]}


def test_it_needs_manage_site_as_the_rest_of_scheduled_jobs(app: Client):
    anonymous = app.get(PREVIEW, params={"schedule": "0 * * * *"}, status=401)
    assert anonymous.json["error"]["type"] == "Unauthorized"
    # A user who is not an administrator learns nothing, not even that the rule is bad.
    for query in ({"schedule": "0 * * * *"}, {"schedule": "nonsense"}):
        forbidden = preview(app, status=403, login="alice", **query)
        assert forbidden.json["error"]["type"] == "Forbidden"


def test_only_get_is_allowed(app: Client):
    response = app.post_json(PREVIEW, {"schedule": "0 * * * *"}, headers=app.auth(), status=405)
    assert response.json["error"]["type"] == "Method not allowed"


def test_a_sub_path_is_not_found(app: Client):
    response = app.get(f"{PREVIEW}/more", headers=app.auth(), status=404)
    assert response.json["error"]["type"] == "Not found"
