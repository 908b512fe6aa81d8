"""The /@jobs endpoints on every backend: success paths and the errors clients can cause."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
import sqlalchemy as sa

from nick_jobs.jobs.model import Job
from nick_jobs.jobs.serialize import job_json


def test_submit_runs_to_completed(app):
    job = app.submit({"action": "dummy", "result": {"answer": 42}})
    assert job["status"] == "created"
    assert job["actor"] == "admin"
    assert job["@id"] == f"http://localhost:8080/@jobs/{job['uuid']}"
    assert job["started"] is None
    assert job["finished"] is None
    done = app.wait_for(job["uuid"], "completed")
    assert done["result"] == {"answer": 42}
    assert done["started"].endswith("Z")
    assert done["finished"].endswith("Z")
    assert done["created"] <= done["started"] <= done["finished"]


def test_a_submitted_jobs_url_follows_the_host_it_is_asked_by(app):
    for environ, base in (
        ({"HTTP_HOST": "jobs.example.org", "wsgi.url_scheme": "https"}, "https://jobs.example.org"),
        ({"HTTP_HOST": "localhost:8080", "SCRIPT_NAME": "/api"}, "http://localhost:8080/api"),
    ):
        res = app.post_json(
            "/@jobs",
            {"params": {"action": "dummy"}},
            headers=app.auth(),
            extra_environ=environ,
            status=201,
        )
        url = f"{base}/@jobs/{res.json['uuid']}"
        assert (res.headers["Location"], res.json["@id"]) == (url, url)


def test_submit_answers_201_with_location_and_defaults(app):
    res = app.post_json("/@jobs", {"params": {"action": "dummy"}}, headers=app.auth(), status=201)
    assert res.headers["Location"] == res.json["@id"]
    assert res.json["title"] == "Dummy job"
    assert res.json["params"] == {"action": "dummy"}
    assert set(res.json) >= {
        "uuid",
        "title",
        "description",
        "params",
        "actor",
        "created",
        "started",
        "finished",
        "status",
        "result",
    }


def test_failed_job_has_error_and_no_traceback(app):
    job = app.submit({"action": "dummy", "fail": "disk full"})
    failed = app.wait_for(job["uuid"], "failed")
    assert failed["error"] == {"type": "JobFailed", "message": "disk full"}
    assert failed["finished"] is not None


def test_handler_exception_fails_the_job(app):
    job = app.submit({"action": "explode"})
    failed = app.wait_for(job["uuid"], "failed")
    assert failed["error"] == {"type": "RuntimeError", "message": "kaboom"}


def test_get_unknown_or_malformed_uuid_is_404(app):
    for path in (f"/@jobs/{uuid.uuid4()}", "/@jobs/not-a-uuid", "/@jobs/1"):
        res = app.get(path, headers=app.auth(), status=404)
        assert res.json["error"]["type"] == "Not found"


def test_list_is_newest_first_bare_array(app):
    first = app.submit({"action": "dummy"})
    second = app.submit({"action": "dummy"})
    res = app.get("/@jobs", headers=app.auth())
    assert isinstance(res.json, list)
    assert [j["uuid"] for j in res.json] == [second["uuid"], first["uuid"]]
    assert res.headers["X-Total-Count"] == "2"
    assert "Link" not in res.headers


def test_a_listed_job_is_the_job_itself(app):
    # Listing serialises rows by position: every field must match the job's own JSON,
    # a failed job's error included.
    done = app.submit({"action": "dummy", "result": {"n": 1}})
    failed = app.submit({"action": "dummy", "fail": "on purpose"})
    app.wait_for(done["uuid"], "completed")
    app.wait_for(failed["uuid"], "failed")
    listed = {j["uuid"]: j for j in app.get("/@jobs", headers=app.auth()).json}
    for job_uuid in (done["uuid"], failed["uuid"]):
        assert listed[job_uuid] == app.get(f"/@jobs/{job_uuid}", headers=app.auth()).json
    assert listed[failed["uuid"]]["error"]["message"] == "on purpose"
    assert listed[done["uuid"]]["result"] == {"n": 1}


def test_listed_timestamps_are_written_as_the_jobs_own(app_without_worker):
    # On PostgreSQL a page's timestamps are formatted by the database, a job's own by
    # Python: both UTC, milliseconds cut (never rounded), Z.
    app = app_without_worker
    job = app.submit({"action": "dummy"})
    plus_two = dt.timezone(dt.timedelta(hours=2))
    stamps = {
        "created": dt.datetime(2026, 3, 29, 0, 30, 5, 123999, tzinfo=plus_two),
        "started": dt.datetime(2026, 12, 31, 23, 59, 59, 999600, tzinfo=dt.UTC),
        "finished": dt.datetime(2027, 1, 1, 0, 0, 0, 0, tzinfo=dt.UTC),
        "next_run": dt.datetime(2027, 1, 1, 0, 0, 0, 999, tzinfo=dt.UTC),
    }
    with app.backend.engine.begin() as conn:
        conn.execute(Job.__table__.update().where(Job.uuid == job["uuid"]).values(**stamps))
    listed = app.get("/@jobs", headers=app.auth()).json
    own = app.get(f"/@jobs/{job['uuid']}", headers=app.auth()).json
    assert listed == [own] == [serialised_by_python(app, job["uuid"])]
    assert {key: own[key] for key in stamps} == {
        "created": "2026-03-28T22:30:05.123Z",
        "started": "2026-12-31T23:59:59.999Z",
        "finished": "2027-01-01T00:00:00.000Z",
        "next_run": "2027-01-01T00:00:00.000Z",
    }


@pytest.mark.parametrize(
    "stored",
    [
        {
            "params": {
                "action": "dummy",
                "text": 'é "quoted" \\ back\nline \u2028 \u0001 😀',
                "numbers": [1.5, 0.1, -0, 12345678901234567890, 1e100],
                "nested": {"a": None, "b": [True, False, {}], "": ""},
            },
            "result": None,
            "progress": {"step": 2, "steps": 3, "message": "Ünïcode"},
            "status": "completed",
            "parent": "00000000-0000-4000-8000-000000000000",
        },
        {"status": "failed", "error": {"type": "JobFailed"}},
        {"status": "failed", "error": {"type": 7, "message": None}},
        {"status": "failed", "error": {}},
        {"status": "failed", "error": None, "params": None},
        {"status": "completed", "error": {"type": "Stale", "message": "not failed"}},
        {"title": "", "description": "", "progress": None},
    ],
    ids=["odd-json", "no-message", "odd-error", "empty-error", "no-error", "not-failed", "nulls"],
)
def test_a_listed_job_is_its_own_json_whatever_is_stored(app_without_worker, stored):
    app = app_without_worker
    job = app.submit({"action": "dummy"})
    with app.backend.engine.begin() as conn:
        conn.execute(Job.__table__.update().where(Job.uuid == job["uuid"]).values(**stored))
    listed = app.get("/@jobs", headers=app.auth())
    own = app.get(f"/@jobs/{job['uuid']}", headers=app.auth())
    assert listed.json == [own.json] == [serialised_by_python(app, job["uuid"])]
    assert listed.headers["Content-Type"] == own.headers["Content-Type"]
    assert app.head(f"/@jobs/{job['uuid']}", headers=app.auth()).body == b""


def serialised_by_python(app, uuid: str) -> dict:
    """The job's JSON as Python writes it (on PostgreSQL, the database writes the API's
    own: a page of jobs and a job read alone), through the same JSON renderer."""
    with app.backend.engine.connect() as conn:
        row = conn.execute(sa.select(Job.__table__).where(Job.uuid == uuid)).one()
    return json.loads(json.dumps(job_json(row, f"http://localhost:8080/@jobs/{uuid}")))


def test_list_pages_with_link_cursor(app):
    made = [app.submit({"action": "dummy"})["uuid"] for _ in range(5)]
    seen, url = [], "/@jobs?b_size=2"
    while url:
        res = app.get(url, headers=app.auth())
        seen += [j["uuid"] for j in res.json]
        link = res.headers.get("Link")
        if link:
            assert link.endswith('>; rel="next"')
            url = link[1 : link.index(">")].replace("http://localhost:8080", "")
        else:
            url = None
    assert seen == list(reversed(made))


def test_list_count_when_asked(app):
    for _ in range(3):
        app.submit({"action": "dummy"})
    res = app.get("/@jobs?b_size=1&count=true", headers=app.auth())
    assert res.headers["X-Total-Count"] == "3"
    assert len(res.json) == 1


def test_list_filters(app):
    echo = app.submit({"action": "echo", "message": "hi"}, title="Reindex events")
    dummy = app.submit({"action": "dummy", "fail": "no"}, description="Nightly cleanup")
    app.wait_for(dummy["uuid"], "failed")
    app.wait_for(echo["uuid"], "completed")

    def uuids(query):
        return [j["uuid"] for j in app.get(f"/@jobs?{query}", headers=app.auth()).json]

    assert uuids("action=echo") == [echo["uuid"]]
    assert uuids("status=failed") == [dummy["uuid"]]
    assert uuids("q=REINDEX") == [echo["uuid"]]
    assert uuids("q=nightly") == [dummy["uuid"]]
    assert uuids("actor=admin") == [dummy["uuid"], echo["uuid"]]
    assert uuids("actor=nobody") == []
    assert uuids("q=%25") == []  # a LIKE wildcard is matched literally


@pytest.mark.parametrize(
    "query",
    ["status=bogus", "b_size=0", "b_size=x", "cursor=%%%", "cursor=djI6MQ", "parent=not-a-uuid"],
)
def test_list_bad_query_is_400(app, query):
    res = app.get(f"/@jobs?{query}", headers=app.auth(), status=400)
    assert set(res.json["error"]) >= {"type", "message"}


def test_list_page_size_is_capped(app):
    app.submit({"action": "dummy"})
    res = app.get("/@jobs?b_size=100000", headers=app.auth())
    assert len(res.json) == 1


def test_abort_created_job(app_without_worker):
    app = app_without_worker
    job = app.submit({"action": "dummy"})
    app.post(f"/@jobs/{job['uuid']}/abort", headers=app.auth(), status=204)
    aborted = app.get(f"/@jobs/{job['uuid']}", headers=app.auth()).json
    assert aborted["status"] == "aborted"
    assert aborted["started"] is None
    assert aborted["finished"] is not None


def test_abort_running_job_stops_it(app):
    job = app.submit({"action": "dummy", "sleep": 30, "steps": 30})
    app.wait_for(job["uuid"], "running")
    app.post(f"/@jobs/{job['uuid']}/abort", headers=app.auth(), status=204)
    assert app.wait_for(job["uuid"], "aborted")["result"] == {}


def test_abort_finished_job_is_409(app):
    job = app.submit({"action": "dummy"})
    app.wait_for(job["uuid"], "completed")
    res = app.post(f"/@jobs/{job['uuid']}/abort", headers=app.auth(), status=409)
    assert res.json["error"]["type"] == "Invalid state"
    assert res.json["error"]["status"] == "completed"


def test_retry_failed_job_runs_again(app):
    job = app.submit({"action": "dummy", "fail": "first time"})
    app.wait_for(job["uuid"], "failed")
    app.post(f"/@jobs/{job['uuid']}/retry", headers=app.auth(), status=204)
    again = app.wait_for(job["uuid"], "failed")
    assert again["attempt"] == 2


def test_retry_resets_and_reruns_aborted_job(app):
    job = app.submit({"action": "dummy", "sleep": 30, "steps": 30})
    app.wait_for(job["uuid"], "running")
    app.post(f"/@jobs/{job['uuid']}/abort", headers=app.auth(), status=204)
    app.wait_for(job["uuid"], "aborted")
    app.post(f"/@jobs/{job['uuid']}/retry", headers=app.auth(), status=204)
    rerun = app.wait_for(job["uuid"], {"created", "running"})
    assert rerun["attempt"] == 2
    assert rerun["finished"] is None
    assert rerun["result"] == {}
    app.post(f"/@jobs/{job['uuid']}/abort", headers=app.auth(), status=204)


@pytest.mark.parametrize("status", ["completed", "running"])
def test_retry_other_states_is_409(app, status):
    sleep = 30 if status == "running" else 0
    job = app.submit({"action": "dummy", "sleep": sleep, "steps": max(sleep, 1)})
    app.wait_for(job["uuid"], status)
    res = app.post(f"/@jobs/{job['uuid']}/retry", headers=app.auth(), status=409)
    assert res.json["error"]["status"] == status
    if status == "running":
        app.post(f"/@jobs/{job['uuid']}/abort", headers=app.auth(), status=204)


def test_delete_finished_job(app):
    job = app.submit({"action": "dummy"})
    app.wait_for(job["uuid"], "completed")
    app.delete(f"/@jobs/{job['uuid']}", headers=app.auth(), status=204)
    app.get(f"/@jobs/{job['uuid']}", headers=app.auth(), status=404)
    app.delete(f"/@jobs/{job['uuid']}", headers=app.auth(), status=404)


def test_delete_running_job_is_409(app):
    job = app.submit({"action": "dummy", "sleep": 30, "steps": 30})
    app.wait_for(job["uuid"], "running")
    res = app.delete(f"/@jobs/{job['uuid']}", headers=app.auth(), status=409)
    assert "abort it first" in res.json["error"]["message"]
    app.post(f"/@jobs/{job['uuid']}/abort", headers=app.auth(), status=204)
    app.wait_for(job["uuid"], "aborted")
    app.delete(f"/@jobs/{job['uuid']}", headers=app.auth(), status=204)


def test_job_actions_lists_schemas(app):
    actions = {a["name"]: a for a in app.get("/@job-actions", headers=app.auth()).json}
    assert {"dummy", "prune", "echo"} <= set(actions)
    dummy = actions["dummy"]["params"]
    assert dummy["type"] == "object"
    assert dummy["properties"]["steps"] == {
        "type": "integer",
        "minimum": 0,
        "maximum": 1_000_000,
        "default": 1,
        "description": "How many steps to report; abort is checked between steps. "
        "0: report nothing (a job that only sleeps, or a no-op).",
    }
    # alice may submit echo (Add Jobs) but not dummy (Manage Site)
    names = {a["name"] for a in app.get("/@job-actions", headers=app.auth("alice")).json}
    assert "echo" in names
    assert "dummy" not in names


def test_idempotency_key_returns_the_first_job(app):
    headers = {**app.auth(), "Idempotency-Key": "abc-123"}
    first = app.post_json("/@jobs", {"params": {"action": "dummy"}}, headers=headers, status=201)
    again = app.post_json("/@jobs", {"params": {"action": "dummy"}}, headers=headers, status=200)
    assert again.json["uuid"] == first.json["uuid"]
    assert len(app.get("/@jobs", headers=app.auth()).json) == 1
    # The key is per user: alice's identical key makes her own job.
    alice = {**app.auth("alice"), "Idempotency-Key": "abc-123"}
    other = app.post_json(
        "/@jobs", {"params": {"action": "echo", "message": "x"}}, headers=alice, status=201
    )
    assert other.json["uuid"] != first.json["uuid"]


def test_job_survives_api_restart(app, make_app):
    job = app.submit({"action": "dummy", "sleep": 0.5})
    restarted = make_app()
    assert restarted.wait_for(job["uuid"], "completed")["uuid"] == job["uuid"]


def test_job_past_its_time_limit_fails(app):
    job = app.submit({"action": "stubborn"})
    failed = app.wait_for(job["uuid"], "failed", timeout=20)
    assert failed["error"]["type"] == "TimeLimitExceeded"
    assert failed["finished"] is not None
