"""A token the process has seen lets a request start without the query that checks who
sent it. The check then rides on the request's own statement (a submit's insert) or runs
before the response leaves and before anything commits, so a user removed, a token
revoked, a password or roles changed by another process still take effect at the very
next request."""

from __future__ import annotations

import datetime as dt
import json

import sqlalchemy as sa
from pyramid.interfaces import ISecurityPolicy

from nick_jobs.users import tokens
from nick_jobs.users.model import User
from nick_jobs.web.security import Identity, KnownIdentities
from tests.conftest import Client
from tests.jobs.test_job_lookup import statements

DUMMY = {"params": {"action": "dummy"}}


def stored(app: Client) -> list[str]:
    with app.backend.engine.connect() as conn:
        return conn.execute(sa.text("SELECT uuid FROM jobs ORDER BY id")).scalars().all()


def write(app: Client, sql: str, **params) -> None:
    """A change made behind this process's back, as another process would make it."""
    with app.backend.engine.begin() as conn:
        conn.execute(sa.text(sql), params)


def known(app: Client) -> int:
    return len(app.app.registry.getUtility(ISecurityPolicy).known)


def set_roles(app: Client, login: str, roles: list[str]) -> None:
    write(
        app,
        "UPDATE users SET roles = :roles WHERE login = :login",
        roles=json.dumps(roles),
        login=login,
    )


def test_a_known_token_submits_with_one_statement_on_postgresql(app_without_worker) -> None:
    app = app_without_worker
    headers = app.auth()
    app.post_json("/@jobs", DUMMY, headers=headers, status=201)
    with statements(app) as seen:
        job = app.post_json("/@jobs", DUMMY, headers=headers, status=201).json
    if app.backend.name == "sqlite":
        # The job is written in the request's transaction: its identity is checked
        # before that commits, by the same query as on a first request.
        assert any("FROM users" in s for s in seen), seen
        assert not any("INSERT INTO jobs" in s and "FROM users" in s for s in seen), seen
    else:
        # The insert itself checks who sent it: one statement, one round trip.
        assert len(seen) == 1, seen
        assert "INSERT INTO jobs" in seen[0]
        assert "FROM users" in seen[0]
        assert "revoked_tokens" in seen[0]
    assert stored(app)[-1] == job["uuid"]


def test_a_known_token_lists_with_one_statement_on_postgresql(app_without_worker) -> None:
    app = app_without_worker
    headers = app.auth("alice")
    app.get("/@jobs", headers=headers, status=200)
    with statements(app) as seen:
        assert app.get("/@jobs", headers=headers, status=200).json == []
    # An empty page can't tell whether the check in it held: the check runs after it.
    assert len(seen) == 2, seen
    assert "FROM users" in seen[-1]
    job = app.post_json("/@jobs", {"params": {"action": "echo", "message": "x"}}, headers=headers)
    with statements(app) as seen:
        page = app.get("/@jobs", headers=headers, status=200).json
    assert [j["uuid"] for j in page] == [job.json["uuid"]]
    if app.backend.name == "sqlite":
        assert len(seen) == 2, seen
        assert "FROM users" in seen[-1]
    else:
        assert len(seen) == 1, seen
        assert "revoked_tokens" in seen[0]
    # Removed: the same page is refused, whether or not it has rows.
    write(app, "DELETE FROM users WHERE login = 'alice'")
    app.get("/@jobs", headers=headers, status=401)


def test_a_first_request_checks_the_token_up_front(app_without_worker) -> None:
    app = app_without_worker
    with statements(app) as seen:
        app.get("/@jobs", headers=app.auth("alice"), status=200)
    assert "FROM users" in seen[0], seen
    assert known(app) == 1


def test_a_removed_user_submits_nothing_with_a_known_token(app_without_worker) -> None:
    app = app_without_worker
    headers = app.auth("alice")
    app.post_json("/@jobs", {"params": {"action": "echo", "message": "x"}}, headers=headers)
    before = stored(app)
    write(app, "DELETE FROM users WHERE login = 'alice'")
    for key in (None, "once"):
        extra = {"Idempotency-Key": key} if key else {}
        res = app.post_json(
            "/@jobs",
            {"params": {"action": "echo", "message": "y"}},
            headers={**headers, **extra},
            status=401,
        )
        assert res.json == {
            "error": {
                "type": "Unauthorized",
                "message": "You are not authorized to access this resource.",
            }
        }
        assert res.headers["WWW-Authenticate"] == 'Bearer realm="nick-jobs", error="invalid_token"'
    assert stored(app) == before
    assert known(app) == 0


