"""A token once ended stays ended, whatever its spelling: logouts revoke a token by its
identity (``jti``, or its canonical text), and a user's ``tokens_after`` ends every token
issued before the user was added again or given a new password or role.

The scenarios run against a real server (``pserve``, as in production) on every backend;
what is a parser's fault is tested on the parser.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from nick_jobs.settings import ENVIRONMENT_OVERRIDES, parse
from nick_jobs.streams import tickets
from nick_jobs.users import tokens
from nick_jobs.users.accounts import add_user, remove_user, update_user
from nick_jobs.users.model import User
from tests import processes
from tests.conftest import (
    JWT_SECRET,
    PASSWORDS,
    ROOT,
    base_settings,
    reset_database,
    stop_process,
    write_ini,
)
from tests.netutil import free_port, wait_listening

PSERVE = Path(sys.executable).with_name("pserve")
ECHO = {"params": {"action": "echo", "message": "hi"}}


# --- the server -----------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    body: Any


@dataclass
class Server:
    port: int
    ini: Path

    def call(self, method: str, path: str, token: str | None = None, body: Any = None) -> Answer:
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            conn.request(method, path, body=data, headers=headers)
            res = conn.getresponse()
            if res.getheader("Content-Type", "").startswith("text/event-stream"):
                # An open stream: its status is the answer; it never ends by itself.
                return Answer(res.status, None)
            raw = res.read()
            return Answer(res.status, json.loads(raw) if raw else None)
        finally:
            conn.close()

    def login(self, login: str = "alice", password: str | None = None) -> str:
        answer = self.call(
            "POST", "/@login", body={"login": login, "password": password or PASSWORDS[login]}
        )
        assert answer.status == 200, answer
        return answer.body["token"]

    def status(self, token: str) -> int:
        """What ``GET /@jobs`` answers the token."""
        return self.call("GET", "/@jobs", token).status

    def ticket(self, token: str, stream: str = "/@jobs/stream") -> Answer:
        return self.call("POST", "/@stream-tickets", token, {"stream": stream})


@pytest.fixture(scope="module")
def server(backend, tmp_path_factory) -> Iterator[Server]:
    """``pserve`` on the current backend's database and broker."""
    directory = tmp_path_factory.mktemp("revocation")
    port = free_port()
    ini = write_ini(directory / "server.ini", backend.settings)
    with ini.open("a") as f:
        f.write(
            f"\n[server:main]\nuse = egg:waitress#main\nlisten = 127.0.0.1:{port}\nthreads = 8\n"
            "channel_request_lookahead = 1\n"
        )
    log = (directory / "server.log").open("w+")
    process = subprocess.Popen(
        [str(PSERVE), str(ini)], cwd=ROOT, stdout=log, stderr=log, env=_env()
    )
    try:
        wait_listening(port, process, directory / "server.log", "pserve", timeout=30)
        yield Server(port, ini)
    finally:
        stop_process(process)
        log.close()


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT_OVERRIDES}
    env["PYTHONPATH"] = str(ROOT)  # the test actions (nick_jobs.includes)
    return env


@pytest.fixture
def live(server, backend) -> Server:
    reset_database(backend.engine)
    return server


def padded(token: str) -> str:
    """The same token with one ``=`` of base64 padding, which PyJWT decodes alike."""
    return token + "="


def stored_jobs(backend) -> int:
    with backend.engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one()


# --- a logged-out token, in any spelling ----------------------------------------------


def test_a_logged_out_token_is_refused_in_any_spelling_everywhere(live, backend):
    token = live.login("alice")
    job = live.call("POST", "/@jobs", token, ECHO).body
    assert live.status(padded(token)) == 401  # refused before any logout, too
    assert live.call("POST", "/@logout", token).status == 204

    for spelling in (token, padded(token), token + "==", token + " "):
        assert live.status(spelling) == 401, spelling
        assert live.call("GET", f"/@jobs/{job['uuid']}", spelling).status == 401
        assert live.call("POST", "/@jobs", spelling, ECHO).status == 401
        renew = live.call("POST", "/@login-renew", spelling)
        assert renew.status == 401
        assert renew.body["error"]["type"] == "Invalid session"
        assert live.ticket(spelling).status == 401
        assert live.call("GET", "/@jobs/stream", spelling).status == 401
    assert stored_jobs(backend) == 1


