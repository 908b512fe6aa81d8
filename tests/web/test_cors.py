"""Cross-origin requests (nick_jobs.web.cors), at the HTTP level, on every endpoint.

The endpoints are read from the views the application registered, so an endpoint added
later is covered without a change here; one on a new resource type fails the tests until
``PATHS`` says where that type is. Streams are answered without reading their body
(``Request.call_application``), which for the all-jobs stream never ends.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from pyramid.interfaces import IException
from webob import Request

from nick_jobs.settings import ConfigurationError, apply_environment, parse
from nick_jobs.web import cors
from nick_jobs.web.resources import (
    ActionContainer,
    ActionResource,
    JobContainer,
    JobResource,
    Root,
    ScheduledJobContainer,
    ScheduledJobResource,
)
from tests.conftest import Client, base_settings

on_sqlite = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

ALLOWED = "http://localhost:3000"
ALSO_ALLOWED = "https://cms.example.org:8443"
REFUSED = "https://elsewhere.example.net"


@pytest.fixture
def api(backend, make_app) -> Client:
    from tests.conftest import reset_database

    reset_database(backend.engine)
    return make_app(
        **{
            "nick_jobs.cors_origins": f"{ALLOWED}\n{ALSO_ALLOWED}",
            # Jobs stay as they were created: every job URL below names a job that exists.
            "nick_jobs.embedded_worker_threads": "0",
        }
    )


# Where each resource type of the API is; a view on a type missing here fails the tests
# below, rather than going unchecked.
PATHS: dict[type, str] = {
    Root: "",
    JobContainer: "/@jobs",
    JobResource: "/@jobs/{job}",
    ScheduledJobContainer: "/@scheduled-jobs",
    ScheduledJobResource: "/@scheduled-jobs/{scheduled}",
    ActionContainer: "/@job-actions",
    # A Python action (tests.actions_for_tests): it is there, and it can be neither
    # replaced nor deleted, so every request to it leaves it as it was.
    ActionResource: "/@job-actions/echo",
}


def is_exception_context(context: Any) -> bool:
    """Whether a view's context is an exception (a class, or an interface of exceptions
    such as ``IExceptionResponse``): an exception view's, not an endpoint's."""
    if isinstance(context, type) and issubclass(context, BaseException):
        return True
    is_or_extends = getattr(context, "isOrExtends", None)
    return is_or_extends is not None and is_or_extends(IException)


def endpoints(client: Client) -> list[tuple[str, type, str]]:
    """(method, context type, view name) of every API view the application registered.

    A view on a context that is neither an exception nor one of :data:`PATHS` fails the
    test: an endpoint of a new resource type must be given its path here, not skipped.
    """
    found = set()
    unmapped = set()
    for item in client.app.registry.introspector.get_category("views"):
        view = item["introspectable"]
        if view["route_name"] is not None or view["exception_only"]:
            continue
        context, methods = view["context"], view["request_methods"]
        if is_exception_context(context):
            continue
        context = context or Root
        if context not in PATHS:
            unmapped.add((context, view["name"]))
            continue
        for method in (methods,) if isinstance(methods, str) else methods or ("GET",):
            found.add((method, context, view["name"]))
    assert not unmapped, f"views on resource types test_cors.PATHS has no path for: {unmapped}"
    return sorted(found, key=lambda e: (e[1].__name__, e[2], e[0]))


def path_of(context: type, name: str, job: str, scheduled: str) -> str:
    base = PATHS[context].format(job=job, scheduled=scheduled)
    return f"{base}/{name}" if name else base or "/"


ACTION_ENDPOINTS = {
    ("GET", "/@job-actions"),
    ("GET", "/@job-actions/echo"),
    ("PUT", "/@job-actions/echo"),
    ("DELETE", "/@job-actions/echo"),
    ("GET", "/@job-actions/echo/versions"),
}


def test_a_view_on_a_resource_type_without_a_path_fails_the_endpoint_list() -> None:
    class HostResource:
        pass

    def view(context: Any) -> dict[str, Any]:
        return {
            "introspectable": {
                "route_name": None,
                "exception_only": False,
                "context": context,
                "request_methods": "GET",
                "name": "",
            }
        }

    views = [view(JobContainer), view(HostResource), view(ValueError)]
    introspector = SimpleNamespace(get_category=lambda category: views)
    registry = SimpleNamespace(introspector=introspector)
    client = SimpleNamespace(app=SimpleNamespace(registry=registry))
    with pytest.raises(AssertionError, match="HostResource"):
        endpoints(client)
    # An exception's view is no endpoint, and a known type's is listed.
    views.remove(view(HostResource))
    assert endpoints(client) == [("GET", JobContainer, "")]


def answer(client: Client, method: str, path: str, **headers: str) -> tuple[int, dict[str, str]]:
    """Status and headers of a request, without reading the body of a stream."""
    body = b"{}" if method in ("POST", "PUT", "PATCH") else b""
    request = Request.blank(
        path,
        method=method,
        headers={"Host": "localhost:8080", **headers},
        body=body,
        content_type="application/json" if body else None,
    )
    status, response_headers, app_iter = request.call_application(client.app)
    close = getattr(app_iter, "close", None)
    if close is not None:
        close()
    return int(status.split()[0]), dict(response_headers)


@pytest.fixture
def resources(api: Client) -> tuple[str, str]:
    job = api.submit({"action": "dummy", "steps": 1})["uuid"]
    api.post_json(
        "/@scheduled-jobs",
        {"id": "nightly", "action": "dummy", "params": {"steps": 1}, "schedule": "0 2 * * *"},
        headers=api.auth(),
        status=201,
    )
    return job, "nightly"


def expect_cors(headers: dict[str, str], origin: str) -> None:
    assert headers.get("Access-Control-Allow-Origin") == origin, headers
    exposed = {h.strip() for h in headers["Access-Control-Expose-Headers"].split(",")}
    assert exposed >= {"Location", "Link", "X-Total-Count", "Retry-After"}
    assert "Origin" in headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in headers  # bearer tokens, no cookies


@on_sqlite
def test_every_endpoint_answers_a_preflight_from_an_allowed_origin(api, resources) -> None:
    job, scheduled = resources
    seen = endpoints(api)
    assert len(seen) >= 30, seen  # the whole API, not a few views
    assert {(m, path_of(c, n, job, scheduled)) for m, c, n in seen} >= ACTION_ENDPOINTS
    for method, context, name in seen:
        path = path_of(context, name, job, scheduled)
        res = api.options(
            path,
            headers={
                "Origin": ALLOWED,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
                # The JS client's streams send Cache-Control: no-cache.
            },
            status=204,
        )
        assert res.headers["Access-Control-Allow-Origin"] == ALLOWED, path
        assert method in res.headers["Access-Control-Allow-Methods"].split(", "), (method, path)
        allowed_headers = {
            h.lower() for h in res.headers["Access-Control-Allow-Headers"].split(", ")
        }
        assert allowed_headers >= {
            "authorization",
            "content-type",
            "idempotency-key",
            "last-event-id",
        }
        assert int(res.headers["Access-Control-Max-Age"]) > 0
        assert "Origin" in res.headers["Vary"]
        assert res.body == b""


@on_sqlite
def test_every_endpoint_tells_an_allowed_origin_it_may_read_the_answer(api, resources) -> None:
    job, scheduled = resources
    statuses = {}
    # Reads before changes, so that most answers are the endpoint's own, not a 404 of a
    # job a DELETE has already taken; whatever the status, the headers are the same.
    order = {"GET": 0, "HEAD": 0, "POST": 1, "PATCH": 1, "PUT": 1, "DELETE": 2}
    for method, context, name in sorted(endpoints(api), key=lambda e: order[e[0]]):
        path = path_of(context, name, job, scheduled)
        status, headers = answer(api, method, path, Origin=ALSO_ALLOWED, **api.auth())
        assert status < 500, (method, path, status)
        expect_cors(headers, ALSO_ALLOWED)
        statuses[(method, path)] = status
    assert set(statuses) >= ACTION_ENDPOINTS
    # The actions' own answers, not a 404 of a wrong path: a Python action is read, and
    # refused as a change (409).
    assert statuses[("GET", "/@job-actions/echo")] == 200
    assert statuses[("GET", "/@job-actions/echo/versions")] == 200
    assert statuses[("DELETE", "/@job-actions/echo")] == 409
    # Successes and errors alike carried them.
    assert any(s < 400 for s in statuses.values())
    assert any(s >= 400 for s in statuses.values())


@on_sqlite
def test_errors_carry_the_cors_headers(api) -> None:
    res = api.get("/@jobs", headers={"Origin": ALLOWED}, status=401)
    expect_cors(res.headers, ALLOWED)
    assert res.json["error"]["type"] == "Unauthorized"
    res = api.get(
        f"/@jobs/{'0' * 8}-0000-0000-0000-{'0' * 12}",
        headers={"Origin": ALLOWED, **api.auth()},
        status=404,
    )
    expect_cors(res.headers, ALLOWED)
    res = api.post(
        "/@jobs",
        "{",
        headers={"Origin": ALLOWED, "Content-Type": "application/json", **api.auth()},
        status=400,
    )
    expect_cors(res.headers, ALLOWED)


@on_sqlite
def test_a_page_reads_where_its_new_job_is(api) -> None:
    res = api.post_json(
        "/@jobs",
        {"params": {"action": "dummy", "steps": 1}},
        headers={"Origin": ALLOWED, **api.auth()},
        status=201,
    )
    expect_cors(res.headers, ALLOWED)
    assert res.headers["Location"] == res.json["@id"]
    res = api.get("/@jobs?b_size=1&count=true", headers={"Origin": ALLOWED, **api.auth()})
    expect_cors(res.headers, ALLOWED)
    assert res.headers["X-Total-Count"] == "1"


@on_sqlite
def test_a_stream_to_an_allowed_origin_carries_the_headers(api) -> None:
    job = api.submit({"action": "dummy", "steps": 1})["uuid"]
    for path in ("/@jobs/stream", f"/@jobs/{job}/stream", f"/@jobs/{job}/log?follow=true"):
        status, headers = answer(api, "GET", path, Origin=ALLOWED, **api.auth())
        assert status == 200, path
        assert headers["Content-Type"].startswith("text/event-stream")
        expect_cors(headers, ALLOWED)


@on_sqlite
def test_a_refused_origin_gets_no_cors_headers_and_its_preflight_a_403(api) -> None:
    res = api.options(
        "/@jobs",
        headers={"Origin": REFUSED, "Access-Control-Request-Method": "POST"},
        status=403,
    )
    assert res.json["error"]["type"] == "Forbidden"
    assert REFUSED in res.json["error"]["message"]
    assert "nick_jobs.cors_origins" in res.json["error"]["message"]
    assert "Access-Control-Allow-Origin" not in res.headers
    # Its actual requests are answered as to no page at all: the browser keeps the answer.
    res = api.get("/@jobs", headers={"Origin": REFUSED, **api.auth()})
    assert "Access-Control-Allow-Origin" not in res.headers
    assert "Access-Control-Expose-Headers" not in res.headers
    assert "Origin" in res.headers["Vary"]


@on_sqlite
def test_an_origin_matches_whole_and_without_regard_to_case(api) -> None:
    for origin in ("http://localhost:30001", "http://localhost", "https://localhost:3000", "null"):
        api.options(
            "/@jobs",
            headers={"Origin": origin, "Access-Control-Request-Method": "GET"},
            status=403,
        )
    res = api.options(
        "/@jobs",
        headers={"Origin": "HTTPS://CMS.Example.org:8443", "Access-Control-Request-Method": "GET"},
        status=204,
    )
    # The page's own spelling is what its browser compares with.
    assert res.headers["Access-Control-Allow-Origin"] == "HTTPS://CMS.Example.org:8443"


@on_sqlite
def test_a_star_allows_any_origin_but_null(make_app) -> None:
    app = make_app(**{"nick_jobs.cors_origins": "*"})
    for origin in ("https://a.example", "http://127.0.0.1:5173"):
        res = app.options(
            "/@jobs", headers={"Origin": origin, "Access-Control-Request-Method": "GET"}, status=204
        )
        assert res.headers["Access-Control-Allow-Origin"] == origin
        res = app.get("/@jobs", headers={"Origin": origin}, status=401)
        assert res.headers["Access-Control-Allow-Origin"] == origin
    # Sandboxed frames and local files all say "null": no origin to trust by name.
    app.options(
        "/@jobs", headers={"Origin": "null", "Access-Control-Request-Method": "GET"}, status=403
    )


@on_sqlite
def test_a_request_without_origin_and_a_plain_options_are_as_before(api) -> None:
    res = api.get("/@jobs", headers=api.auth())
    assert "Access-Control-Allow-Origin" not in res.headers
    # OPTIONS that is not a preflight is no view of the API's: 405 with what is allowed.
    res = api.options("/@jobs", headers={"Origin": ALLOWED}, status=405)
    assert res.json["error"]["type"] == "Method not allowed"
    expect_cors(res.headers, ALLOWED)


@on_sqlite
def test_without_the_setting_nothing_changes(make_app) -> None:
    app = make_app()
    res = app.options(
        "/@jobs", headers={"Origin": ALLOWED, "Access-Control-Request-Method": "GET"}, status=405
    )
    assert not any(h.startswith("Access-Control-") for h in res.headers)
    res = app.get("/@jobs", headers={"Origin": ALLOWED}, status=401)
    assert not any(h.startswith("Access-Control-") for h in res.headers)
    assert "Vary" not in res.headers
    names = [name for name, _ in app.app.registry.queryUtility(_tweens_interface()).implicit()]
    assert "nick_jobs.web.cors.cors_tween_factory" not in names


def _tweens_interface() -> Any:
    from pyramid.interfaces import ITweens

    return ITweens


def settings_with(origins: str) -> dict[str, str]:
    return base_settings(**{"sqlalchemy.url": "sqlite://", "nick_jobs.cors_origins": origins})


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("", set()),
        ("http://localhost:3000", {"http://localhost:3000"}),
        (
            "https://CMS.example.org http://[::1]:8080",
            {"https://cms.example.org", "http://[::1]:8080"},
        ),
        ("https://a.example,\n https://b.example", {"https://a.example", "https://b.example"}),
        ("*", {"*"}),
    ],
)
def test_the_cors_origins_setting(given: str, kept: set[str]) -> None:
    assert parse(settings_with(given)).cors_origins == kept


@pytest.mark.parametrize(
    "given",
    [
        "https://cms.example.org/",
        "https://cms.example.org/app",
        "ftp://x.example",
        "cms.example.org",
        "https://u@x.example",
        "https://x.example?a=1",
    ],
)
def test_an_origin_that_no_browser_sends_is_refused_at_start_up(given: str) -> None:
    with pytest.raises(ConfigurationError, match=r"nick_jobs\.cors_origins"):
        parse(settings_with(given))


def test_the_environment_sets_the_cors_origins() -> None:
    merged = apply_environment(
        settings_with(""), {"NICK_JOBS_CORS_ORIGINS": "https://a.example https://b.example"}
    )
    assert parse(merged).cors_origins == {"https://a.example", "https://b.example"}


def test_allows() -> None:
    origins = frozenset({"https://a.example"})
    assert cors.allows(origins, "https://a.example")
    assert cors.allows(origins, "https://A.example")
    assert not cors.allows(origins, "https://a.example:443")
    assert not cors.allows(frozenset({"*"}), "null")
