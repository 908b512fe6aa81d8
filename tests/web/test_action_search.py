"""``GET /@job-actions?q=...``: searching the actions, and paging them as the job list
pages once the list is long."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from nick_jobs.web.permissions import Permission
from tests.actions_for_tests import echo
from tests.conftest import next_url

# Included by the apps of the paging tests: as many actions as a long installation has,
# every third one open to any user.
MANY = 120
THIS_MODULE = __name__


def includeme(config) -> None:
    for n in range(MANY):
        permission = Permission.ADD_JOBS if n % 3 == 0 else Permission.MANAGE_SITE
        config.add_job_action(
            f"bulk-{n:03d}",
            echo,
            title=f"Bulk action {n}",
            description="Many alike." if n != 77 else "The one with a Needle in it.",
            permission=permission.value,
        )


@pytest.fixture
def long_list(app, make_app):
    return make_app(**{"nick_jobs.includes": f"tests.actions_for_tests {THIS_MODULE}"})


def every_page(app, url: str, login: str = "admin") -> tuple[list[str], list[int]]:
    """The names on every page from ``url`` on, following ``Link``, and each page's size."""
    names, sizes = [], []
    while url:
        res = app.get(url, headers=app.auth(login))
        names += [action["name"] for action in res.json]
        sizes.append(len(res.json))
        url = next_url(res)
    return names, sizes


def test_a_short_list_is_one_page_as_before(app):
    res = app.get("/@job-actions", headers=app.auth())
    names = [action["name"] for action in res.json]
    assert names == sorted(names)
    assert {"dummy", "echo", "prune"} <= set(names)
    assert "Link" not in res.headers
    assert "X-Total-Count" not in res.headers
    # a page exactly as large as the list is that same list, with no next page
    exact = app.get(f"/@job-actions?b_size={len(names)}", headers=app.auth())
    assert exact.json == res.json
    assert "Link" not in exact.headers


def test_q_searches_name_title_and_description_ignoring_case(app):
    def names(q: str, login: str = "admin") -> list[str]:
        res = app.get("/@job-actions", {"q": q}, headers=app.auth(login))
        assert "Link" not in res.headers
        return [action["name"] for action in res.json]

    assert names("PRUNE") == ["prune"]  # the name
    assert names("finished JOBS") == ["prune"]  # the title, "Prune finished jobs"
    assert names("for demos") == ["dummy"]  # the description
    assert "echo" in names("eCh")
    assert names("no action says this") == []
    # what a user can't submit isn't found either
    assert names("echo", login="alice") == names("echo")
    assert names("dummy", login="alice") == []
    full = {a["name"]: a for a in app.get("/@job-actions", headers=app.auth()).json}
    found = app.get("/@job-actions?q=prune", headers=app.auth()).json
    assert found == [full["prune"]]


def test_a_long_list_pages_with_link(long_list):
    app = long_list
    everything = app.get("/@job-actions?b_size=1000", headers=app.auth()).json
    all_names = [action["name"] for action in everything]
    assert len(all_names) > MANY
    assert all_names == sorted(all_names)
    first = app.get("/@job-actions", headers=app.auth())
    assert first.json == everything[:50]  # 50 by default, as the job list
    names, sizes = every_page(app, "/@job-actions")
    assert names == all_names
    assert sizes[:-1] == [50] * (len(sizes) - 1)
    names, sizes = every_page(app, "/@job-actions?b_size=7")
    assert names == all_names
    assert set(sizes[:-1]) == {7}


def test_paging_keeps_q_and_the_callers_permissions(long_list):
    app = long_list
    names, sizes = every_page(app, "/@job-actions?q=BULK&b_size=10")
    assert names == [f"bulk-{n:03d}" for n in range(MANY)]
    assert len(sizes) == MANY // 10
    res = app.get("/@job-actions?q=bulk&b_size=10", headers=app.auth())
    query = parse_qs(urlsplit(next_url(res)).query)
    assert query["q"] == ["bulk"]
    assert query["b_size"] == ["10"]
    # alice may submit every third one (and echo and the others open to her)
    names, _ = every_page(app, "/@job-actions?q=bulk&b_size=4", login="alice")
    assert names == [f"bulk-{n:03d}" for n in range(0, MANY, 3)]
    assert every_page(app, "/@job-actions?q=needle")[0] == ["bulk-077"]


def test_page_size_is_capped(app, make_app):
    capped = make_app(
        **{
            "nick_jobs.includes": f"tests.actions_for_tests {THIS_MODULE}",
            "nick_jobs.max_page_size": "60",
            "nick_jobs.default_page_size": "20",
        }
    )
    assert len(capped.get("/@job-actions", headers=capped.auth()).json) == 20
    assert len(capped.get("/@job-actions?b_size=100000", headers=capped.auth()).json) == 60


@pytest.mark.parametrize(
    "query",
    [
        "cursor=%%%",
        "cursor=djE6Mw",  # a job list cursor
        "cursor=YTE6",  # an action cursor without a name
        "b_size=0",
        "b_size=x",
        "q=",
        "q=a&q=b",
        "sort=oldest",
    ],
)
def test_bad_queries_are_400(app, query):
    res = app.get(f"/@job-actions?{query}", headers=app.auth(), status=400)
    assert set(res.json["error"]) >= {"type", "message"}
    if query.startswith("cursor="):
        assert res.json["error"]["type"] == "Invalid cursor"


def test_a_cursor_past_every_action_is_an_empty_page(app):
    # "a1:zzz": after the last name, as when the actions after the cursor were removed
    res = app.get("/@job-actions?cursor=YTE6enp6", headers=app.auth())
    assert res.json == []
    assert "Link" not in res.headers