@pytest.mark.parametrize("spelling", ["T=", "T==", "T with a blank"])
def test_logging_out_another_spelling_ends_the_token(live, spelling):
    token = live.login("alice")
    other = live.login("alice")
    sent = {
        "T=": padded(token),
        "T==": token + "==",
        "T with a blank": f"{token[:20]} {token[20:]}",
    }
    assert live.status(sent[spelling]) == 401  # the spelling opens nothing...
    assert live.call("POST", "/@logout", sent[spelling]).status == 204
    assert live.status(token) == 401  # ...yet logging out with it ends the token
    assert live.status(other) == 200
    # A spelling of no valid token is a no-op, as a logout without a session is.
    assert live.call("POST", "/@logout", padded(token[:-5] + "AAAAA")).status == 204
    assert live.status(other) == 200


def test_a_ticket_dies_with_the_logout_of_its_token(live):
    token = live.login("alice")
    ticket = live.ticket(token).body["ticket"]
    assert live.call("GET", f"/@jobs/stream?ticket={ticket}").status == 200
    live.call("POST", "/@logout", token)
    assert live.call("GET", f"/@jobs/stream?ticket={ticket}").status == 401


def test_a_host_token_without_jti_is_revoked_by_its_canonical_form(live):
    now = int(time.time())
    token = jwt.encode(
        {"sub": "alice", "fullname": "Alice", "iat": now, "exp": now + 3600}, JWT_SECRET, "HS256"
    )
    assert live.status(token) == 200
    assert live.call("POST", "/@logout", token).status == 204
    assert live.status(token) == 401
    assert live.status(padded(token)) == 401
    assert live.call("POST", "/@login-renew", padded(token)).status == 401


# --- two sessions of one user, in one second ------------------------------------------


def test_two_logins_in_the_same_second_are_two_sessions(live):
    deadline = time.monotonic() + 10
    while True:
        first, second = live.login("alice"), live.login("alice")
        issued = [
            jwt.decode(t, options={"verify_signature": False})["iat"] for t in (first, second)
        ]
        if int(issued[0]) == int(issued[1]):
            break
        assert time.monotonic() < deadline, "no two logins in one second in 10 s"
    assert first != second
    assert live.call("POST", "/@logout", first).status == 204
    assert live.status(first) == 401
    assert live.status(second) == 200
    # A renewal right after the logout is a new token, never the revoked one.
    renewed = live.call("POST", "/@login-renew", second).body["token"]
    assert renewed not in (first, second)
    assert live.status(renewed) == 200


# --- a user removed and added again, a new password, a new role -----------------------


def _session(backend):
    return Session(backend.engine)


def test_a_login_removed_and_added_again_refuses_its_old_tokens(live, backend):
    deadline = time.monotonic() + 20
    password = PASSWORDS["alice"]
    for attempt in range(1000):
        old = live.login("alice", password)
        # Known to the server (its identity remembered), with a job and a ticket.
        job = live.call("POST", "/@jobs", old, ECHO).body
        ticket = live.ticket(old).body["ticket"]
        assert live.status(old) == 200
        with _session(backend) as session, session.begin():
            remove_user(session, "alice")
        with _session(backend) as session, session.begin():
            add_user(session, "alice", f"new-password-{attempt}", fullname="Alice")
        password = f"new-password-{attempt}"
        new = live.login("alice", password)
        iat = [jwt.decode(t, options={"verify_signature": False})["iat"] for t in (old, new)]
        if int(iat[0]) == int(iat[1]):
            break  # all within one second: whole seconds could not tell the tokens apart
        assert time.monotonic() < deadline, "could not do it all within one second in 20 s"

    jobs = stored_jobs(backend)
    assert live.status(old) == 401
    assert live.call("POST", "/@jobs", old, ECHO).status == 401
    assert live.call("GET", f"/@jobs/{job['uuid']}", old).status == 401
    assert live.call("POST", "/@login-renew", old).status == 401
    assert live.ticket(old).status == 401
    assert live.call("GET", f"/@jobs/stream?ticket={ticket}").status == 401
    assert stored_jobs(backend) == jobs
    # The new user's token, issued in the same second, works.
    assert live.status(new) == 200
    assert live.call("POST", "/@jobs", new, ECHO).status == 201


