"""Authentication (``@login``, ``@login-renew``, ``@logout``, bearer JWTs) and who may see what."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import uuid
import warnings

import jwt
import pytest
import sqlalchemy as sa
from jwt.warnings import InsecureKeyLengthWarning

from nick_jobs.settings import MIN_SECRET_LENGTH, ConfigurationError, apply_environment, parse
from nick_jobs.users import tokens
from nick_jobs.users.ratelimit import LoginLimits
from tests.conftest import JWT_SECRET, PASSWORDS, base_settings, reset_database

MISSING_CREDENTIALS = {
    "error": {
        "type": "Missing credentials",
        "message": "Login and password must be provided in body.",
    }
}
INVALID_CREDENTIALS = {
    "error": {"type": "Invalid credentials", "message": "Wrong login and/or password."}
}


def assert_error(res, status: int, type_: str | None = None) -> dict:
    """``res`` is a JSON error with exactly the shared shape; return its ``error`` object."""
    assert res.status_int == status, res.body
    assert res.content_type == "application/json"
    body = res.json
    assert set(body) == {"error"}
    error = body["error"]
    assert isinstance(error["type"], str)
    assert error["type"]
    assert isinstance(error["message"], str)
    if type_ is not None:
        assert error["type"] == type_
    return error


def assert_unauthorized(res) -> None:
    assert_error(res, 401)
    assert res.headers["WWW-Authenticate"].startswith("Bearer")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims(login: str = "alice", **overrides) -> dict:
    now = int(time.time())
    return {"sub": login, "fullname": login.title(), "iat": now, "exp": now + 3600, **overrides}


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def login(app, who: str = "alice", **kw):
    return app.post_json("/@login", {"login": who, "password": PASSWORDS[who]}, **kw)


def delete_user(engine: sa.Engine, who: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM users WHERE login = :login"), {"login": who})


# --- @login ---------------------------------------------------------------------------


def test_login_returns_a_nick_compatible_hs256_token(app):
    res = login(app, "alice", status=200)
    assert set(res.json) == {"token"}
    token = res.json["token"]
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    decoded = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])
    # Nick's claims, and a jti of its own (which Nick ignores).
    assert set(decoded) == {"sub", "fullname", "iat", "exp", "jti"}
    assert decoded["sub"] == "alice"
    assert decoded["fullname"] == "Alice"
    assert abs(decoded["iat"] - time.time()) < 60
    assert isinstance(decoded["jti"], str)
    assert len(decoded["jti"]) >= 16
    lifetime = app.app.registry["nick_jobs.settings"].jwt_lifetime_s
    assert isinstance(decoded["exp"], int)
    assert decoded["exp"] - int(decoded["iat"]) == lifetime
    # ... and the token opens the API.
    app.get("/@jobs", headers=bearer(token), status=200)


def test_token_lifetime_follows_the_setting(app, make_app):
    short = make_app(**{"nick_jobs.jwt_lifetime": "600"})
    token = login(short, "bob", status=200).json["token"]
    decoded = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])
    assert decoded["exp"] - int(decoded["iat"]) == 600


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"login": "alice"},
        {"password": "alice-password"},
        {"login": "", "password": "alice-password"},
        {"login": "alice", "password": ""},
        {"login": 1, "password": 2},
    ],
)
def test_login_without_credentials_is_400(app, body):
    res = app.post_json("/@login", body, status=400)
    assert res.json == MISSING_CREDENTIALS


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("login=alice&password=alice-password", "application/x-www-form-urlencoded"),
        ("not json at all", "application/json"),
        ('["alice", "alice-password"]', "application/json"),
        ("", "application/json"),
        ('{"login": "alice", "password": "alice-password"}', "text/plain"),
    ],
)
def test_login_with_a_non_json_body_is_missing_credentials(app, body, content_type):
    res = app.post("/@login", body, content_type=content_type, status=400)
    assert res.json == MISSING_CREDENTIALS


def test_login_ignores_extra_fields_in_the_body(app):
    body = {"login": "alice", "password": PASSWORDS["alice"], "remember": True, "otp": None}
    token = app.post_json("/@login", body, status=200).json["token"]
    assert jwt.decode(token, JWT_SECRET, algorithms=["HS256"])["sub"] == "alice"


def test_wrong_password_and_unknown_user_answer_alike(app):
    wrong = app.post_json("/@login", {"login": "alice", "password": "nope"}, status=401)
    unknown = app.post_json("/@login", {"login": "mallory", "password": "nope"}, status=401)
    assert wrong.json == INVALID_CREDENTIALS
    assert unknown.json == INVALID_CREDENTIALS
    assert wrong.body == unknown.body


# --- @login-renew -----------------------------------------------------------------------


def test_renew_gives_a_new_token_for_the_same_user(app):
    old = tokens.issue(
        app.app.registry["nick_jobs.settings"],
        "alice",
        "Alice",
        now=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5),
    )
    res = app.post("/@login-renew", headers=bearer(old), status=200)
    assert set(res.json) == {"token"}
    new = res.json["token"]
    assert new != old
    decoded = jwt.decode(new, JWT_SECRET, algorithms=["HS256"])
    assert decoded["sub"] == "alice"
    assert decoded["fullname"] == "Alice"
    assert decoded["iat"] > jwt.decode(old, JWT_SECRET, algorithms=["HS256"])["iat"]
    app.get("/@jobs", headers=bearer(new), status=200)


@pytest.mark.parametrize("header", [None, "Bearer garbage", "Basic YWxpY2U6eA=="])
def test_renew_without_a_valid_session_is_401(app, header):
    headers = {"Authorization": header} if header else {}
    res = app.post("/@login-renew", headers=headers, status=401)
    error = assert_error(res, 401, "Invalid session")
    assert error["message"]
    assert res.headers["WWW-Authenticate"].startswith("Bearer")


def test_renew_with_a_revoked_token_is_401(app):
    token = login(app, "alice").json["token"]
    app.post("/@logout", headers=bearer(token), status=204)
    res = app.post("/@login-renew", headers=bearer(token), status=401)
    assert_error(res, 401, "Invalid session")


# --- @logout ------------------------------------------------------------------------------


def test_logout_revokes_only_that_token(app):
    settings = app.app.registry["nick_jobs.settings"]
    now = dt.datetime.now(dt.UTC)
    token = tokens.issue(settings, "alice", "Alice", now=now)
    # Another session of alice's (issued at another second, so a different token).
    other = tokens.issue(settings, "alice", "Alice", now=now - dt.timedelta(seconds=10))
    assert token != other
    app.get("/@jobs", headers=bearer(token), status=200)

    res = app.post("/@logout", headers=bearer(token), status=204)
    assert res.body == b""
    assert_unauthorized(app.get("/@jobs", headers=bearer(token), status=401))
    # Logging out again is harmless.
    app.post("/@logout", headers=bearer(token), status=204)
    assert_unauthorized(app.get("/@jobs", headers=bearer(token), status=401))

    app.get("/@jobs", headers=bearer(other), status=200)
    app.get("/@jobs", headers=app.auth("bob"), status=200)


def test_logout_without_a_session_is_a_no_op(app):
    app.post("/@logout", status=204)
    app.post("/@logout", headers={"Authorization": "Bearer garbage"}, status=204)


def test_revocation_survives_a_restart(app, make_app):
    token = login(app, "bob").json["token"]
    app.post("/@logout", headers=bearer(token), status=204)
    restarted = make_app()
    assert_unauthorized(restarted.get("/@jobs", headers=bearer(token), status=401))


# --- bearer tokens on every protected endpoint ----------------------------------------


def _endpoints(job_uuid: str) -> list[tuple[str, str, dict | None]]:
    return [
        ("GET", "/@jobs", None),
        ("POST", "/@jobs", {"params": {"action": "echo", "message": "hi"}}),
        ("GET", f"/@jobs/{job_uuid}", None),
        ("POST", f"/@jobs/{job_uuid}/abort", None),
        ("POST", f"/@jobs/{job_uuid}/retry", None),
        ("GET", "/@job-actions", None),
        ("DELETE", f"/@jobs/{job_uuid}", None),
    ]


def _call(app, method: str, path: str, body, headers: dict[str, str]):
    if body is not None:
        return app.post_json(path, body, headers=headers, expect_errors=True)
    return getattr(app, method.lower())(path, headers=headers, expect_errors=True)


def _revoked(app, backend) -> str:
    token = login(app, "alice").json["token"]
    app.post("/@logout", headers=bearer(token), status=204)
    return token


def _removed_user(app, backend) -> str:
    token = app.token("bob")
    app.get("/@jobs", headers=bearer(token), status=200)
    delete_user(backend.engine, "bob")
    return token


def _expired(app, backend) -> str:
    leeway = app.app.registry["nick_jobs.settings"].jwt_leeway_s
    now = int(time.time())
    return jwt.encode(claims(iat=now - 7200, exp=now - leeway - 60), JWT_SECRET, algorithm="HS256")


def _hs512(app, backend) -> str:
    with warnings.catch_warnings():
        # PyJWT warns that the test secret is short for SHA-512; beside the point here.
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(claims(), JWT_SECRET, algorithm="HS512")


def _alg_none(app, backend) -> str:
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}."


BAD_AUTHORIZATION = {
    "no header": lambda app, backend: None,
    "other scheme": lambda app, backend: "Token x",
    "scheme only": lambda app, backend: "Bearer",
    "scheme and blanks": lambda app, backend: "Bearer    ",
    "basic auth": lambda app, backend: "Basic YWxpY2U6YWxpY2UtcGFzc3dvcmQ=",
    "garbage": lambda app, backend: "Bearer not.a.jwt",
    "garbage without scheme": lambda app, backend: "x" * 50,
    "bare token": lambda app, backend: app.token("alice"),
    "forged signature": lambda app, backend: (
        "Bearer " + jwt.encode(claims(), "another-secret-" + "y" * 40, algorithm="HS256")
    ),
    "expired": lambda app, backend: "Bearer " + _expired(app, backend),
    "alg none": lambda app, backend: "Bearer " + _alg_none(app, backend),
    "HS512": lambda app, backend: "Bearer " + _hs512(app, backend),
    "no exp": lambda app, backend: (
        "Bearer "
        + jwt.encode({k: v for k, v in claims().items() if k != "exp"}, JWT_SECRET, "HS256")
    ),
    "no sub": lambda app, backend: (
        "Bearer "
        + jwt.encode({k: v for k, v in claims().items() if k != "sub"}, JWT_SECRET, "HS256")
    ),
    "empty sub": lambda app, backend: "Bearer " + jwt.encode(claims(sub=""), JWT_SECRET, "HS256"),
    "sub not a string": lambda app, backend: (
        "Bearer " + jwt.encode(claims(sub=42), JWT_SECRET, "HS256")
    ),
    "sub a list": lambda app, backend: (
        "Bearer " + jwt.encode(claims(sub=["alice"]), JWT_SECRET, "HS256")
    ),
    "exp out of range": lambda app, backend: (
        "Bearer " + jwt.encode(claims(exp=10**20), JWT_SECRET, "HS256")
    ),
    "not yet issued": lambda app, backend: (
        "Bearer " + jwt.encode(claims(iat=int(time.time()) + 3600), JWT_SECRET, "HS256")
    ),
    "revoked": lambda app, backend: "Bearer " + _revoked(app, backend),
    "user removed": lambda app, backend: "Bearer " + _removed_user(app, backend),
    "header too large": lambda app, backend: (
        "Bearer " + "x" * app.app.registry["nick_jobs.settings"].max_authorization_header
    ),
}


@pytest.mark.parametrize("case", list(BAD_AUTHORIZATION))
def test_protected_endpoints_refuse_bad_authorization(app, backend, case):
    # alice's own job: with her valid token each of these URLs exists for her.
    job = app.submit({"action": "echo", "message": "mine"}, login="alice")
    header = BAD_AUTHORIZATION[case](app, backend)
    headers = {"Authorization": header} if header is not None else {}
    for method, path, body in _endpoints(job["uuid"]):
        res = _call(app, method, path, body, headers)
        assert res.status_int == 401, f"{case}: {method} {path} -> {res.status} {res.body!r}"
        assert_unauthorized(res)
        assert res.json["error"]["type"] == "Unauthorized"
    # Nothing happened to the job, and no job was added.
    assert [j["uuid"] for j in app.get("/@jobs", headers=app.auth()).json] == [job["uuid"]]


def test_oversized_authorization_header_is_refused_even_with_a_valid_token(app, make_app):
    token = app.token("alice")
    small = make_app(**{"nick_jobs.max_authorization_header": str(len(token))})
    small.get("/@jobs", headers=bearer(token), status=401)
    app.get("/@jobs", headers=bearer(token), status=200)


def test_valid_token_opens_every_protected_endpoint(app_without_worker):
    app = app_without_worker
    job = app.submit({"action": "echo", "message": "mine"}, login="alice")
    headers = app.auth("alice")
    for method, path, body in _endpoints(job["uuid"]):
        res = _call(app, method, path, body, headers)
        assert res.status_int in {200, 201, 204}, f"{method} {path}: {res.status} {res.body!r}"


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer"])
def test_bearer_scheme_is_case_insensitive(app, scheme):
    res = app.get("/@jobs", headers={"Authorization": f"{scheme} {app.token('alice')}"})
    assert res.status_int == 200


def test_token_from_the_host_nick_server_is_accepted(app):
    now = int(time.time())
    token = jwt.encode(
        {"sub": "alice", "fullname": "Alice", "iat": now, "exp": now + 3600},
        JWT_SECRET,
        "HS256",
    )
    assert app.get("/@jobs", headers=bearer(token)).json == []
    res = app.post_json(
        "/@jobs", {"params": {"action": "echo", "message": "hi"}}, headers=bearer(token)
    )
    assert res.status_int == 201
    assert res.json["actor"] == "alice"


def test_expired_token_within_the_leeway_is_accepted(app):
    leeway = app.app.registry["nick_jobs.settings"].jwt_leeway_s
    assert leeway >= 10
    now = int(time.time())
    token = jwt.encode(claims(iat=now - 3600, exp=now - leeway // 2), JWT_SECRET, "HS256")
    app.get("/@jobs", headers=bearer(token), status=200)


# --- rate limiting ------------------------------------------------------------------------


@pytest.fixture
def limited(backend, make_app):
    reset_database(backend.engine)
    return make_app(
        **{
            "nick_jobs.login_rate_limit": "3",
            "nick_jobs.login_account_rate_limit": "5",
            "nick_jobs.login_address_rate_limit": "8",
        }
    )


def at(address: str) -> dict[str, str]:
    return {"REMOTE_ADDR": address}


def wrong(app, who: str, address: str, status: int = 401):
    return app.post_json(
        "/@login", {"login": who, "password": "wrong"}, status=status, extra_environ=at(address)
    )


def assert_too_many(res) -> None:
    assert_error(res, 429, "Too many requests")
    assert 1 <= int(res.headers["Retry-After"]) <= 60


def test_failed_logins_are_limited_per_client_and_account(limited):
    app = limited
    for _ in range(3):
        wrong(app, "alice", "192.0.2.10")
    # The right password doesn't get past the limit: a limited guess learns nothing.
    assert_too_many(login(app, "alice", status=429, extra_environ=at("192.0.2.10")))
    assert_too_many(wrong(app, "alice", "192.0.2.10", status=429))
    # Others behind the same address log in, and alice does from elsewhere.
    login(app, "bob", status=200, extra_environ=at("192.0.2.10"))
    login(app, "alice", status=200, extra_environ=at("192.0.2.11"))


def test_successful_logins_are_not_counted(limited):
    app = limited
    for _ in range(10):
        login(app, "alice", status=200, extra_environ=at("192.0.2.12"))
    wrong(app, "alice", "192.0.2.12")
    login(app, "alice", status=200, extra_environ=at("192.0.2.12"))


def test_a_guess_spread_over_addresses_is_limited_per_account(limited):
    app = limited
    for n in range(5):
        wrong(app, "alice", f"198.51.100.{n}")
    assert_too_many(login(app, "alice", status=429, extra_environ=at("198.51.100.99")))
    login(app, "bob", status=200, extra_environ=at("198.51.100.99"))


def test_one_address_trying_many_accounts_is_limited(limited):
    app = limited
    for n in range(8):
        wrong(app, f"user{n}", "192.0.2.30")
    assert_too_many(login(app, "bob", status=429, extra_environ=at("192.0.2.30")))
    login(app, "bob", status=200, extra_environ=at("192.0.2.31"))


def test_renewing_a_valid_token_is_never_limited_nor_counted(limited):
    app = limited
    for n in range(8):
        wrong(app, f"user{n}", "192.0.2.40")
    for _ in range(10):
        res = app.post("/@login-renew", headers=app.auth("alice"), extra_environ=at("192.0.2.40"))
        assert res.status_int == 200
    for _ in range(10):
        app.post(
            "/@login-renew", headers=bearer("garbage"), status=401, extra_environ=at("192.0.2.41")
        )
    login(app, "alice", status=200, extra_environ=at("192.0.2.41"))


def test_a_body_without_credentials_is_not_counted(limited):
    app = limited
    for _ in range(10):
        app.post_json("/@login", {"login": "alice"}, status=400, extra_environ=at("192.0.2.50"))
    login(app, "alice", status=200, extra_environ=at("192.0.2.50"))


def test_rate_limit_ignores_a_client_chosen_x_forwarded_for(limited):
    app = limited
    for n in range(3):
        headers = {"X-Forwarded-For": f"198.51.100.{n}"}
        app.post_json(
            "/@login",
            {"login": "alice", "password": "wrong"},
            status=401,
            headers=headers,
            extra_environ=at("192.0.2.20"),
        )
    res = login(
        app,
        "alice",
        status=429,
        headers={"X-Forwarded-For": "198.51.100.99"},
        extra_environ=at("192.0.2.20"),
    )
    assert_too_many(res)


def test_attempts_in_progress_count_and_a_success_is_uncounted():
    limits = LoginLimits(per_client=2, per_account=100, per_address=100, window_s=60)
    # Two guesses at once: a third, before either is answered, is refused.
    first = limits.start("192.0.2.60", "alice", now=0)
    second = limits.start("192.0.2.60", "alice", now=1)
    assert (first.retry_after, second.retry_after) == (None, None)
    assert limits.start("192.0.2.60", "alice", now=2).retry_after == 58
    first.uncount()
    assert limits.start("192.0.2.60", "alice", now=3).retry_after is None
    # The window slides: the oldest failure no longer counts after it.
    assert limits.start("192.0.2.60", "alice", now=4).retry_after == 57
    assert limits.start("192.0.2.60", "alice", now=61).retry_after is None


def test_a_limit_of_zero_switches_it_off():
    limits = LoginLimits(per_client=0, per_account=0, per_address=0, window_s=60)
    assert all(limits.start("192.0.2.70", "alice").retry_after is None for _ in range(100))


# --- settings -----------------------------------------------------------------------------


def _production(**overrides: str) -> dict[str, str]:
    return base_settings(
        **{
            "sqlalchemy.url": "sqlite://",
            "nick_jobs.environment": "production",
            **overrides,
        }
    )


@pytest.mark.parametrize(
    "secret",
    [
        "",
        "   ",
        "secret",
        "changeme",
        "CHANGEME",
        "development-secret",
        "x" * (MIN_SECRET_LENGTH - 1),
    ],
)
def test_production_refuses_a_weak_secret(secret):
    with pytest.raises(ConfigurationError, match="NICK_JOBS_JWT_SECRET"):
        parse(_production(**{"nick_jobs.jwt_secret": secret}))


def test_production_accepts_a_strong_secret():
    secret = "k" * MIN_SECRET_LENGTH
    settings = parse(_production(**{"nick_jobs.jwt_secret": secret}))
    assert settings.is_production
    assert settings.jwt_secret == secret
    # Never a development admin in production, whatever the ini says.
    assert not parse(
        _production(**{"nick_jobs.jwt_secret": secret, "nick_jobs.bootstrap_admin": "true"})
    ).bootstrap_admin


def test_empty_secret_is_refused_outside_production_too():
    with pytest.raises(ConfigurationError):
        parse(base_settings(**{"sqlalchemy.url": "sqlite://", "nick_jobs.jwt_secret": ""}))


def test_only_hmac_algorithms_are_accepted():
    with pytest.raises(ConfigurationError):
        parse(base_settings(**{"sqlalchemy.url": "sqlite://", "nick_jobs.jwt_algorithms": "none"}))


def test_environment_overrides_the_ini():
    ini = base_settings(
        **{"sqlalchemy.url": "sqlite:///ini.sqlite", "nick_jobs.broker_url": "stub://"}
    )
    environ = {
        "NICK_JOBS_DATABASE_URL": "postgresql+psycopg://db.example/jobs",
        "NICK_JOBS_BROKER_URL": "redis://broker.example:6379/0",
        "NICK_JOBS_JWT_SECRET": "from-the-environment-" + "z" * 40,
        "UNRELATED": "ignored",
    }
    merged = apply_environment(ini, environ)
    assert merged["sqlalchemy.url"] == "postgresql+psycopg://db.example/jobs"
    assert merged["nick_jobs.broker_url"] == "redis://broker.example:6379/0"
    assert merged["nick_jobs.jwt_secret"] == environ["NICK_JOBS_JWT_SECRET"]
    assert ini["sqlalchemy.url"] == "sqlite:///ini.sqlite"  # a copy; the ini is untouched
    parsed = parse(merged)
    assert parsed.database_url == environ["NICK_JOBS_DATABASE_URL"]
    assert parsed.broker_url == environ["NICK_JOBS_BROKER_URL"]
    assert parsed.jwt_secret == environ["NICK_JOBS_JWT_SECRET"]


def test_empty_environment_values_leave_the_ini_alone():
    ini = base_settings(**{"sqlalchemy.url": "sqlite:///ini.sqlite"})
    merged = apply_environment(ini, {"NICK_JOBS_DATABASE_URL": "", "NICK_JOBS_JWT_SECRET": ""})
    assert merged == ini


def test_app_reads_the_secret_from_the_environment(app, backend, make_app, monkeypatch):
    secret = "from-the-environment-" + "e" * 40
    monkeypatch.setenv("NICK_JOBS_JWT_SECRET", secret)
    client = make_app()
    assert client.app.registry["nick_jobs.settings"].jwt_secret == secret
    ours = jwt.encode(claims(), secret, "HS256")
    client.get("/@jobs", headers=bearer(ours), status=200)
    # Tokens signed with the ini's secret no longer open it.
    client.get("/@jobs", headers=bearer(jwt.encode(claims(), JWT_SECRET, "HS256")), status=401)


# --- authorization ------------------------------------------------------------------------


def test_users_cannot_see_or_touch_each_others_jobs(app_without_worker):
    app = app_without_worker
    bobs = app.submit({"action": "echo", "message": "bob's"}, login="bob")
    alices = app.submit({"action": "echo", "message": "alice's"}, login="alice")
    missing = app.get(f"/@jobs/{uuid.uuid4()}", headers=app.auth("alice"), status=404).json

    alice = app.auth("alice")
    url = f"/@jobs/{bobs['uuid']}"
    for res in (
        app.get(url, headers=alice, status=404),
        app.delete(url, headers=alice, status=404),
        app.post(f"{url}/abort", headers=alice, status=404),
        app.post(f"{url}/retry", headers=alice, status=404),
    ):
        assert res.json == missing

    listed = [j["uuid"] for j in app.get("/@jobs", headers=alice).json]
    assert listed == [alices["uuid"]]
    assert app.get("/@jobs?actor=bob", headers=alice).json == []
    assert app.get("/@jobs?actor=bob&count=true", headers=alice).json == []
    assert [j["uuid"] for j in app.get("/@jobs?actor=alice", headers=alice).json] == [
        alices["uuid"]
    ]
    # bob's job is untouched, and he still sees only his own.
    assert app.get(url, headers=app.auth("bob")).json["status"] == "created"
    assert [j["uuid"] for j in app.get("/@jobs", headers=app.auth("bob")).json] == [bobs["uuid"]]


def test_admin_sees_and_controls_every_job(app_without_worker):
    app = app_without_worker
    bobs = app.submit({"action": "echo", "message": "bob's"}, login="bob")
    alices = app.submit({"action": "echo", "message": "alice's"}, login="alice")
    admin = app.auth("admin")

    listed = [j["uuid"] for j in app.get("/@jobs", headers=admin).json]
    assert listed == [alices["uuid"], bobs["uuid"]]
    assert [j["uuid"] for j in app.get("/@jobs?actor=bob", headers=admin).json] == [bobs["uuid"]]

    url = f"/@jobs/{bobs['uuid']}"
    assert app.get(url, headers=admin).json["actor"] == "bob"
    app.post(f"{url}/abort", headers=admin, status=204)
    assert app.get(url, headers=app.auth("bob")).json["status"] == "aborted"
    app.post(f"{url}/retry", headers=admin, status=204)
    assert app.get(url, headers=app.auth("bob")).json["attempt"] == 2
    app.post(f"{url}/abort", headers=admin, status=204)
    app.delete(url, headers=admin, status=204)
    app.get(url, headers=app.auth("bob"), status=404)
    assert [j["uuid"] for j in app.get("/@jobs", headers=admin).json] == [alices["uuid"]]


def test_owner_controls_their_own_job(app_without_worker):
    app = app_without_worker
    job = app.submit({"action": "echo", "message": "mine"}, login="alice")
    url = f"/@jobs/{job['uuid']}"
    alice = app.auth("alice")
    app.post(f"{url}/abort", headers=alice, status=204)
    app.post(f"{url}/retry", headers=alice, status=204)
    app.post(f"{url}/abort", headers=alice, status=204)
    app.delete(url, headers=alice, status=204)
    app.get(url, headers=alice, status=404)


def test_submitting_an_action_needs_its_permission(app):
    res = app.post_json(
        "/@jobs", {"params": {"action": "dummy"}}, headers=app.auth("alice"), status=403
    )
    assert_error(res, 403, "Forbidden")
    assert app.get("/@jobs", headers=app.auth("admin")).json == []
    app.post_json("/@jobs", {"params": {"action": "dummy"}}, headers=app.auth("admin"), status=201)
    # An action any user may submit.
    app.post_json(
        "/@jobs",
        {"params": {"action": "echo", "message": "x"}},
        headers=app.auth("alice"),
        status=201,
    )


def test_removed_user_token_stops_working_at_once(app, backend):
    token = app.token("alice")
    app.get("/@jobs", headers=bearer(token), status=200)
    delete_user(backend.engine, "alice")
    assert_unauthorized(app.get("/@jobs", headers=bearer(token), status=401))
    app.post_json("/@login", {"login": "alice", "password": PASSWORDS["alice"]}, status=401)
