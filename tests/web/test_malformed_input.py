"""Malformed input: a 400 (or a 404 for a path that names nothing), never a 500, and every
response strict JSON.

* The body is strict JSON: no ``NaN``/``Infinity``, no number beyond a double, no lone
  surrogate or NUL in a string, a charset Python reads as text.
* The URL is UTF-8: a path that is not names nothing (404), a query string that is not
  is a 400, answered before any tween, security policy or view decodes it.
* Typed fields take only their JSON type; every endpoint refuses an unknown query
  parameter the same way and an unknown sub-path with a 404.

The walks run on the WebTest app of every backend, and the URL walk again through a
real waitress server, whose own handling of the raw request line is what a client meets.
"""

from __future__ import annotations

import base64
import json
import math
import socket
from typing import Any

import pytest
import sqlalchemy as sa
import webtest
from pyramid.config import Configurator

from nick_jobs import includeme, main
from nick_jobs.db import get_engine, migrations
from nick_jobs.web.body import NotStrictJSON, loads
from nick_jobs.web.resources import Root
from nick_jobs.web.strict import dumps, url_problem
from tests.conftest import Client, base_settings, reset_database
from tests.streams.test_streams import serving
from tests.web.test_http_errors import assert_error


def strict_json(body: bytes) -> Any:
    """``body`` parsed as strict JSON: NaN and Infinity, which Python takes, fail."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"not strict JSON: {name} in {body[:200]!r}")

    return json.loads(body.decode("utf-8"), parse_constant=refuse)


def assert_strict_error(res, status: int) -> dict:
    strict_json(res.body)
    return assert_error(res, status)


# --- the body parser ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"x": NaN}', "NaN"),
        ('{"x": Infinity}', "Infinity"),
        ('{"x": -Infinity}', "-Infinity"),
        ('{"x": [1, {"y": NaN}]}', "NaN"),
        ('{"x": 1e400}', "beyond the range"),
        ('{"x": -1.5e999}', "beyond the range"),
        ('{"x": "\\ud800"}', "surrogate"),
        ('{"x": "a\\udfffb"}', "surrogate"),
        ('{"\\ud800": 1}', "surrogate"),
        ('{"x": [[{"y": ["\\uDC00"]}]]}', "surrogate"),
        ('{"x": "\\ude00\\ud83d"}', "surrogate"),  # a pair in the wrong order is two lone ones
        ('{"x": "a\\u0000b"}', "NUL"),
        ('{"x\\u0000": 1}', "NUL"),
        # What a charset like utf-7 can give: the surrogate itself, not its escape.
        ('{"x": "\ud800"}', "surrogate"),
    ],
)
def test_parser_refuses_what_is_not_strict_json(text, reason):
    with pytest.raises(NotStrictJSON, match=reason):
        loads(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"x": "\\ud83d\\ude00"}', {"x": "\U0001f600"}),  # a surrogate pair: one character
        ('{"x": "\\\\ud800"}', {"x": "\\ud800"}),  # an escaped backslash, then text
        ('{"x": "\\\\u0000"}', {"x": "\\u0000"}),
        ('{"x": 1.7976931348623157e308}', {"x": 1.7976931348623157e308}),
        ('{"x": 123456789012345678901234567890}', {"x": 123456789012345678901234567890}),
        ('{"x": "NaN", "y": "Infinity"}', {"x": "NaN", "y": "Infinity"}),
    ],
)
def test_parser_takes_strict_json(text, value):
    assert loads(text) == value


def test_output_never_holds_nan_or_infinity():
    value = {"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": {"d": math.nan}, "e": "NaN"}
    assert strict_json(dumps(value).encode()) == {
        "a": None,
        "b": [None, None, 1.5],
        "c": {"d": None},
        "e": "NaN",
    }
    assert dumps({"a": 1.5}) == json.dumps({"a": 1.5})


@pytest.mark.parametrize(
    ("environ", "status"),
    [
        ({"PATH_INFO": "/@jobs/\xff\xfe"}, 404),
        ({"PATH_INFO": "/@jobs/\xed\xa0\x80"}, 404),  # an encoded surrogate is not UTF-8
        ({"PATH_INFO": "/@jobs", "QUERY_STRING": "q=%ff%fe"}, 400),
        ({"PATH_INFO": "/@jobs", "QUERY_STRING": "%ff=1"}, 400),
        ({"PATH_INFO": "/@jobs", "QUERY_STRING": "q=\xff"}, 400),
        ({"PATH_INFO": "/@jobs", "QUERY_STRING": "q=%ED%A0%80"}, 400),
        ({"PATH_INFO": "/@jobs", "QUERY_STRING": "q=%00"}, 400),
        ({"PATH_INFO": "/@jobs", "QUERY_STRING": "a=1&%00=2"}, 400),
    ],
)
def test_url_problems(environ, status):
    problem = url_problem(environ)
    assert problem is not None
    assert problem[0] == status


@pytest.mark.parametrize(
    "environ",
    [
        {"PATH_INFO": "/@jobs", "QUERY_STRING": "q=%C3%A9t%C3%A9&status=failed"},
        {"PATH_INFO": "/@jobs", "QUERY_STRING": "q=\xc3\xa9"},  # raw UTF-8 bytes
        {"PATH_INFO": "/@jobs/\xc3\xa9"},
        {"PATH_INFO": "/@jobs", "QUERY_STRING": "q=100%25&x=%zz&y=%"},
        {"PATH_INFO": "/@jobs", "QUERY_STRING": ""},
    ],
)
def test_url_without_problems(environ):
    assert url_problem(environ) is None


# --- bodies over HTTP -----------------------------------------------------------------------

NOT_STRICT = {
    "NaN": "NaN",
    "Infinity": "Infinity",
    "-Infinity": "-Infinity",
    "1e400": "1e400",
}


def raw_post(app: Client, path: str, body: str | bytes, content_type: str = "application/json"):
    data = body.encode() if isinstance(body, str) else body
    return app.post(path, data, content_type=content_type, headers=app.auth(), expect_errors=True)


def assert_listings_strict(app: Client) -> None:
    for path in ("/@jobs", "/@scheduled-jobs"):
        strict_json(app.get(path, headers=app.auth()).body)


@pytest.mark.parametrize("number", list(NOT_STRICT.values()))
def test_not_strict_numbers_in_any_body_are_400(app, number):
    bodies = [
        ("/@jobs", f'{{"params": {{"action": "echo", "message": "x", "n": {number}}}}}'),
        ("/@jobs", f'{{"params": {{"action": "dummy", "result": {{"x": {number}}}}}}}'),
        ("/@jobs", f'{{"params": {{"action": "dummy", "sleep": {number}}}}}'),
        ("/@jobs", f'{{"title": {number}, "params": {{"action": "dummy"}}}}'),
        (
            "/@scheduled-jobs",
            f'{{"id": "nightly", "action": "dummy", "schedule": "0 3 * * *", '
            f'"params": {{"result": {{"x": {number}}}}}}}',
        ),
        ("/@stream-tickets", f'{{"stream": "/@jobs/stream", "x": {number}}}'),
    ]
    for path, body in bodies:
        error = assert_strict_error(raw_post(app, path, body), 400)
        assert error["type"] == "Invalid JSON", (path, body)
        assert number.lstrip("-") in error["message"] or "range" in error["message"]
    assert app.get("/@jobs", headers=app.auth()).json == []
    assert app.get("/@scheduled-jobs", headers=app.auth()).json == []
    assert_listings_strict(app)


def test_not_strict_number_in_a_patch_is_400(app):
    body = {"id": "nightly", "action": "dummy", "schedule": "0 3 * * *"}
    app.post_json("/@scheduled-jobs", body, headers=app.auth(), status=201)
    res = app.patch(
        "/@scheduled-jobs/nightly",
        b'{"params": {"result": {"x": NaN}}}',
        content_type="application/json",
        headers=app.auth(),
        expect_errors=True,
    )
    assert assert_strict_error(res, 400)["type"] == "Invalid JSON"
    assert app.get("/@scheduled-jobs/nightly", headers=app.auth()).json["params"] == {}


@pytest.mark.parametrize(
    "title",
    [
        "\\ud800",  # a lone high surrogate
        "\\udfff",  # a lone low surrogate
        "ok \\ud800 then text",
        "\\u0000",  # NUL: PostgreSQL stores it neither in text nor in jsonb
    ],
)
def test_lone_surrogates_and_nul_in_strings_are_400(app, title):
    bodies = [
        f'{{"title": "{title}", "params": {{"action": "dummy"}}}}',
        f'{{"params": {{"action": "echo", "message": "{title}"}}}}',
        f'{{"params": {{"action": "dummy", "result": {{"{title}": 1}}}}}}',
    ]
    for body in bodies:
        error = assert_strict_error(raw_post(app, "/@jobs", body), 400)
        assert error["type"] == "Invalid JSON"
    assert app.get("/@jobs", headers=app.auth()).json == []


def test_a_surrogate_pair_is_a_character(app):
    body = '{"title": "\\ud83d\\ude00", "params": {"action": "echo", "message": "x"}}'
    res = raw_post(app, "/@jobs", body)
    assert res.status_int == 201, res.body
    assert app.get(f"/@jobs/{res.json['uuid']}", headers=app.auth()).json["title"] == "\U0001f600"


@pytest.mark.parametrize("charset", ["nonexistent", "rot13", "base64", "hex", "zlib"])
def test_charset_that_is_not_a_text_encoding_is_400(app, charset):
    body = b'{"params": {"action": "dummy"}}'
    res = raw_post(app, "/@jobs", body, f"application/json; charset={charset}")
    assert assert_strict_error(res, 400)["type"] == "Unsupported charset"
    assert app.get("/@jobs", headers=app.auth()).json == []


def test_body_that_is_not_its_charset_is_400(app):
    res = raw_post(app, "/@jobs", b'{"title": "\xff"}', "application/json; charset=utf-8")
    assert assert_strict_error(res, 400)["type"] == "Invalid JSON"


def test_body_in_another_text_charset_is_read(app):
    body = '{"params": {"action": "echo", "message": "h\u00e9"}}'.encode("utf-16")
    res = raw_post(app, "/@jobs", body, "application/json; charset=utf-16")
    assert res.status_int == 201, res.body
    assert res.json["params"]["message"] == "h\u00e9"


# --- typed fields take their JSON type only --------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"steps": "3"}, "steps"),
        ({"steps": 1.5}, "steps"),
        ({"steps": 1.0}, "steps"),
        ({"steps": True}, "steps"),
        ({"sleep": "0.5"}, "sleep"),
        ({"sleep": True}, "sleep"),
        ({"result": "{}"}, "result"),
        ({"fail": 5}, "fail"),
    ],
)
def test_dummy_fields_take_their_json_type_only(app, params, field):
    res = app.post_json(
        "/@jobs", {"params": {"action": "dummy", **params}}, headers=app.auth(), status=400
    )
    error = assert_strict_error(res, 400)
    assert error["type"] == "Validation error"
    assert list(error["fields"]["params"]) == [field]
    assert app.get("/@jobs", headers=app.auth()).json == []


def test_prune_batch_size_takes_an_integer_only(app):
    for value in ("10", 10.5, True):
        params = {"action": "prune", "batch_size": value}
        res = app.post_json("/@jobs", {"params": params}, headers=app.auth(), status=400)
        assert list(assert_strict_error(res, 400)["fields"]["params"]) == ["batch_size"]


def test_typed_fields_take_their_json_values(app_without_worker):
    app = app_without_worker
    params = {"action": "dummy", "steps": 3, "sleep": 0.5, "result": {"ok": True}}
    job = app.submit(params)
    assert job["params"] == params
    assert app.submit({"action": "dummy", "sleep": 1})["params"]["sleep"] == 1


@pytest.mark.parametrize("enabled", ["yes", "true", 1, 0, None])
def test_scheduled_job_enabled_takes_a_boolean_only(app, enabled):
    body = {"id": "nightly", "action": "dummy", "schedule": "0 3 * * *", "enabled": enabled}
    res = app.post_json("/@scheduled-jobs", body, headers=app.auth(), status=400)
    assert list(assert_strict_error(res, 400)["fields"]) == ["enabled"]
    app.post_json("/@scheduled-jobs", {**body, "enabled": False}, headers=app.auth(), status=201)
    res = app.patch_json(
        "/@scheduled-jobs/nightly", {"enabled": "yes"}, headers=app.auth(), status=400
    )
    assert list(assert_strict_error(res, 400)["fields"]) == ["enabled"]
    assert app.get("/@scheduled-jobs/nightly", headers=app.auth()).json["enabled"] is False


# --- the walk over every endpoint -------------------------------------------------------------


def endpoints(job: str) -> list[tuple[str, str]]:
    """(method, path) of every endpoint nick-jobs serves; ``job`` is a finished job's uuid."""
    return [
        ("GET", "/@jobs"),
        ("POST", "/@jobs"),
        ("GET", f"/@jobs/{job}"),
        ("HEAD", f"/@jobs/{job}"),
        ("DELETE", f"/@jobs/{job}"),
        *(("POST", f"/@jobs/{job}/{name}") for name in ("abort", "retry", "stop", "resume")),
        ("POST", f"/@jobs/{job}/restart"),
        ("GET", f"/@jobs/{job}/log"),
        ("GET", f"/@jobs/{job}/history"),
        ("GET", f"/@jobs/{job}/stream"),
        ("GET", "/@jobs/stream"),
        ("POST", "/@stream-tickets"),
        ("GET", "/@job-actions"),
        ("GET", "/@scheduled-jobs"),
        ("POST", "/@scheduled-jobs"),
        ("GET", "/@scheduled-jobs/nightly"),
        ("PATCH", "/@scheduled-jobs/nightly"),
        ("DELETE", "/@scheduled-jobs/nightly"),
        ("GET", "/@scheduled-job-actions"),
        ("POST", "/@login"),
        ("POST", "/@login-renew"),
        ("POST", "/@logout"),
        ("GET", "/healthz"),
        ("GET", "/healthz/ready"),
        ("GET", "/metrics"),
    ]