def test_a_known_token_is_refused_on_every_path_after_a_password_change(live, backend):
    token = live.login("alice")
    job = live.call("POST", "/@jobs", token, ECHO).body
    # Each path once, so the server remembers the token's identity on each.
    assert live.status(token) == 200
    assert live.call("GET", f"/@jobs/{job['uuid']}", token).status == 200
    with _session(backend) as session, session.begin():
        update_user(session, "alice", password="another-password")
    jobs = stored_jobs(backend)
    assert live.call("POST", "/@jobs", token, ECHO).status == 401
    assert live.status(token) == 401
    assert live.call("GET", f"/@jobs/{job['uuid']}", token).status == 401
    assert stored_jobs(backend) == jobs
    assert (
        live.call("POST", "/@login", body={"login": "alice", "password": "alice-password"}).status
        == 401
    )
    assert live.status(live.login("alice", "another-password")) == 200


def nick_jobs_cli(*args: Any, stdin: str | None = None) -> subprocess.CompletedProcess:
    return processes.run(
        [sys.executable, "-m", "nick_jobs.cli", *map(str, args)],
        capture_output=True,
        text=True,
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        env=_env(),
        cwd=ROOT,
        timeout=60,
    )


def test_users_update_ends_tokens_on_a_new_password_or_role_only(live, backend):
    ini = live.ini
    token = live.login("bob")
    # A new name alone: the tokens stay.
    proc = nick_jobs_cli("users", "update", ini, "bob", "--fullname", "Robert")
    assert proc.returncode == 0, proc.stderr
    assert "ended" not in proc.stdout
    assert live.status(token) == 200
    assert live.call("POST", "/@login-renew", token).status == 200
    # The same roles again: nothing to end either.
    proc = nick_jobs_cli("users", "update", ini, "bob", "--no-roles")
    assert proc.returncode == 0, proc.stderr
    assert live.status(token) == 200
    # A role: every token issued before is ended.
    proc = nick_jobs_cli("users", "update", ini, "bob", "--role", "Administrator")
    assert proc.returncode == 0, proc.stderr
    assert "ended" in proc.stdout
    assert live.status(token) == 401
    token = live.login("bob")
    assert live.call("POST", "/@jobs", token, {"params": {"action": "dummy"}}).status == 201
    # A password.
    proc = nick_jobs_cli("users", "update", ini, "bob", "--password", "n3w")
    assert proc.returncode == 0, proc.stderr
    assert live.status(token) == 401
    token = live.login("bob", "n3w")
    assert live.status(token) == 200
    # Read from standard input.
    proc = nick_jobs_cli("users", "update", ini, "bob", "--password", "-", stdin="a phrase\n")
    assert proc.returncode == 0, proc.stderr
    assert live.status(token) == 401
    assert live.status(live.login("bob", "a phrase")) == 200
    with _session(backend) as session:
        user = session.get(User, "bob")
        assert (user.fullname, user.roles) == ("Robert", ["Administrator"])


def test_users_update_refuses_what_it_cannot_do(live):
    ini = live.ini
    proc = nick_jobs_cli("users", "update", ini, "nobody", "--password", "x")
    assert proc.returncode == 1
    assert proc.stderr == "nick-jobs: no user 'nobody'\n"
    proc = nick_jobs_cli("users", "update", ini, "bob", "--password", "")
    assert proc.returncode == 1
    assert proc.stderr == "nick-jobs: a password can't be empty\n"
    proc = nick_jobs_cli("users", "update", ini, "bob")
    assert proc.returncode == 2
    assert proc.stderr.startswith("nick-jobs: nothing to change")
    assert live.status(live.login("bob")) == 200


def test_a_ticket_dies_with_a_password_change(live, backend):
    token = live.login("alice")
    ticket = live.ticket(token).body["ticket"]
    with _session(backend) as session, session.begin():
        update_user(session, "alice", password="another-password")
    assert live.call("GET", f"/@jobs/stream?ticket={ticket}").status == 401


def test_host_tokens_are_dated_in_whole_seconds(live, backend):
    with _session(backend) as session, session.begin():
        user, _ = update_user(session, "alice", password="another-password")
        after = user.tokens_after
    second = int(after.timestamp())

    def host_token(**claims: Any) -> str:
        return jwt.encode({"sub": "alice", "fullname": "Alice", **claims}, JWT_SECRET, "HS256")

    # Issued in the second of the change, maybe after it: can't tell, so refused.
    assert live.status(host_token(iat=second, exp=second + 3600)) == 401
    assert live.status(host_token(iat=second + 1, exp=second + 3600)) == 200
    # Without iat (as plone.restapi signs them): dated exp minus the lifetime.
    lifetime = int(backend.settings.get("nick_jobs.jwt_lifetime", 12 * 3600))
    assert live.status(host_token(exp=second + lifetime)) == 401
    assert live.status(host_token(exp=second + 1 + lifetime)) == 200


