"""``GET /@jobs?sort=oldest|newest``: both orders page with the keyset cursor, every filter
works in both, and a cursor is only taken in the order it was made for."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa

from nick_jobs.jobs.model import Job
from tests.conftest import next_url


def every_page(app, url: str, login: str = "admin") -> tuple[list[str], list[str]]:
    """The uuids of every page from ``url`` on, following ``Link``; and the links."""
    seen, links = [], []
    while url:
        res = app.get(url, headers=app.auth(login))
        seen += [j["uuid"] for j in res.json]
        url = next_url(res)
        if url:
            links.append(url)
    return seen, links


def test_oldest_first_and_newest_first(app_without_worker):
    app = app_without_worker
    made = [app.submit({"action": "dummy"})["uuid"] for _ in range(3)]
    oldest = app.get("/@jobs?sort=oldest", headers=app.auth())
    assert [j["uuid"] for j in oldest.json] == made
    assert oldest.headers["X-Total-Count"] == "3"
    assert "Link" not in oldest.headers
    newest = app.get("/@jobs?sort=newest", headers=app.auth())
    assert [j["uuid"] for j in newest.json] == made[::-1]
    # newest is the default, and a job is the same object in either order
    assert newest.json == app.get("/@jobs", headers=app.auth()).json == oldest.json[::-1]


@pytest.mark.parametrize("sort", ["oldest", "newest"])
def test_pages_follow_the_link_and_keep_the_sort(app_without_worker, sort):
    app = app_without_worker
    made = [app.submit({"action": "dummy"})["uuid"] for _ in range(5)]
    seen, links = every_page(app, f"/@jobs?sort={sort}&b_size=2")
    assert seen == (made if sort == "oldest" else made[::-1])
    assert len(links) == 2
    for link in links:
        query = parse_qs(urlsplit(link).query)
        assert query["sort"] == [sort]
        assert query["b_size"] == ["2"]


def test_jobs_added_while_paging_oldest_first_come_at_the_end(app_without_worker):
    app = app_without_worker
    made = [app.submit({"action": "dummy"})["uuid"] for _ in range(3)]
    first = app.get("/@jobs?sort=oldest&b_size=2", headers=app.auth())
    assert [j["uuid"] for j in first.json] == made[:2]
    later = app.submit({"action": "dummy"})["uuid"]
    rest, _ = every_page(app, next_url(first))
    assert rest == [made[2], later]
    # newest first, the new job is before the cursor: the next page doesn't repeat or show it
    first = app.get("/@jobs?b_size=2", headers=app.auth())
    assert [j["uuid"] for j in first.json] == [later, made[2]]
    app.submit({"action": "dummy"})
    rest, _ = every_page(app, next_url(first))
    assert rest == [made[1], made[0]]


def test_every_filter_in_both_orders(app_without_worker):
    app = app_without_worker
    jobs = [
        app.submit({"action": "dummy"}, title="Nightly REINDEX"),
        app.submit({"action": "echo", "message": "a"}, description="reindex the events"),
        app.submit({"action": "echo", "message": "b"}, login="alice"),
        app.submit({"action": "dummy"}, title="reindex again"),
        app.submit({"action": "echo", "message": "c"}, description="Reindex once more"),
        app.submit({"action": "dummy"}),
    ]
    uuids = [job["uuid"] for job in jobs]
    app.post(f"/@jobs/{uuids[3]}/abort", headers=app.auth(), status=204)
    app.post(f"/@jobs/{uuids[4]}/abort", headers=app.auth(), status=204)
    with app.backend.engine.begin() as conn:
        conn.execute(
            sa.update(Job).where(Job.uuid.in_(uuids[3:5])).values(parent=uuids[0]),
        )
    expected = {
        "action=echo": [1, 2, 4],
        "status=aborted": [3, 4],
        "actor=alice": [2],
        "actor=admin": [0, 1, 3, 4, 5],
        "q=reindex": [0, 1, 3, 4],
        f"parent={uuids[0]}": [3, 4],
        "action=echo&status=aborted": [4],
        "q=REINDEX&action=dummy": [0, 3],
    }
    for query, indexes in expected.items():
        oldest = [uuids[i] for i in indexes]
        # one job a page: every page boundary goes through the cursor
        for sort, order in (("oldest", oldest), ("newest", oldest[::-1])):
            seen, links = every_page(app, f"/@jobs?{query}&sort={sort}&b_size=1")
            assert seen == order, (query, sort)
            assert all(f"sort={sort}" in link for link in links)
            whole = app.get(f"/@jobs?{query}&sort={sort}", headers=app.auth())
            assert [j["uuid"] for j in whole.json] == order
            assert whole.headers["X-Total-Count"] == str(len(order))


def test_a_user_pages_their_own_jobs_oldest_first(app_without_worker):
    app = app_without_worker
    mine = []
    for n in range(3):
        app.submit({"action": "echo", "message": str(n)})
        mine.append(app.submit({"action": "echo", "message": str(n)}, login="alice")["uuid"])
    seen, _ = every_page(app, "/@jobs?sort=oldest&b_size=2", login="alice")
    assert seen == mine


def test_count_in_either_order(app_without_worker):
    app = app_without_worker
    for _ in range(3):
        app.submit({"action": "dummy"})
    res = app.get("/@jobs?sort=oldest&b_size=1&count=true", headers=app.auth())
    assert res.headers["X-Total-Count"] == "3"
    assert len(res.json) == 1


@pytest.mark.parametrize(
    ("made_with", "used_with", "says"),
    [
        ("sort=oldest", "", "oldest"),
        ("sort=oldest", "sort=newest", "oldest"),
        ("", "sort=oldest", "newest"),
        ("sort=newest", "sort=oldest", "newest"),
    ],
)
def test_a_cursor_is_refused_in_the_other_order(app_without_worker, made_with, used_with, says):
    app = app_without_worker
    for _ in range(3):
        app.submit({"action": "dummy"})
    res = app.get(f"/@jobs?b_size=1&{made_with}", headers=app.auth())
    cursor = parse_qs(urlsplit(next_url(res)).query)["cursor"][0]
    # still good in its own order
    app.get(f"/@jobs?b_size=1&{made_with}&cursor={cursor}", headers=app.auth(), status=200)
    refused = app.get(
        f"/@jobs?b_size=1&{used_with}&cursor={cursor}", headers=app.auth(), status=400
    )
    assert refused.json["error"]["type"] == "Invalid cursor"
    assert f"sort={says}" in refused.json["error"]["message"]


@pytest.mark.parametrize(
    "cursor",
    [
        "djE6b2xkZXN0Og",  # v1:oldest: (no id)
        "djE6b2xkZXN0Ong",  # v1:oldest:x
        "djE6b2xkZXN0OjE4NDQ2NzQ0MDczNzA5NTUxNjE2",  # v1:oldest:18446744073709551616
        "djI6MQ",  # v2:1
        "%%%",
    ],
)
def test_a_cursor_the_server_did_not_give_is_refused_oldest_first(app, cursor):
    res = app.get(f"/@jobs?sort=oldest&cursor={cursor}", headers=app.auth(), status=400)
    assert res.json["error"] == {
        "type": "Invalid cursor",
        "message": "The cursor is not one this server gave out.",
    }


@pytest.mark.parametrize(
    "query", ["sort=random", "sort=", "sort=OLDEST", "sort=oldest&sort=newest"]
)
def test_sort_takes_newest_or_oldest(app, query):
    res = app.get(f"/@jobs?{query}", headers=app.auth(), status=400)
    assert res.json["error"]["type"] == "Validation error"
    assert set(res.json["error"]["fields"]) == {"sort"}
