"""Service tokens (nick_jobs.users.service_tokens, ``nick-jobs tokens``): long-lived,
named tokens of a machine's user, listed without their text and revoked at once."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pyramid.paster import get_appsettings
from sqlalchemy.orm import Session

from nick_jobs.settings import parse
from nick_jobs.users import service_tokens, tokens
from tests.cli.test_cli import assert_clean_error, nick_jobs, sqlite_settings
from tests.conftest import write_ini


def settings_of(app):
    return app.app.registry["nick_jobs.settings"]


def make_token(app, login: str = "alice", name: str = "reindexer", **kwargs) -> str:
    with Session(app.backend.engine) as session, session.begin():
        token, _ = service_tokens.create(session, settings_of(app), login, name, **kwargs)
    return token


def test_a_service_token_acts_as_its_user_for_its_lifetime(app):
    token = make_token(app, lifetime=dt.timedelta(days=90))
    res = app.get("/@jobs", headers={"Authorization": f"Bearer {token}"})
    assert res.status_int == 200
    claims = tokens.decode(settings_of(app), token)
    assert claims.sub == "alice"
    lifetime = claims.exp - claims.issued
    assert dt.timedelta(days=90) - dt.timedelta(seconds=1) <= lifetime <= dt.timedelta(days=90)


def test_a_revoked_service_token_is_refused_at_once(app):
    token = make_token(app)
    headers = {"Authorization": f"Bearer {token}"}
    app.get("/@jobs", headers=headers, status=200)
    with Session(app.backend.engine) as session, session.begin():
        row = service_tokens.revoke(session, settings_of(app), "alice", "reindexer")
        assert row.revoked is not None
    res = app.get("/@jobs", headers=headers, status=401)
    assert res.json["error"]["type"] in {"Invalid session", "Unauthorized"}
    # The user's other tokens are not touched.
    app.get("/@jobs", headers=app.auth("alice"), status=200)


def test_a_name_is_unique_per_user_and_the_user_must_exist(app):
    make_token(app)
    with Session(app.backend.engine) as session:
        with pytest.raises(ValueError, match="already"):
            service_tokens.create(session, settings_of(app), "alice", "reindexer")
        # Another user may use the same name.
        service_tokens.create(session, settings_of(app), "bob", "reindexer")
        with pytest.raises(LookupError, match="no user"):
            service_tokens.create(session, settings_of(app), "nobody", "x")
        with pytest.raises(LookupError, match="no service token"):
            service_tokens.revoke(session, settings_of(app), "alice", "other")


def test_a_new_password_ends_the_users_service_tokens_too(app):
    from nick_jobs.users.accounts import update_user

    token = make_token(app)
    with Session(app.backend.engine) as session, session.begin():
        update_user(session, "alice", password="a-new-password")
    app.get("/@jobs", headers={"Authorization": f"Bearer {token}"}, status=401)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("365d", 365 * 86400), ("12h", 43200), ("90m", 5400), ("2w", 14 * 86400), ("45s", 45)],
)
def test_a_lifetime(text: str, seconds: int) -> None:
    assert service_tokens.parse_lifetime(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "365", "d", "0d", "-1d", "1y", "1.5d", "4000d"])
def test_a_lifetime_that_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="lifetime"):
        service_tokens.parse_lifetime(text)


# --- the command line, on a SQLite file ---------------------------------------------------


@pytest.fixture
def ini(tmp_path: Path) -> Path:
    path = write_ini(tmp_path / "tokens.ini", sqlite_settings(tmp_path / "jobs.sqlite"))
    assert nick_jobs("migrate", path).returncode == 0
    added = nick_jobs("users", "add", path, "prometheus", "--password", "scrape-password")
    assert added.returncode == 0, added.stderr
    return path


def test_the_commands_create_list_and_revoke(ini: Path) -> None:
    made = nick_jobs("tokens", "create", ini, "prometheus", "--name", "metrics", "--expires", "30d")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.count(".") == 2  # the token alone on stdout
    assert "shown only now" in made.stderr
    settings = parse(get_appsettings(str(ini)))
    claims = tokens.decode(settings, token)
    assert claims.sub == "prometheus"
    assert (claims.exp - claims.issued).days in (29, 30)

    listed = nick_jobs("tokens", "list", ini)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split("\t") == ["LOGIN", "NAME", "CREATED", "EXPIRES", "STATE"]
    assert lines[1].split("\t")[:2] == ["prometheus", "metrics"]
    assert lines[1].endswith("\tvalid")
    assert token not in listed.stdout

    again = nick_jobs("tokens", "create", ini, "prometheus", "--name", "metrics")
    assert_clean_error(again, 1, "already")
    revoked = nick_jobs("tokens", "revoke", ini, "prometheus", "metrics")
    assert revoked.returncode == 0, revoked.stderr
    assert nick_jobs("tokens", "list", ini).stdout.splitlines()[1].endswith("\trevoked")
    # Revoking twice is no error: it stays revoked.
    assert nick_jobs("tokens", "revoke", ini, "prometheus", "metrics").returncode == 0
    assert_clean_error(nick_jobs("tokens", "revoke", ini, "prometheus", "nope"), 1, "no service")


def test_the_commands_refuse_a_bad_lifetime_or_user(ini: Path) -> None:
    bad = nick_jobs("tokens", "create", ini, "prometheus", "--name", "m", "--expires", "1y")
    assert_clean_error(bad, 2, "--expires")
    assert_clean_error(nick_jobs("tokens", "create", ini, "ghost", "--name", "m"), 1, "no user")