# Query strings that are not UTF-8, or hold a NUL: each a 400 on any endpoint.
MALFORMED_QUERIES = [
    "q=%ff%fe",
    "%ff=1",
    "ticket=%ff",
    "q=%ED%A0%80",  # a surrogate, encoded: not UTF-8
    "q=%C0%AF",  # an overlong encoding of "/"
    "q=%00",
    "%00=1",
]
# Path segments that are not UTF-8: the path names nothing, a 404.
MALFORMED_SEGMENTS = ["%ff%fe", "%ED%A0%80", "%C0%AF", "%80"]
# Bodies for the endpoints that read one.
MALFORMED_BODIES: list[tuple[str, bytes]] = [
    ("application/json", b'{"x": NaN}'),
    ("application/json", b'{"x": Infinity}'),
    ("application/json", b'{"x": -Infinity}'),
    ("application/json", b'{"x": 1e400}'),
    ("application/json", b'{"x": "\\ud800"}'),
    ("application/json", b'{"x": "\\u0000"}'),
    ("application/json", b'{"x": "\xff\xfe"}'),
    ("application/json", b'{"x": "\xed\xa0\x80"}'),
    ("application/json; charset=nonexistent", b"{}"),
    ("application/json; charset=rot13", b"{}"),
    ("application/json; charset=base64", b"{}"),
    ("application/json; charset=utf-7", b'{"x": "+2AA-"}'),  # a lone surrogate, in UTF-7
]
BODY_ENDPOINTS = [
    ("POST", "/@jobs"),
    ("POST", "/@scheduled-jobs"),
    ("PATCH", "/@scheduled-jobs/nightly"),
    ("POST", "/@stream-tickets"),
    ("POST", "/@login"),
]


