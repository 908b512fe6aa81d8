"""``POST /@jobs/{uuid}/restart?follow=true``: the restart answers with the new job's
stream, as a submit with ``?follow=true`` does; read over real HTTP on every backend."""

from __future__ import annotations

from tests.conftest import reset_database
from tests.streams.test_streams import EventStream, bearer, messages, serving


def test_restart_with_follow_answers_with_the_new_jobs_stream(app):
    old = app.submit({"action": "dummy", "steps": 2})
    app.wait_for(old["uuid"], "completed")
    with serving(app) as address:
        stream = EventStream(
            address, f"/@jobs/{old['uuid']}/restart?follow=true", bearer(app), method="POST"
        )
        assert stream.status == 201
        location = stream.response.getheader("Location")
        assert stream.response.getheader("Content-Type") == "text/event-stream; charset=utf-8"
        events = stream.until_close()
    assert not location.endswith(old["uuid"])
    first = events[0]
    assert first["event"] == "status"
    assert first["data"]["@id"] == location
    assert first["data"]["parent"] == old["uuid"]
    assert first["data"]["attempt"] == 1
    statuses = [e["data"] for e in events if e["event"] == "status"]
    assert statuses[-1]["status"] == "completed"
    assert events[-1] == {"event": "close", "data": {"reason": "finished", "reconnect": False}}
    # Every line of the new job, however fast it ran.
    assert messages(events) == ["step 1 of 2 done", "step 2 of 2 done"]
    restarts = app.get(f"/@jobs?parent={old['uuid']}", headers=app.auth()).json
    assert [job["uuid"] for job in restarts] == [first["data"]["uuid"]]
    assert location.endswith("/@jobs/" + first["data"]["uuid"])


def test_restart_follow_takes_true_or_false(app_without_worker):
    app = app_without_worker
    old = app.submit({"action": "dummy"})
    app.post(f"/@jobs/{old['uuid']}/abort", headers=app.auth(), status=204)
    url = f"/@jobs/{old['uuid']}/restart"
    error = app.post(f"{url}?follow=maybe", headers=app.auth(), status=400).json
    assert error["error"] == {"type": "Bad request", "message": "follow takes true or false."}
    # follow=false, or none, is the plain restart: the new job as JSON.
    for target in (f"{url}?follow=false", url):
        res = app.post(target, headers=app.auth(), status=201)
        assert res.content_type == "application/json"
        assert res.json["parent"] == old["uuid"]
        assert res.headers["Location"] == res.json["@id"]
    assert len(app.get(f"/@jobs?parent={old['uuid']}", headers=app.auth()).json) == 2


def test_a_refused_restart_follow_makes_no_job(make_app, backend):
    reset_database(backend.engine)
    app = make_app(**{"nick_jobs.stream_max_per_user": "0"})
    old = app.submit({"action": "dummy"})
    app.wait_for(old["uuid"], "completed")
    url = f"/@jobs/{old['uuid']}/restart?follow=true"
    response = app.post(url, headers=app.auth(), status=503)
    assert response.headers["Retry-After"] == "5"
    assert response.json["error"]["type"] == "Too many streams"
    assert [job["uuid"] for job in app.get("/@jobs", headers=app.auth()).json] == [old["uuid"]]


def test_a_restart_follow_of_an_unfinished_job_is_409_and_gives_its_slot_back(
    app_without_worker,
):
    app = app_without_worker
    old = app.submit({"action": "dummy"})
    res = app.post(f"/@jobs/{old['uuid']}/restart?follow=true", headers=app.auth(), status=409)
    assert res.json["error"]["type"] == "Invalid state"
    assert app.app.registry["nick_jobs.stream_limits"].open == 0
