"""/@scheduled-jobs on every backend: success paths and the errors clients can cause."""

from __future__ import annotations

import datetime as dt
import re

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from nick_jobs.db.meta import utcnow
from nick_jobs.scheduling.scheduler import Scheduler
from nick_jobs.users.accounts import add_user, remove_user
from nick_jobs.users.model import User

URL = "http://localhost:8080/@scheduled-jobs"
NIGHTLY = {
    "id": "reindex-events",
    "title": "Reindex Events",
    "description": "Reindex all events",
    "action": "echo",
    "params": {"message": "reindexed"},
    "schedule": "0 0 * * *",
}


@pytest.fixture
def client(app, backend):
    """The ``app`` fixture with no scheduled jobs left by an earlier test."""
    with backend.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM scheduled_firings"))
        conn.execute(sa.text("DELETE FROM scheduled_jobs"))
    return app


def add(client, body=None, status=201, login="admin"):
    return client.post_json(
        "/@scheduled-jobs", body or NIGHTLY, headers=client.auth(login), status=status
    )


def iso(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def next_midnight() -> dt.datetime:
    return dt.datetime.combine(utcnow().date() + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)


# --- success ---------------------------------------------------------------------------


def test_create_answers_201_with_location_and_the_scheduled_job(client):
    before = next_midnight()
    res = add(client)
    assert res.headers["Location"] == f"{URL}/reindex-events"
    assert res.json["next_run"] in {iso(before), iso(next_midnight())}  # even across midnight
    assert res.json == {
        "@id": f"{URL}/reindex-events",
        "id": "reindex-events",
        "title": "Reindex Events",
        "description": "Reindex all events",
        "action": "echo",
        "params": {"message": "reindexed"},
        "schedule": "0 0 * * *",
        "enabled": True,
        "timezone": "UTC",
        "last_run": None,
        "next_run": res.json["next_run"],
        "declared": False,
        "skipped": None,
    }


def test_create_takes_title_and_description_from_the_action_by_default(client):
    res = add(
        client,
        {"id": "echo", "action": "echo", "params": {"message": "hi"}, "schedule": "*/5 * * * *"},
    )
    assert res.json["title"] == "Echo"
    assert res.json["description"] == "Returns its message."
    assert res.json["timezone"] == "UTC"


def test_list_is_a_bare_array_sorted_by_id_and_get_reads_one(client):
    add(client)
    add(client, {**NIGHTLY, "id": "a-first", "enabled": False})
    res = client.get("/@scheduled-jobs", headers=client.auth())
    assert [item["id"] for item in res.json] == ["a-first", "reindex-events"]
    assert res.json[0]["next_run"] is None  # disabled
    one = client.get("/@scheduled-jobs/reindex-events", headers=client.auth()).json
    assert one == res.json[1]


def test_patch_changes_fields_and_answers_204(client):
    add(client)
    client.patch_json(
        "/@scheduled-jobs/reindex-events",
        {"title": "Nightly", "params": {"message": "again"}, "schedule": "30 1 * * *"},
        headers=client.auth(),
        status=204,
    )
    got = client.get("/@scheduled-jobs/reindex-events", headers=client.auth()).json
    assert got["title"] == "Nightly"
    assert got["params"] == {"message": "again"}
    assert got["schedule"] == "30 1 * * *"
    assert got["next_run"].endswith("T01:30:00.000Z")


def test_patch_with_prefer_returns_the_representation(client):
    add(client)
    res = client.patch_json(
        "/@scheduled-jobs/reindex-events",
        {"timezone": "Europe/Amsterdam"},
        headers={**client.auth(), "Prefer": "return=representation"},
        status=200,
    )
    assert res.json["timezone"] == "Europe/Amsterdam"
    # Midnight in Amsterdam is 22:00 or 23:00 UTC.
    assert res.json["next_run"][11:] in {"22:00:00.000Z", "23:00:00.000Z"}


def test_disabling_clears_next_run_and_enabling_sets_it_again(client):
    add(client)
    path = "/@scheduled-jobs/reindex-events"
    client.patch_json(path, {"enabled": False}, headers=client.auth(), status=204)
    got = client.get(path, headers=client.auth()).json
    assert (got["enabled"], got["next_run"]) == (False, None)
    client.patch_json(path, {"enabled": True}, headers=client.auth(), status=204)
    assert client.get(path, headers=client.auth()).json["next_run"].endswith("T00:00:00.000Z")


def test_delete_answers_204_and_the_scheduled_job_is_gone(client):
    add(client)
    client.delete("/@scheduled-jobs/reindex-events", headers=client.auth(), status=204)
    client.get("/@scheduled-jobs/reindex-events", headers=client.auth(), status=404)
    assert client.get("/@scheduled-jobs", headers=client.auth()).json == []


def test_scheduled_job_actions_lists_every_action(client):
    res = client.get("/@scheduled-job-actions", headers=client.auth())
    names = [action["name"] for action in res.json]
    assert names == sorted(names)
    assert {"dummy", "prune", "echo"} <= set(names)
    echo = next(action for action in res.json if action["name"] == "echo")
    assert echo["params"]["required"] == ["message"]


def test_a_firing_creates_a_job_that_runs(client):
    """The fired job, with the scheduled job's params, runs to completed on every backend."""
    add(client)
    midnight = next_midnight()
    fired = Scheduler(client.app.registry).tick(midnight + dt.timedelta(seconds=1))
    assert len(fired) == 1
    job = client.wait_for(fired[0].job_uuid, "completed")
    assert job["params"] == {
        "scheduled_job": "reindex-events",
        "action": "echo",
        "message": "reindexed",
    }
    assert (job["title"], job["description"], job["actor"]) == (
        "Reindex Events",
        "Reindex all events",
        "admin",
    )
    assert job["result"] == {"message": "reindexed", "actor": "admin"}
    got = client.get("/@scheduled-jobs/reindex-events", headers=client.auth()).json
    assert got["last_run"] == iso(midnight + dt.timedelta(seconds=1))
    assert got["next_run"] == iso(midnight + dt.timedelta(days=1))


def set_roles(client, login: str, roles: list[str]) -> None:
    with client.backend.engine.begin() as conn:
        conn.execute(sa.update(User).where(User.login == login).values(roles=roles))


def skipped_metric(client, reason: str) -> float:
    text = client.get("/metrics", headers=client.auth()).text
    pattern = rf'^nick_jobs_scheduled_firings_skipped_total{{reason="{reason}"}} (\S+)$'
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def disabled_gauge(client, reason: str) -> float:
    """What every API node reports from the database, whichever process fired."""
    text = client.get("/metrics", headers=client.auth()).text
    name = "nick_jobs_scheduled_jobs_disabled_by_refused_firing"
    found = re.search(rf'^{name}{{reason="{reason}"}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_a_demoted_owners_schedule_creates_no_job_and_says_why(client):
    """Alice, an Administrator, schedules a Manage Site action, then loses the role."""
    set_roles(client, "alice", ["Administrator"])
    add(client, {**NIGHTLY, "id": "alices-prune", "action": "prune", "params": {}}, login="alice")
    set_roles(client, "alice", [])
    counted = skipped_metric(client, "owner_lacks_permission")
    midnight = next_midnight()
    assert Scheduler(client.app.registry).tick(midnight + dt.timedelta(seconds=2)) == []
    assert client.get("/@jobs", headers=client.auth()).json == []
    path = "/@scheduled-jobs/alices-prune"
    got = client.get(path, headers=client.auth()).json
    assert (got["enabled"], got["next_run"], got["last_run"]) == (False, None, None)
    assert got["skipped"] == {
        "slot": iso(midnight),
        "at": iso(midnight + dt.timedelta(seconds=2)),
        "reason": "owner_lacks_permission",
        "message": "Its owner 'alice' no longer has the permission 'Manage Site' that the "
        "action 'prune' needs.",
    }
    assert client.get("/@scheduled-jobs", headers=client.auth()).json[0] == got
    assert skipped_metric(client, "owner_lacks_permission") == counted + 1
    assert disabled_gauge(client, "owner_lacks_permission") == 1
    # An administrator enables it again: the record goes, and the next firing checks again.
    res = client.patch_json(
        path,
        {"enabled": True},
        headers={**client.auth(), "Prefer": "return=representation"},
        status=200,
    )
    assert (res.json["enabled"], res.json["skipped"]) == (True, None)
    assert disabled_gauge(client, "owner_lacks_permission") == 0
    assert res.json["next_run"] in {iso(midnight), iso(next_midnight())}  # across midnight
    next_slot = dt.datetime.fromisoformat(res.json["next_run"])
    with Session(client.backend.engine) as session, session.begin():
        assert remove_user(session, "alice")
    counted = skipped_metric(client, "owner_missing")
    assert Scheduler(client.app.registry).tick(next_slot) == []
    got = client.get(path, headers=client.auth()).json
    assert (got["enabled"], got["skipped"]["reason"]) == (False, "owner_missing")
    assert got["skipped"]["message"] == "Its owner 'alice' no longer exists."
    assert skipped_metric(client, "owner_missing") == counted + 1
    assert disabled_gauge(client, "owner_missing") == 1


def test_a_user_re_added_without_the_role_does_not_inherit_the_schedule(client):
    with Session(client.backend.engine) as session, session.begin():
        add_user(session, "carol", "carol-password", roles=["Administrator"])
    add(client, {**NIGHTLY, "id": "carols-prune", "action": "prune", "params": {}}, login="carol")
    with Session(client.backend.engine) as session, session.begin():
        assert remove_user(session, "carol")
        add_user(session, "carol", "carol-password", roles=[])
    fired = Scheduler(client.app.registry).tick(next_midnight() + dt.timedelta(seconds=1))
    assert fired == []
    # Carol sees no job made in her name, and the schedule stays out of her reach.
    assert client.get("/@jobs", headers=client.auth("carol")).json == []
    assert client.get("/@jobs", headers=client.auth()).json == []
    client.get("/@scheduled-jobs/carols-prune", headers=client.auth("carol"), status=403)
    got = client.get("/@scheduled-jobs/carols-prune", headers=client.auth()).json
    assert got["skipped"]["reason"] == "owner_lacks_permission"


# --- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "says"),
    [
        ("0 0 * *", "has 5 fields"),
        ("0 0 * * * *", "has 5 fields"),
        ("61 * * * *", "not a valid cron expression"),
        ("0 0 30 2 *", "never fires"),
        ("every day", "has 5 fields"),
    ],
)
def test_bad_cron_is_400_saying_why(client, schedule, says):
    res = add(client, {**NIGHTLY, "schedule": schedule}, status=400)
    error = res.json["error"]
    assert error["type"] == "Validation error"
    assert list(error["fields"]) == ["schedule"]
    assert says in error["fields"]["schedule"][0]


def test_unknown_action_is_400(client):
    res = add(client, {**NIGHTLY, "action": "reindex"}, status=400)
    assert res.json["error"]["fields"] == {"action": ["Unknown action 'reindex'."]}


def test_params_are_checked_by_the_actions_schema(client):
    res = add(client, {**NIGHTLY, "params": {"message": 42}}, status=400)
    assert res.json["error"]["fields"] == {"params": {"message": ["Not a valid string."]}}
    res = add(client, {**NIGHTLY, "params": {"message": "x", "scheduled_job": "y"}}, status=400)
    assert "scheduled_job" in res.json["error"]["fields"]["params"]


def test_patch_checks_params_against_the_new_action(client):
    add(client)
    res = client.patch_json(
        "/@scheduled-jobs/reindex-events",
        {"action": "prune"},
        headers=client.auth(),
        status=400,
    )
    assert res.json["error"]["fields"] == {"params": {"message": ["Unknown field."]}}


def test_bad_time_zone_id_and_unknown_fields_are_400(client):
    fields = add(client, {**NIGHTLY, "timezone": "Mars/Olympus"}, status=400).json["error"]
    assert "Unknown time zone" in fields["fields"]["timezone"][0]
    fields = add(client, {**NIGHTLY, "id": "Not A Slug"}, status=400).json["error"]["fields"]
    assert list(fields) == ["id"]
    fields = add(client, {**NIGHTLY, "next_run": "soon"}, status=400).json["error"]["fields"]
    assert fields == {"next_run": ["Unknown field."]}
    client.patch_json("/@scheduled-jobs/reindex-events", {}, headers=client.auth(), status=404)
    add(client)
    res = client.patch_json(
        "/@scheduled-jobs/reindex-events", {"id": "x"}, headers=client.auth(), status=400
    )
    assert res.json["error"]["fields"] == {"id": ["Unknown field."]}


def test_duplicate_id_is_409(client):
    add(client)
    res = add(client, status=409)
    assert res.json == {
        "error": {
            "type": "Conflict",
            "message": "A scheduled job with the id 'reindex-events' already exists.",
        }
    }


def test_unknown_id_is_404(client):
    for method in ("get", "delete"):
        res = getattr(client, method)("/@scheduled-jobs/nope", headers=client.auth(), status=404)
        assert res.json["error"]["type"] == "Not found"
    res = client.patch_json("/@scheduled-jobs/nope", {}, headers=client.auth(), status=404)
    assert res.json["error"]["type"] == "Not found"


def _every_endpoint(client, headers, status):
    answers = [
        client.get("/@scheduled-jobs", headers=headers, status=status),
        client.post_json("/@scheduled-jobs", NIGHTLY, headers=headers, status=status),
        client.get("/@scheduled-jobs/reindex-events", headers=headers, status=status),
        client.get("/@scheduled-jobs/nope", headers=headers, status=status),
        client.patch_json("/@scheduled-jobs/reindex-events", {}, headers=headers, status=status),
        client.delete("/@scheduled-jobs/reindex-events", headers=headers, status=status),
        client.get("/@scheduled-job-actions", headers=headers, status=status),
    ]
    return [res.json["error"] for res in answers]


def test_non_admin_is_403_everywhere(client):
    add(client)
    errors = _every_endpoint(client, client.auth("alice"), 403)
    assert {e["type"] for e in errors} == {"Forbidden"}
    assert client.get("/@scheduled-jobs", headers=client.auth()).json[0]["enabled"] is True


def test_anonymous_is_401_everywhere(client):
    add(client)
    errors = _every_endpoint(client, {}, 401)
    assert {(e["type"], e["message"]) for e in errors} == {
        ("Unauthorized", "You are not authorized to access this resource.")
    }