def test_a_token_revoked_elsewhere_stops_at_the_next_request(app_without_worker) -> None:
    app = app_without_worker
    token = app.token("alice")
    headers = {"Authorization": f"Bearer {token}"}
    app.get("/@jobs", headers=headers, status=200)
    write(
        app,
        "INSERT INTO revoked_tokens (token_hash, expires) VALUES (:h, :e)",
        h=tokens.fingerprint(token),
        e=tokens.decode(app.app.registry["nick_jobs.settings"], token).exp,
    )
    # A read that needs nothing but the token, a submit, and a renew (which answers a
    # dead session in its own words): none of them goes through.
    app.get("/@jobs", headers=headers, status=401)
    app.post_json(
        "/@jobs", {"params": {"action": "echo", "message": "x"}}, headers=headers, status=401
    )
    res = app.post("/@login-renew", headers=headers, status=401)
    assert res.json["error"]["type"] == "Invalid session"
    assert stored(app) == []


def test_roles_changed_elsewhere_refuse_the_request_once_and_nothing_is_written(
    app_without_worker,
) -> None:
    app = app_without_worker
    headers = app.auth("admin")
    first = app.post_json("/@jobs", DUMMY, headers=headers, status=201).json
    # No longer an administrator: allowed with the old roles, the submit is refused.
    set_roles(app, "admin", [])
    res = app.post_json("/@jobs", DUMMY, headers=headers, status=503)
    assert res.json["error"]["type"] == "Identity changed"
    assert res.headers["Retry-After"] == "0"
    # Sent again, it is judged by the roles the user has now.
    app.post_json("/@jobs", DUMMY, headers=headers, status=403)
    # The same in the request's transaction (an Idempotency-Key): it never commits.
    set_roles(app, "admin", ["Administrator"])
    app.get("/@jobs", headers=headers, status=503)
    app.get("/@jobs", headers=headers, status=200)
    set_roles(app, "admin", [])
    keyed = {**headers, "Idempotency-Key": "once"}
    app.post_json("/@jobs", DUMMY, headers=keyed, status=503)
    app.post_json("/@jobs", DUMMY, headers=keyed, status=403)
    assert stored(app) == [first["uuid"]]


def test_a_changed_name_refuses_a_read_that_was_allowed_with_the_old_one(
    app_without_worker,
) -> None:
    app = app_without_worker
    headers = app.auth("alice")
    app.get("/@jobs", headers=headers, status=200)
    write(app, "UPDATE users SET fullname = 'Alice Liddell' WHERE login = 'alice'")
    res = app.get("/@jobs", headers=headers, status=503)
    assert res.json["error"]["type"] == "Identity changed"
    app.get("/@jobs", headers=headers, status=200)


def test_known_identities_keep_at_most_max_and_drop_the_oldest(monkeypatch) -> None:
    monkeypatch.setattr(KnownIdentities, "MAX", 3)
    known = KnownIdentities()
    people = {f"fp{i}": Identity(f"user{i}", f"User {i}", (), f"token{i}") for i in range(5)}
    for fingerprint, identity in people.items():
        known.put(fingerprint, identity)
    assert len(known) == 3
    assert [known.get(f"fp{i}") for i in range(5)] == [None, None, *list(people.values())[2:]]
    # Seen again, a known token takes no room of another's.
    known.put("fp4", people["fp4"])
    assert len(known) == 3
    assert known.get("fp2") == people["fp2"]
    known.forget("fp3")
    assert known.get("fp3") is None


def test_tokens_ended_elsewhere_stop_a_known_token_at_the_next_request(app_without_worker):
    """A new password (or role, or the user added again) in another process: ``tokens_after``
    moves past the token, which the guard on a submit's insert and on a page of jobs, and
    the check before a response leaves, all see."""
    app = app_without_worker
    token = app.token("alice")
    headers = {"Authorization": f"Bearer {token}"}
    job = app.post_json("/@jobs", {"params": {"action": "echo", "message": "x"}}, headers=headers)
    assert [j["uuid"] for j in app.get("/@jobs", headers=headers).json] == [job.json["uuid"]]
    assert known(app) == 1
    issued = tokens.decode(app.app.registry["nick_jobs.settings"], token).issued
    with app.backend.engine.begin() as conn:
        conn.execute(
            sa.update(User)
            .where(User.login == "alice")
            .values(tokens_after=issued + dt.timedelta(microseconds=1))
        )
    app.post_json(
        "/@jobs", {"params": {"action": "echo", "message": "y"}}, headers=headers, status=401
    )
    app.get("/@jobs", headers=headers, status=401)
    app.get(f"/@jobs/{job.json['uuid']}", headers=headers, status=401)
    res = app.post("/@login-renew", headers=headers, status=401)
    assert res.json["error"]["type"] == "Invalid session"
    assert stored(app) == [job.json["uuid"]]
    assert known(app) == 0
    # A token issued at that very microsecond, or later, is the user's.
    with app.backend.engine.begin() as conn:
        conn.execute(sa.update(User).where(User.login == "alice").values(tokens_after=issued))
    app.get("/@jobs", headers=headers, status=200)