def with_query(path: str, query: str) -> str:
    return f"{path}?{query}"


def webtest_request(app: Client, method: str, path: str, query: str = "", **kw: Any):
    """A request whose path and query string go to the app byte for byte, as a server
    passes them on (latin-1 strings of the raw bytes, the path percent-decoded)."""
    from urllib.parse import unquote_to_bytes

    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query,
        "HTTP_HOST": "localhost:8080",
        **kw.pop("environ", {}),
    }
    request = webtest.TestRequest.blank("/", environ)
    request.environ.update(environ)
    for name, value in kw.pop("headers", {}).items():
        request.headers[name] = value
    body = kw.pop("body", None)
    if body is not None:
        request.body = body
        request.environ["CONTENT_TYPE"] = kw.pop("content_type", "application/json")
    return app.do_request(request, status=None, expect_errors=True)


@pytest.fixture
def walked(app):
    """The app with a finished job and a scheduled job to aim the walk at."""
    job = app.submit({"action": "dummy"})
    app.wait_for(job["uuid"], "completed")
    body = {"id": "nightly", "action": "dummy", "schedule": "0 3 * * *"}
    app.post_json("/@scheduled-jobs", body, headers=app.auth(), status=201)
    return app, job["uuid"]


def assert_unchanged(app: Client, job: str) -> None:
    """Nothing the walk sent was acted on."""
    jobs = app.get("/@jobs", headers=app.auth()).json
    assert [(j["uuid"], j["status"]) for j in jobs] == [(job, "completed")]
    assert app.get("/@scheduled-jobs/nightly", headers=app.auth()).json["enabled"] is True