# --- the parser: one spelling per token -----------------------------------------------


def _settings():
    return parse(base_settings(**{"sqlalchemy.url": "sqlite://"}))


@pytest.fixture
def token() -> str:
    tokens._VERIFIED.clear()
    yield tokens.issue(_settings(), "alice", "Alice")
    tokens._VERIFIED.clear()


def _last_char_variants(segment: str) -> list[str]:
    """Other spellings of a segment: its last character with other unused low bits."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    head = segment[:-1]
    return [
        head + c
        for c in alphabet
        if c != segment[-1]
        and base64.urlsafe_b64decode(head + c + "=" * (-len(segment) % 4)) == data
    ]


def respellings(token: str) -> dict[str, str]:
    header, payload, signature = token.split(".")
    variants = {
        "one = of padding": token + "=",
        "two = of padding": token + "==",
        "padding inside": f"{header}=.{payload}.{signature}",
        "a space inside": f"{header}.{payload}.{signature[:10]} {signature[10:]}",
        "a newline at the end": token + "\n",
        "a character outside the alphabet": f"{header}.{payload}.{signature[:10]}!{signature[10:]}",
        "standard base64 alphabet": token.replace("-", "+").replace("_", "/"),
    }
    for i, other in enumerate(_last_char_variants(signature)):
        variants[f"unused bits set {i}"] = f"{header}.{payload}.{other}"
    return variants


def test_pyjwt_alone_accepts_other_spellings_of_a_token(token):
    # Why nick-jobs checks the spelling itself: PyJWT takes base64 padding (some issuers
    # send it), and what else it takes depends on its version.
    accepted = []
    for name, spelling in respellings(token).items():
        with contextlib.suppress(jwt.InvalidTokenError):
            jwt.decode(spelling, JWT_SECRET, algorithms=["HS256"])
            accepted.append(name)
    assert "one = of padding" in accepted


@pytest.mark.parametrize(
    "name",
    [
        "one = of padding",
        "two = of padding",
        "padding inside",
        "a space inside",
        "a newline at the end",
        "a character outside the alphabet",
        "unused bits set 0",
    ],
)
def test_only_the_canonical_spelling_of_a_token_is_accepted(token, name):
    settings = _settings()
    assert tokens.decode(settings, token).sub == "alice"
    with pytest.raises(tokens.InvalidToken):
        tokens.decode(settings, respellings(token)[name])
    # Refused again, and never remembered as valid.
    with pytest.raises(tokens.InvalidToken):
        tokens.decode(settings, respellings(token)[name])
    assert [key[0] for key in tokens._VERIFIED] == [token]


def test_every_token_is_its_own_and_its_fingerprint_is_its_identity():
    settings = _settings()
    now = dt.datetime.now(dt.UTC)
    first = tokens.issue(settings, "alice", "Alice", now=now)
    second = tokens.issue(settings, "alice", "Alice", now=now)
    assert first != second
    a, b = tokens.decode(settings, first), tokens.decode(settings, second)
    assert a.fingerprint != b.fingerprint
    assert a.fingerprint == tokens.fingerprint(first)
    # The issue time keeps its microseconds, exactly.
    assert a.issued == now
    # Without jti (a host's token), the fingerprint is the canonical text's SHA-256, as
    # revocations stored before jti existed.
    host = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, JWT_SECRET, "HS256")
    assert tokens.fingerprint(host) == tokens.decode(settings, host).fingerprint
    assert tokens.fingerprint(host) == hashlib.sha256(host.encode()).hexdigest()


def test_a_ticket_carries_its_tokens_issue_time():
    settings = _settings()
    now = dt.datetime.now(dt.UTC)
    token = tokens.decode(settings, tokens.issue(settings, "alice", "Alice", now=now))
    path = "/@jobs/stream"
    ticket, _ = tickets.issue(settings, "alice", token.fingerprint, path, now, token.issued)
    assert tickets.decode(settings, ticket, path) == ("alice", token.fingerprint, now)
    # One from a node that does not write the token's time: its own, in whole seconds.
    ticket, _ = tickets.issue(settings, "alice", token.fingerprint, path, now)
    _, _, issued = tickets.decode(settings, ticket, path)
    assert issued == now.replace(microsecond=0)
