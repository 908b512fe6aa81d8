"""A token checked once is not checked again until it expires (nick_jobs.users.tokens)."""

from __future__ import annotations

import datetime as dt
import time

import jwt
import pytest

from nick_jobs.settings import parse
from nick_jobs.users import tokens
from tests.conftest import base_settings


def settings(**overrides: str):
    return parse(base_settings(**{"sqlalchemy.url": "sqlite://", **overrides}))


@pytest.fixture(autouse=True)
def empty_cache():
    tokens._VERIFIED.clear()
    yield
    tokens._VERIFIED.clear()


def test_a_second_decode_of_the_same_token_is_not_verified_again(monkeypatch):
    s = settings()
    token = tokens.issue(s, "alice", "Alice")
    first = tokens.decode(s, token)
    calls = []
    real_verify = tokens._verify
    monkeypatch.setattr(tokens, "_verify", lambda *a: calls.append(a) or real_verify(*a))
    assert tokens.decode(s, token) == first
    assert calls == []


def test_a_remembered_token_is_refused_once_it_expires():
    s = settings(**{"nick_jobs.jwt_leeway": "0"})
    # exp five seconds ahead (whole seconds, so four to five): valid now, remembered,
    # then expired.
    now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=s.jwt_lifetime_s - 5)
    token = tokens.issue(s, "alice", "Alice", now=now)
    exp = tokens.decode(s, token).exp.timestamp()
    assert tokens._VERIFIED
    deadline = time.monotonic() + 15
    while time.time() <= exp:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with pytest.raises(tokens.InvalidToken, match="expired"):
        tokens.decode(s, token)
    assert not tokens._VERIFIED


def test_the_leeway_applies_to_a_remembered_token():
    s = settings(**{"nick_jobs.jwt_leeway": "30"})
    now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=s.jwt_lifetime_s + 5)
    token = tokens.issue(s, "alice", "Alice", now=now)
    # Expired 5 s ago, within the 30 s leeway: accepted the first time and the second.
    assert tokens.decode(s, token).sub == "alice"
    assert tokens.decode(s, token).sub == "alice"


def test_a_token_remembered_under_one_secret_is_checked_under_another():
    a = settings(**{"nick_jobs.jwt_secret": "a" * 40})
    b = settings(**{"nick_jobs.jwt_secret": "b" * 40})
    token = tokens.issue(a, "alice", "Alice")
    tokens.decode(a, token)
    with pytest.raises(tokens.InvalidToken, match="Signature"):
        tokens.decode(b, token)


def test_a_refused_token_is_not_remembered():
    s = settings()
    token = tokens.issue(s, "alice", "Alice")[:-2] + "xx"
    for _ in range(2):
        with pytest.raises(tokens.InvalidToken):
            tokens.decode(s, token)
    assert not tokens._VERIFIED


def test_the_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(tokens, "VERIFIED_MAX", 5)
    s = settings()
    issued = [tokens.issue(s, f"user{i}", "User") for i in range(8)]
    for token in issued:
        tokens.decode(s, token)
    assert len(tokens._VERIFIED) == 5
    # The oldest went first.
    assert {key[0] for key in tokens._VERIFIED} == set(issued[3:])


def test_a_token_is_dated_by_its_iat_or_else_by_its_expiry():
    s = settings()
    now = dt.datetime.now(dt.UTC)
    assert tokens.decode(s, tokens.issue(s, "alice", "Alice", now=now)).issued == now
    exp = int(now.timestamp()) + 600
    # As plone.restapi signs them: no iat. Dated as if issued with nick-jobs' lifetime.
    host = jwt.encode({"sub": "alice", "exp": exp}, s.jwt_secret, "HS256")
    issued = tokens.decode(s, host).issued
    assert issued == dt.datetime.fromtimestamp(exp - s.jwt_lifetime_s, dt.UTC)
    # An iat that PyJWT would take as a number, but is not one.
    odd = jwt.encode({"sub": "alice", "exp": exp, "iat": str(exp - 600)}, s.jwt_secret, "HS256")
    with pytest.raises(tokens.InvalidToken, match="iat"):
        tokens.decode(s, odd)