def answered(res, method: str) -> dict | None:
    """The JSON error of ``res``; a HEAD's has no body to read."""
    assert res.status_int < 500, (res.request.method, res.request.url, res.body)
    if method == "HEAD":
        return None
    return assert_strict_error(res, res.status_int)


def test_walk_malformed_query_strings_over_every_endpoint(walked):
    app, job = walked
    for method, path in endpoints(job):
        for query in MALFORMED_QUERIES:
            res = webtest_request(app, method, path, query, headers=app.auth())
            assert res.status_int == 400, (method, path, query, res.body)
            error = answered(res, method)
            assert error is None or error["type"] == "Bad request"
        # Without a token as well: the stream's ticket is read before any permission.
        res = webtest_request(app, method, path, "ticket=%ff")
        assert res.status_int == 400, (method, path, res.body)
        answered(res, method)
    assert_unchanged(app, job)


def test_walk_malformed_paths_over_every_endpoint(walked):
    app, job = walked
    for method, path in endpoints(job):
        for segment in MALFORMED_SEGMENTS:
            for bad in (f"{path}/{segment}", f"{path}{segment}"):
                res = webtest_request(app, method, bad, headers=app.auth())
                assert res.status_int == 404, (method, bad, res.body)
                answered(res, method)
    for segment in MALFORMED_SEGMENTS:
        res = webtest_request(app, "GET", f"/@jobs/{segment}")  # without a token too
        assert res.status_int == 404
        answered(res, "GET")
    assert_unchanged(app, job)


