"""Remote actions, declared as data over HTTP: versions, the list of both kinds, and
submitting their jobs, which no Dramatiq worker runs (on every backend)."""

from __future__ import annotations

import sqlalchemy as sa

from nick_jobs.jobs.model import Job

REINDEX = {
    "title": "Reindex a site",
    "description": "Rebuilds the catalog of one site, in batches.",
    "permission": "Add Jobs",
    "params": {
        "type": "object",
        "properties": {
            "site": {"type": "string", "minLength": 1},
            "batch": {"type": "integer", "minimum": 1, "default": 500},
        },
        "required": ["site"],
        "additionalProperties": False,
    },
    "result": {"type": "object", "properties": {"indexed": {"type": "integer"}}},
    "labels": {"team": "search"},
    "lease": 120,
}


def _put(app, name: str, body: dict, status: int = 201, login: str = "admin"):
    return app.put_json(f"/@job-actions/{name}", body, headers=app.auth(login), status=status)


def _job_row(app, uuid: str):
    with app.backend.engine.connect() as conn:
        return conn.execute(sa.select(Job).where(Job.uuid == uuid)).one()


def test_a_new_remote_action_is_version_1_with_its_defaults(app_without_worker):
    app = app_without_worker
    res = _put(app, "reindex", REINDEX)
    assert res.headers["Location"] == "http://localhost:8080/@job-actions/reindex"
    action = res.json
    assert action == {
        "name": "reindex",
        "kind": "remote",
        "version": 1,
        **REINDEX,
        "resumable": False,
        "max_retries": 0,
        "min_backoff": 1.0,
        "max_backoff": 300.0,
        "claim_window": 0,
    }
    assert app.get("/@job-actions/reindex", headers=app.auth()).json == action
    # Listed with the Python actions, by name, each with its kind.
    listed = app.get("/@job-actions?b_size=100", headers=app.auth()).json
    names = [a["name"] for a in listed]
    assert names == sorted(names)
    assert {a["name"]: a["kind"] for a in listed if a["kind"] == "remote"} == {"reindex": "remote"}
    assert {"dummy", "prune"} <= {a["name"] for a in listed if a["kind"] == "python"}


def test_a_change_bumps_the_version_and_an_unchanged_put_does_not(app_without_worker):
    app = app_without_worker
    _put(app, "reindex", REINDEX)
    same = _put(app, "reindex", REINDEX, status=200).json
    assert same["version"] == 1
    # What GET shows can be sent back as it is.
    assert _put(app, "reindex", same, status=200).json["version"] == 1
    changed = _put(app, "reindex", {**REINDEX, "lease": 300}, status=200).json
    assert (changed["version"], changed["lease"]) == (2, 300)
    versions = app.get("/@job-actions/reindex/versions", headers=app.auth()).json
    assert [(v["version"], v["lease"], v["created_by"]) for v in versions] == [
        (2, 300, "admin"),
        (1, 120, "admin"),
    ]
    assert versions[0]["created"].endswith("Z")
    # A Python action's versions: none to list.
    assert app.get("/@job-actions/dummy/versions", headers=app.auth()).json == []


def test_a_change_made_from_an_old_version_is_a_conflict(app_without_worker):
    app = app_without_worker
    _put(app, "reindex", REINDEX)
    _put(app, "reindex", {**REINDEX, "lease": 300, "version": 1}, status=200)
    res = _put(app, "reindex", {**REINDEX, "lease": 30, "version": 1}, status=409)
    assert res.json["error"]["message"] == (
        "The action 'reindex' is at version 2 now, not 1: read it again and send your change "
        "made from that."
    )
    assert app.get("/@job-actions/reindex", headers=app.auth()).json["lease"] == 300


def test_python_actions_cant_be_replaced_or_deleted(app_without_worker):
    app = app_without_worker
    res = _put(app, "dummy", REINDEX, status=409)
    assert "'dummy' is a Python action" in res.json["error"]["message"]
    res = app.delete("/@job-actions/dummy", headers=app.auth(), status=409)
    assert "can't be deleted" in res.json["error"]["message"]


def test_delete_removes_a_remote_action(app_without_worker):
    app = app_without_worker
    _put(app, "reindex", REINDEX)
    app.delete("/@job-actions/reindex", headers=app.auth(), status=204)
    app.get("/@job-actions/reindex", headers=app.auth(), status=404)
    app.delete("/@job-actions/reindex", headers=app.auth(), status=404)
    listed = app.get("/@job-actions?b_size=100", headers=app.auth()).json
    assert "reindex" not in {a["name"] for a in listed}
    # Made again, it goes on after the versions kept.
    assert _put(app, "reindex", REINDEX).json["version"] == 2


