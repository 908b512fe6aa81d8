"""The errors clients can cause, and what the service answers: always the same JSON shape."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from nick_jobs import main
from tests.conftest import Client, base_settings, reset_database


def assert_error(res, status: int, type_: str | None = None) -> dict:
    """``res`` is ``{"error": {"type": str, "message": str, ...}}`` with ``status``."""
    assert res.status_int == status, res.body
    assert res.content_type == "application/json"
    body = json.loads(res.body)
    assert isinstance(body, dict)
    assert set(body) == {"error"}
    error = body["error"]
    assert isinstance(error, dict)
    assert isinstance(error.get("type"), str)
    assert error["type"]
    assert isinstance(error.get("message"), str)
    assert error["message"]
    if type_ is not None:
        assert error["type"] == type_
    return error


def jobs(app) -> list[dict]:
    return app.get("/@jobs", headers=app.auth("admin")).json


def post_raw(app, body: str | bytes, content_type: str = "application/json", **kw):
    kw.setdefault("expect_errors", True)
    return app.post("/@jobs", body, content_type=content_type, headers=app.auth(), **kw)


# --- the body of POST /@jobs --------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        '{"params": {"action": "dummy"}',
        "{'params': {}}",
        b"\xff\xfe\x00",
        "",
    ],
)
def test_body_that_is_not_json_is_400(app, body):
    assert_error(post_raw(app, body), 400, "Invalid JSON")
    assert jobs(app) == []


# An array is a bulk submit (tests/jobs/test_bulk_submit.py).
@pytest.mark.parametrize("body", ['"dummy"', "42", "null"])
def test_json_that_is_not_an_object_or_array_is_400(app, body):
    assert_error(post_raw(app, body), 400, "Invalid JSON")
    assert jobs(app) == []


def test_json_nested_too_deeply_is_400(app):
    depth = 100_000
    assert_error(post_raw(app, "[" * depth + "]" * depth), 400, "Invalid JSON")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_wrong_content_type_is_415(app, content_type):
    body = json.dumps({"params": {"action": "dummy"}})
    assert_error(post_raw(app, body, content_type), 415, "Unsupported media type")
    assert jobs(app) == []


def test_json_with_a_charset_is_accepted(app):
    body = json.dumps({"params": {"action": "echo", "message": "héllo"}}).encode()
    res = post_raw(app, body, "application/json; charset=utf-8")
    assert res.status_int == 201, res.body
    assert res.json["params"]["message"] == "héllo"


@pytest.fixture
def small_body_app(backend, make_app):
    reset_database(backend.engine)
    return make_app(**{"nick_jobs.max_body_bytes": "200"})


def test_body_over_the_limit_is_413(small_body_app):
    app = small_body_app
    fits = json.dumps({"params": {"action": "echo", "message": "x"}})
    assert len(fits) <= 200
    assert post_raw(app, fits).status_int == 201
    too_big = json.dumps({"params": {"action": "echo", "message": "x" * 300}})
    error = assert_error(post_raw(app, too_big), 413, "Request too large")
    assert "200" in error["message"]
    assert len(jobs(app)) == 1


def test_unknown_action_is_400_with_fields(app):
    res = post_raw(app, json.dumps({"params": {"action": "no-such-action"}}))
    error = assert_error(res, 400, "Validation error")
    assert list(error["fields"]) == ["params"]
    assert "no-such-action" in error["fields"]["params"]["action"][0]
    assert jobs(app) == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"steps": -1}, "steps"),
        ({"steps": "x"}, "steps"),
        ({"steps": 2_000_000}, "steps"),
        ({"sleep": -1}, "sleep"),
        ({"fail": ""}, "fail"),
        ({"result": [1, 2]}, "result"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_invalid_params_are_400_with_fields(app, params, field):
    res = post_raw(app, json.dumps({"params": {"action": "dummy", **params}}))
    error = assert_error(res, 400, "Validation error")
    assert list(error["fields"]) == ["params"]
    assert list(error["fields"]["params"]) == [field]
    messages = error["fields"]["params"][field]
    assert messages
    assert all(isinstance(m, str) for m in messages)
    assert jobs(app) == []


def test_action_params_are_checked_for_any_user(app):
    res = app.post_json(
        "/@jobs", {"params": {"action": "echo"}}, headers=app.auth("alice"), status=400
    )
    error = assert_error(res, 400, "Validation error")
    assert "message" in error["fields"]["params"]


@pytest.mark.parametrize(
    "field",
    ["uuid", "status", "actor", "result", "created", "started", "finished", "error", "attempt"],
)
def test_client_cannot_set_server_fields(app, field):
    body = {"params": {"action": "echo", "message": "hi"}, field: "admin"}
    res = app.post_json("/@jobs", body, headers=app.auth("alice"), expect_errors=True)
    error = assert_error(res, 400, "Validation error")
    assert list(error["fields"]) == [field]
    assert jobs(app) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "params"),
        ({"title": "no params"}, "params"),
        ({"params": None}, "params"),
        ({"params": "dummy"}, "params"),
        ({"params": {}}, "params"),
        ({"params": {"action": ""}}, "params"),
        ({"params": {"action": 42}}, "params"),
        ({"params": {"action": "dummy"}, "title": 5}, "title"),
        ({"params": {"action": "dummy"}, "title": "t" * 501}, "title"),
    ],
)
def test_missing_or_malformed_params_are_400(app, body, field):
    res = app.post_json("/@jobs", body, headers=app.auth(), expect_errors=True)
    error = assert_error(res, 400, "Validation error")
    assert field in error["fields"]
    assert jobs(app) == []


def test_long_idempotency_key_is_400(app):
    headers = {**app.auth(), "Idempotency-Key": "k" * 201}
    res = app.post_json("/@jobs", {"params": {"action": "dummy"}}, headers=headers, status=400)
    assert_error(res, 400, "Invalid header")
    assert jobs(app) == []


# --- methods and paths ----------------------------------------------------------------------


def test_wrong_method_is_405(app):
    job = app.submit({"action": "echo", "message": "x"})
    url = f"/@jobs/{job['uuid']}"
    headers = app.auth()
    container, job_methods = "GET, HEAD, POST", "DELETE, GET, HEAD"
    for res, allow in (
        (app.put_json("/@jobs", {"params": {}}, headers=headers, status=405), container),
        (app.delete("/@jobs", headers=headers, status=405), container),
        (app.patch_json(url, {"title": "renamed"}, headers=headers, status=405), job_methods),
        (app.put_json(url, {"title": "renamed"}, headers=headers, status=405), job_methods),
        (app.post_json(url, {"params": {}}, headers=headers, status=405), job_methods),
        (app.get(f"{url}/abort", headers=headers, status=405), "POST"),
        (app.get(f"{url}/retry", headers=headers, status=405), "POST"),
        (app.delete(f"{url}/abort", headers=headers, status=405), "POST"),
        (app.post("/@job-actions", headers=headers, status=405), "GET, HEAD"),
        (app.delete("/@scheduled-jobs", headers=headers, status=405), "GET, HEAD, POST"),
        (app.get("/@login", status=405), "POST"),
        (app.get("/@logout", status=405), "POST"),
    ):
        assert_error(res, 405, "Method not allowed")
        # RFC 9110: a 405 lists the methods the resource takes.
        assert res.headers["Allow"] == allow, res.request.path
    # Nothing was changed by any of them.
    assert app.get(url, headers=headers).json["title"] == job["title"]
    assert [j["uuid"] for j in jobs(app)] == [job["uuid"]]


@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/@jobs/not-a-uuid",
        "/@jobs/00000000-0000-0000-0000-000000000000",
        "/@jobs/00000000-0000-0000-0000-000000000000/abort",
        "/@jobsx",
        "/@jobs/@jobs",
        "/static/app.js",
    ],
)
def test_unknown_path_is_404(app, path):
    assert_error(app.get(path, headers=app.auth(), status=404), 404, "Not found")


def test_unknown_view_on_a_job_is_404(app):
    job = app.submit({"action": "echo", "message": "x"})
    res = app.get(f"/@jobs/{job['uuid']}/nope", headers=app.auth(), status=404)
    assert_error(res, 404, "Not found")


def test_unknown_path_without_a_token_is_a_json_404(app):
    assert_error(app.get("/nope", status=404), 404, "Not found")


def test_every_error_has_the_same_shape(app):
    """A sweep over one request of each kind of error, checked against the one shape."""
    job = app.submit({"action": "dummy"})
    app.wait_for(job["uuid"], "completed")
    url = f"/@jobs/{job['uuid']}"
    admin, alice = app.auth("admin"), app.auth("alice")
    json_type = "application/json"
    cases = [
        (400, app.post("/@jobs", "x", content_type="application/json", headers=admin, status=400)),
        (400, app.get("/@jobs?status=bogus", headers=admin, status=400)),
        (400, app.get(f"{url}/history?bogus=1", headers=admin, status=400)),
        (400, app.get("/@jobs?q=%ff%fe", headers=admin, status=400)),
        (400, app.post("/@jobs", b'{"x": NaN}', content_type=json_type, headers=admin, status=400)),
        (404, app.get("/@jobs/%ff%fe", status=404)),
        (404, app.get("/@jobs/stream/stream", headers=admin, status=404)),
        (400, app.post_json("/@login", {}, status=400)),
        (401, app.post_json("/@login", {"login": "alice", "password": "x"}, status=401)),
        (401, app.get("/@jobs", status=401)),
        (401, app.post("/@login-renew", status=401)),
        (403, app.post_json("/@jobs", {"params": {"action": "dummy"}}, headers=alice, status=403)),
        (404, app.get(url, headers=alice, status=404)),
        (404, app.get("/nope", status=404)),
        (405, app.put("/@jobs", headers=admin, status=405)),
        (409, app.post(f"{url}/abort", headers=admin, status=409)),
        (415, app.post("/@jobs", "{}", content_type="text/plain", headers=admin, status=415)),
    ]
    for status, res in cases:
        assert_error(res, status)


# --- an unreachable database ------------------------------------------------------------------


@pytest.fixture
def app_without_database():
    # Nothing listens on port 1: every connection is refused at once. No worker threads:
    # they would need the database at start-up to resend waiting jobs.
    settings = base_settings(
        **{
            "sqlalchemy.url": "postgresql+psycopg://postgres@127.0.0.1:1/nope",
            "nick_jobs.broker_url": "stub://",
            "nick_jobs.embedded_worker_threads": "0",
        }
    )
    wsgi = main({}, **settings)
    yield Client(wsgi, extra_environ={"HTTP_HOST": "localhost:8080"})
    wsgi.registry["nick_jobs.queue"].stop_embedded_worker()
    wsgi.registry["nick_jobs.engine"].dispose()


def test_database_down_is_a_fast_503(app_without_database):
    app = app_without_database
    requests = [
        lambda: app.get("/@jobs", headers=app.auth("alice"), expect_errors=True),
        # A job's GET, which goes straight to its view, answers through the same views.
        lambda: app.get(f"/@jobs/{uuid.uuid4()}", headers=app.auth("alice"), expect_errors=True),
        lambda: app.post_json(
            "/@jobs",
            {"params": {"action": "echo", "message": "x"}},
            headers=app.auth("alice"),
            expect_errors=True,
        ),
        lambda: app.get("/@job-actions", headers=app.auth("alice"), expect_errors=True),
        lambda: app.post_json(
            "/@login", {"login": "alice", "password": "alice-password"}, expect_errors=True
        ),
    ]
    for request in requests:
        started = time.monotonic()
        res = request()
        elapsed = time.monotonic() - started
        assert_error(res, 503, "Service unavailable")
        assert res.headers["Retry-After"].isdigit()
        assert elapsed < 10, f"took {elapsed:.1f}s"  # answered, not hung on the database