def test_walk_unknown_query_parameters_over_every_endpoint(walked):
    app, job = walked
    for method, path in endpoints(job):
        res = webtest_request(app, method, path, "bogus=1&b%C3%A9=2", headers=app.auth())
        assert res.status_int == 400, (method, path, res.body)
        error = answered(res, method)
        if error is not None:
            assert error["type"] == "Validation error"
            assert error["fields"] == {"bogus": ["Unknown field."], "b\u00e9": ["Unknown field."]}
            assert "bogus" in error["message"]
    assert_unchanged(app, job)


def test_walk_unknown_sub_paths_over_every_endpoint(walked):
    app, job = walked
    for method, path in endpoints(job):
        for extra in ("/bogus", "/bogus/more"):
            res = webtest_request(app, method, path + extra, headers=app.auth())
            if res.status_int == 405:
                continue  # a view of that name exists for another method: 405 it is
            assert res.status_int == 404, (method, path + extra, res.body)
            answered(res, method)
    assert_unchanged(app, job)


def test_walk_malformed_bodies_over_every_endpoint_that_reads_one(walked):
    app, job = walked
    for method, path in BODY_ENDPOINTS:
        for content_type, body in MALFORMED_BODIES:
            res = webtest_request(
                app, method, path, headers=app.auth(), body=body, content_type=content_type
            )
            assert res.status_int == 400, (method, path, content_type, body, res.body)
            answered(res, method)
    assert_unchanged(app, job)


