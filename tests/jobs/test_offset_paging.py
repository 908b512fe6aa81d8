"""``GET /@jobs?b_start=N``: plone.restapi's offset paging, for clients written for Plone,
up to ``listing.MAX_OFFSET``; the next page is given by a cursor, as for any page."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from nick_jobs.jobs.listing import MAX_OFFSET
from tests.conftest import next_url


def uuids(res) -> list[str]:
    return [job["uuid"] for job in res.json]


@pytest.mark.parametrize("sort", ["newest", "oldest"])
def test_b_start_skips_that_many_jobs_in_either_order(app_without_worker, sort):
    app = app_without_worker
    made = [app.submit({"action": "dummy"})["uuid"] for _ in range(5)]
    ordered = made if sort == "oldest" else made[::-1]
    res = app.get(f"/@jobs?sort={sort}&b_start=1&b_size=2", headers=app.auth())
    assert uuids(res) == ordered[1:3]
    # The next page starts where this one ended, by the cursor, keeping the filters.
    link = next_url(res)
    query = parse_qs(urlsplit(link).query)
    assert "b_start" not in query
    assert query["sort"] == [sort]
    assert query["b_size"] == ["2"]
    following = app.get(link, headers=app.auth())
    assert uuids(following) == ordered[3:5]
    assert next_url(following) is None


def test_b_start_with_filters_and_a_user_of_their_own(app_without_worker):
    app = app_without_worker
    alice = [
        app.submit({"action": "echo", "message": "a"}, login="alice")["uuid"] for _ in range(3)
    ]
    app.submit({"action": "echo", "message": "a"})  # the admin's: never on alice's pages
    res = app.get("/@jobs?b_start=1", headers=app.auth("alice"))
    assert uuids(res) == alice[::-1][1:]
    assert next_url(res) is None


def test_the_total_of_a_last_page_reached_by_offset(app_without_worker):
    app = app_without_worker
    for _ in range(3):
        app.submit({"action": "dummy"})
    res = app.get("/@jobs?b_start=2", headers=app.auth())
    assert len(res.json) == 1
    # The last page, reached by skipping 2: 3 jobs in all, with no COUNT needed.
    assert res.headers["X-Total-Count"] == "3"
    # Past the end nothing says how many there are, unless asked.
    res = app.get("/@jobs?b_start=10", headers=app.auth())
    assert res.json == []
    assert "X-Total-Count" not in res.headers
    res = app.get("/@jobs?b_start=10&count=true", headers=app.auth())
    assert res.headers["X-Total-Count"] == "3"


def test_b_start_up_to_the_documented_depth(app_without_worker):
    app = app_without_worker
    app.submit({"action": "dummy"})
    assert app.get(f"/@jobs?b_start={MAX_OFFSET}", headers=app.auth()).json == []
    res = app.get(f"/@jobs?b_start={MAX_OFFSET + 1}", headers=app.auth(), status=400)
    error = res.json["error"]
    assert error["type"] == "Bad request"
    assert str(MAX_OFFSET) in error["message"]
    assert "cursor" in error["message"]


@pytest.mark.parametrize("value", ["-1", "x", "1.5"])
def test_a_b_start_that_is_no_offset_is_a_400(app, value):
    res = app.get(f"/@jobs?b_start={value}", headers=app.auth(), status=400)
    assert res.json["error"]["type"] == "Validation error"
    assert "b_start" in res.json["error"]["fields"]


def test_b_start_and_a_cursor_together_are_a_400(app_without_worker):
    app = app_without_worker
    for _ in range(3):
        app.submit({"action": "dummy"})
    link = next_url(app.get("/@jobs?b_size=1", headers=app.auth()))
    res = app.get(link + "&b_start=1", headers=app.auth(), status=400)
    assert "not both" in res.json["error"]["message"]