def test_invalid_definitions_are_400_with_the_fields(app_without_worker):
    app = app_without_worker
    cases = [
        ({"params": {"type": "objekt"}}, "params"),
        ({"params": []}, "params"),
        ({"colour": "blue"}, "colour"),
        ({"min_backoff": 10, "max_backoff": 5}, "min_backoff"),
        ({"lease": 1}, "lease"),
        ({"permission": "Do Anything"}, "permission"),
        ({"name": "other"}, "name"),
        ({"kind": "python"}, "kind"),
    ]
    for body, field in cases:
        res = _put(app, "reindex", body, status=400)
        assert res.json["error"]["type"] == "Validation error"
        assert field in res.json["error"]["fields"], (body, res.json)
    assert "Not a valid JSON Schema" in str(
        _put(app, "reindex", {"params": {"type": "objekt"}}, status=400).json
    )
    app.get("/@job-actions/reindex", headers=app.auth(), status=404)
    # A name the API could never hold.
    app.put_json("/@job-actions/a%20b", REINDEX, headers=app.auth(), status=404)


def test_who_may_read_and_change_remote_actions(app_without_worker):
    app = app_without_worker
    _put(app, "reindex", REINDEX)
    _put(app, "purge", {**REINDEX, "permission": "Manage Site"})
    # alice may submit reindex ("Add Jobs"), not purge: she sees the one only.
    assert app.get("/@job-actions/reindex", headers=app.auth("alice")).json["version"] == 1
    app.get("/@job-actions/purge", headers=app.auth("alice"), status=404)
    app.get("/@job-actions/purge/versions", headers=app.auth("alice"), status=404)
    listed = {
        a["name"] for a in app.get("/@job-actions?b_size=100", headers=app.auth("alice")).json
    }
    assert "reindex" in listed
    assert "purge" not in listed
    # Only an administrator changes them.
    _put(app, "reindex", {**REINDEX, "lease": 5}, status=403, login="alice")
    app.delete("/@job-actions/reindex", headers=app.auth("alice"), status=403)
    app.get("/@job-actions/reindex", status=401)


def test_a_remote_jobs_params_are_checked_against_its_json_schema(app_without_worker):
    app = app_without_worker
    _put(app, "reindex", REINDEX)
    res = app.post_json(
        "/@jobs",
        {"params": {"action": "reindex", "batch": "many", "colour": "blue"}},
        headers=app.auth("alice"),
        status=400,
    )
    assert res.json["error"]["fields"] == {
        "params": {
            "site": ["Missing data for required field."],
            "batch": ["'many' is not of type 'integer'"],
            "colour": ["Unknown field."],
        }
    }
    job = app.submit({"action": "reindex", "site": "news"}, login="alice")
    assert job["params"] == {"action": "reindex", "site": "news"}
    assert job["title"] == "Reindex a site"
    assert _job_row(app, job["uuid"]).action_version == 1
    # Jobs submitted after a change record the version they were submitted under.
    _put(app, "reindex", {**REINDEX, "lease": 300}, status=200)
    later = app.submit({"action": "reindex", "site": "events"}, login="alice")
    assert _job_row(app, later["uuid"]).action_version == 2


def test_no_worker_takes_a_remote_job(app):
    """A remote job gets no broker message: a Dramatiq worker, which has no handler for
    it, never starts (or fails) it. A job submitted after it runs to its end meanwhile."""
    _put(app, "reindex", REINDEX)
    remote = app.submit({"action": "reindex", "site": "news"})
    both = app.post_json(
        "/@jobs",
        [{"params": {"action": "reindex", "site": "a"}}, {"params": {"action": "dummy"}}],
        headers=app.auth(),
        status=201,
    ).json
    app.wait_for(both[1]["uuid"], "completed")
    for uuid in (remote["uuid"], both[0]["uuid"]):
        job = app.get(f"/@jobs/{uuid}", headers=app.auth()).json
        assert (job["status"], job["started"]) == ("created", None)
    # Aborted, retried and restarted: still no message.
    app.post(f"/@jobs/{remote['uuid']}/abort", headers=app.auth(), status=204)
    app.post(f"/@jobs/{remote['uuid']}/retry", headers=app.auth(), status=204)
    restarted = app.post(f"/@jobs/{both[0]['uuid']}/abort", headers=app.auth(), status=204)
    restarted = app.post(f"/@jobs/{both[0]['uuid']}/restart", headers=app.auth(), status=201)
    check = app.submit({"action": "dummy"})
    app.wait_for(check["uuid"], "completed")
    assert app.get(f"/@jobs/{remote['uuid']}", headers=app.auth()).json["status"] == "created"
    new = restarted.json
    assert app.get(f"/@jobs/{new['uuid']}", headers=app.auth()).json["status"] == "created"
    assert _job_row(app, new["uuid"]).action_version == 1