def test_known_query_parameters_and_sub_paths_still_work(walked):
    app, job = walked
    headers = app.auth()
    res = app.get("/@jobs?status=completed&b_size=5&count=true&q=Dummy", headers=headers)
    assert [j["uuid"] for j in res.json] == [job]
    assert app.get(f"/@jobs/{job}/log?level=info&b_size=2", headers=headers).status_int == 200
    assert app.get("/healthz/ready").json["status"] == "ok"
    res = app.post_json("/@jobs?follow=false", {"params": {"action": "dummy"}}, headers=headers)
    assert res.status_int == 201
    assert app.get("/@jobs?q=%C3%A9t%C3%A9", headers=headers).json == []


def test_unknown_sub_paths_of_named_views_are_404(walked):
    app, job = walked
    for path in ("/@jobs/stream/stream", f"/@jobs/{job}/log/x", f"/@jobs/{job}/history/x"):
        assert_strict_error(app.get(path, headers=app.auth(), status=404), 404)


# --- output stays strict, even for values stored before input was ---------------------------


@pytest.fixture
def sqlite_app(tmp_path):
    """An app on its own SQLite file: SQLite's JSON can hold a NaN written before."""
    settings = base_settings(
        **{
            "sqlalchemy.url": f"sqlite:///{tmp_path / 'jobs.sqlite'}",
            "nick_jobs.broker_url": "stub://",
            "nick_jobs.embedded_worker_threads": "0",
        }
    )
    engine = get_engine(settings["sqlalchemy.url"])
    migrations.upgrade(engine)
    reset_database(engine)
    wsgi = main({}, **settings)
    yield Client(wsgi, extra_environ={"HTTP_HOST": "localhost:8080"}), engine
    wsgi.registry["nick_jobs.engine"].dispose()
    wsgi.registry["nick_jobs.read_engine"].dispose()
    engine.dispose()


def test_stored_nan_is_written_as_null(sqlite_app):
    app, engine = sqlite_app
    job = app.submit({"action": "dummy"})
    body = {"id": "nightly", "action": "dummy", "schedule": "0 3 * * *"}
    app.post_json("/@scheduled-jobs", body, headers=app.auth(), status=201)
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE jobs SET params = :p, result = :r"),
            {"p": '{"action": "dummy", "x": NaN}', "r": '{"y": [Infinity, -Infinity]}'},
        )
        conn.execute(sa.text("UPDATE scheduled_jobs SET params = :p"), {"p": '{"x": NaN}'})
    listed = strict_json(app.get("/@jobs", headers=app.auth()).body)
    assert listed[0]["params"] == {"action": "dummy", "x": None}
    assert listed[0]["result"] == {"y": [None, None]}
    one = strict_json(app.get(f"/@jobs/{job['uuid']}", headers=app.auth()).body)
    assert one["params"]["x"] is None
    scheduled = strict_json(app.get("/@scheduled-jobs", headers=app.auth()).body)
    assert scheduled[0]["params"] == {"x": None}


# --- a real server ------------------------------------------------------------------------------


def raw_http(address: tuple[str, int], request_line: bytes, headers: dict[str, str]) -> tuple:
    """Send ``request_line`` as it is (a client library would quote it); the status,
    headers and body of the answer."""
    lines = [request_line, b"Host: localhost:8080", b"Connection: close"]
    lines += [f"{name}: {value}".encode("latin-1") for name, value in headers.items()]
    with socket.create_connection(address, timeout=20) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    answer_headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), answer_headers, body


def test_real_server_answers_malformed_urls_with_json(walked):
    app, job = walked
    auth = app.auth()
    cases: list[tuple[bytes, int]] = [
        (b"GET /@jobs/%ff%fe HTTP/1.1", 404),
        (f"GET /@jobs/{job}/%ED%A0%80 HTTP/1.1".encode(), 404),
        (b"GET /@jobs?q=%ff%fe HTTP/1.1", 400),
        (b"GET /@jobs?%ff=1 HTTP/1.1", 400),
        (b"GET /@jobs?q=%00 HTTP/1.1", 400),
        (b"GET /@jobs/stream?ticket=%ff HTTP/1.1", 400),
        (f"GET /@jobs/{job}/history?bogus=1 HTTP/1.1".encode(), 400),
        (b"GET /@jobs/stream/stream HTTP/1.1", 404),
        (b"POST /@jobs/%ff HTTP/1.1", 404),
    ]
    with serving(app) as address:
        for line, status in cases:
            for headers in (auth, {}):
                got, answer_headers, body = raw_http(address, line, headers)
                if not headers and got == 401:
                    continue  # refused before reading: also an answer, and JSON
                assert got == status, (line, headers, got, body)
                assert answer_headers["Content-Type"] == "application/json", (line, body)
                error = strict_json(body)["error"]
                assert error["type"]
                assert error["message"]
        # The server still serves.
        got, _, body = raw_http(address, b"GET /@jobs HTTP/1.1", auth)
        assert got == 200
        assert [j["uuid"] for j in strict_json(body)] == [job]


def test_real_server_refuses_malformed_bodies(walked):
    app, job = walked
    auth = app.auth()
    with serving(app) as address:
        for content_type, body in MALFORMED_BODIES:
            line = b"POST /@jobs HTTP/1.1"
            headers = {**auth, "Content-Type": content_type, "Content-Length": str(len(body))}
            with socket.create_connection(address, timeout=20) as sock:
                head = [line, b"Host: localhost:8080", b"Connection: close"]
                head += [f"{k}: {v}".encode() for k, v in headers.items()]
                sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
            status_line, _, rest = data.partition(b"\r\n")
            assert int(status_line.split()[1]) == 400, (content_type, body, data)
            assert strict_json(rest.partition(b"\r\n\r\n")[2])["error"]["type"]
    assert_unchanged(app, job)


@pytest.mark.parametrize(
    "value",
    [
        "v1:" + "9" * 30,  # beyond a BIGINT: was a 500 when bound
        "v1:9223372036854775808",
        "v1:-5",
        "v1: 5",
        "v1:5_0",
        "v1:",
        "v2:5",
    ],
)
def test_cursor_not_given_out_is_400(walked, value):
    app, job = walked
    cursor = base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")
    for path in ("/@jobs", f"/@jobs/{job}/log"):
        res = app.get(f"{path}?cursor={cursor}", headers=app.auth(), status=400)
        assert assert_strict_error(res, 400)["type"] == "Invalid cursor"


def test_cursor_of_the_largest_id_is_taken(walked):
    app, job = walked
    cursor = base64.urlsafe_b64encode(b"v1:9223372036854775807").decode().rstrip("=")
    assert [j["uuid"] for j in app.get(f"/@jobs?cursor={cursor}", headers=app.auth()).json] == [job]


# --- a host application's own views -------------------------------------------------------------


def test_host_views_keep_their_query_parameters_and_sub_paths(app):
    """The checks are nick-jobs' views' own: a host view is called as it was."""

    def host_view(request):
        return {"subpath": list(request.subpath), "params": dict(request.GET)}

    with Configurator(settings=app.app.registry.settings) as config:
        config.include(includeme)
        config.add_view(host_view, context=Root, name="host-page", renderer="json")
        host = config.make_wsgi_app()
    try:
        client = webtest.TestApp(host, extra_environ={"HTTP_HOST": "localhost:8080"})
        res = client.get("/host-page/a/b?anything=1")
        assert res.json == {"subpath": ["a", "b"], "params": {"anything": "1"}}
        # nick-jobs' own views in the same app still refuse them.
        res = client.get("/@job-actions?anything=1", headers=app.auth(), status=400)
        assert assert_strict_error(res, 400)["fields"] == {"anything": ["Unknown field."]}
    finally:
        host.registry["nick_jobs.queue"].stop_embedded_worker()
        host.registry["nick_jobs.engine"].dispose()
        host.registry["nick_jobs.read_engine"].dispose()
