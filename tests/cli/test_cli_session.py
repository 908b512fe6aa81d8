"""The current server and the stored session of the ``nick-jobs`` console script: ``login
URL``, the server's precedence, ``nick-jobs server``, and expired or refused tokens, against
a live server."""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest

from nick_jobs_client import DEFAULT_URL, JOB_STATUSES, Client, ClientError, token_expiry
from nick_jobs_client.cli.commands import EXIT_AUTH, EXIT_UNAVAILABLE, EXIT_USAGE
from nick_jobs_client.cli.sessions import utc_text
from tests import processes
from tests.cli.test_client_cli import CLIENT_VARIABLES, SCRIPT, assert_fails
from tests.client.test_client import USERS, LiveServer, live_server
from tests.conftest import ROOT
from tests.netutil import free_port

# The secret live_server() signs its tokens with: an expired token made with it is one the
# server itself refuses as expired.
SERVER_SECRET = "client-tests-" + "x" * 40


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("cli-session")) as live:
        yield live


def nick_jobs(
    home: Path, *args: Any, stdin: str | None = None, url: str | None = None, **env: str
) -> subprocess.CompletedProcess:
    """Run the console script with ``home`` as its config home and no ``$NICK_JOBS_URL``
    unless ``url`` is given: the server is then the current one, or the default."""
    environment = {k: v for k, v in os.environ.items() if k not in CLIENT_VARIABLES}
    environment.update({"XDG_CONFIG_HOME": str(home), **env})
    if url is not None:
        environment["NICK_JOBS_URL"] = url
    return processes.run(
        [str(SCRIPT), *map(str, args)],
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        timeout=30,
    )


def login(home: Path, *args: Any, user: str = "alice", **kw: Any) -> subprocess.CompletedProcess:
    proc = nick_jobs(home, "login", *args, stdin=USERS[user][0] + "\n", **kw)
    assert proc.returncode == 0, proc.stderr
    return proc


def config(home: Path) -> dict[str, Any]:
    return json.loads((home / "nick-jobs" / "config.json").read_text())


def tokens(home: Path) -> dict[str, Any]:
    return json.loads((home / "nick-jobs" / "tokens.json").read_text())


def expired_token(login: str = "alice", ago: int = 3600) -> str:
    """A token the server signed-alike, which expired ``ago`` seconds ago."""
    now = int(time.time())
    payload = {"sub": login, "fullname": login.title(), "iat": now - ago - 60, "exp": now - ago}
    return jwt.encode(payload, SERVER_SECRET, algorithm="HS256")


def store(home: Path, url: str, token: str, *, current: bool = True) -> None:
    directory = home / "nick-jobs"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    (directory / "tokens.json").write_text(json.dumps({url: {"login": "alice", "token": token}}))
    if current:
        (directory / "config.json").write_text(json.dumps({"server": url}))


def server_info(home: Path, *args: Any, **kw: Any) -> dict[str, Any]:
    proc = nick_jobs(home, "server", "-o", "json", *args, **kw)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# --- the current server ----------------------------------------------------------------


def test_login_with_a_url_makes_it_the_current_server_of_later_commands(server, tmp_path):
    proc = login(tmp_path, server.url + "/", "alice")
    assert proc.stdout.splitlines() == [
        f"Logged in to {server.url} as alice; the token is in "
        f"{tmp_path / 'nick-jobs' / 'tokens.json'}.",
        f"{server.url} is now the current server.",
    ]
    assert config(tmp_path) == {"server": server.url}
    path = tmp_path / "nick-jobs" / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    # No --server, no $NICK_JOBS_URL: the default (localhost:8080) would not answer.
    listed = nick_jobs(tmp_path, "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    info = server_info(tmp_path)
    expires = token_expiry(tokens(tmp_path)[server.url]["token"])
    assert expires is not None
    assert expires > datetime.now(UTC)
    assert info == {
        "server": server.url,
        "source": "current",
        "current": server.url,
        "login": "alice",
        "session": "valid",
        "expires": expires.isoformat(),
    }
    table = nick_jobs(tmp_path, "server", "-o", "table")
    assert table.stdout.splitlines() == [
        f"server:   {server.url}  (the current server)",
        "login:    alice",
        f"session:  valid until {utc_text(expires)}",
    ]
    assert nick_jobs(tmp_path, "server", "-q").stdout == f"{server.url}\n"

    # Logging in to the current server again does not announce it again.
    again = login(tmp_path, server.url, "alice")
    assert "current server" not in again.stdout


def test_login_still_takes_the_login_alone_with_the_server_from_the_option(server, tmp_path):
    proc = login(tmp_path, "alice", "-s", server.url)
    assert proc.stdout.startswith(f"Logged in to {server.url} as alice")
    assert config(tmp_path) == {"server": server.url}
    assert tokens(tmp_path)[server.url]["login"] == "alice"

    # Or from the environment variable.
    other = tmp_path / "env"
    login(other, "alice", url=server.url)
    assert config(other) == {"server": server.url}


def test_login_refuses_two_logins_and_two_servers(server, tmp_path):
    assert_fails(
        nick_jobs(tmp_path, "login", "alice", "bob", stdin="x\n"),
        EXIT_USAGE,
        "not a URL: 'alice' (a URL starts with http:// or https://)",
    )
    other = f"http://127.0.0.1:{free_port()}"
    assert_fails(
        nick_jobs(tmp_path, "login", server.url, "alice", "-s", other, stdin="x\n"),
        EXIT_USAGE,
        "give the server once: as the URL or with --server",
    )
    # The same server both ways is no contradiction.
    login(tmp_path, server.url, "alice", "-s", server.url + "/")
    assert config(tmp_path) == {"server": server.url}


def test_the_option_then_the_variable_then_the_current_server_then_the_default(server, tmp_path):
    fresh = tmp_path / "fresh"
    info = server_info(fresh)
    assert (info["server"], info["source"], info["current"]) == (DEFAULT_URL, "default", None)

    login(tmp_path, server.url, "alice")
    down = f"http://127.0.0.1:{free_port()}"

    # The variable beats the current server: the command goes to the server that is down.
    assert server_info(tmp_path, url=down)["source"] == "environment"
    proc = nick_jobs(tmp_path, "list", url=down)
    assert proc.returncode == EXIT_UNAVAILABLE, proc.stderr
    assert proc.stderr.startswith(f"nick-jobs: can't reach {down}")

    # The option beats the variable.
    info = server_info(tmp_path, "-s", server.url, url=down)
    assert (info["server"], info["source"], info["session"]) == (server.url, "option", "valid")
    assert nick_jobs(tmp_path, "list", "-s", server.url, url=down).returncode == 0
    table = nick_jobs(tmp_path, "server", "-s", down, "-o", "table").stdout.splitlines()
    assert table[:3] == [
        f"server:   {down}  (from --server)",
        f"current:  {server.url}",
        "login:    -",
    ]

    # `server URL` chooses the current server without logging in.
    info = server_info(tmp_path, down + "/")
    assert (info["server"], info["current"], info["session"]) == (down, down, "none")
    assert nick_jobs(tmp_path, "list").returncode == EXIT_UNAVAILABLE
    assert server_info(tmp_path, server.url)["session"] == "valid"
    assert nick_jobs(tmp_path, "list").returncode == 0

    # With the variable set, `server URL` still chooses the current server, and tells that
    # the variable comes first.
    info = server_info(tmp_path, down, url=server.url)
    assert (info["server"], info["source"], info["current"]) == (server.url, "environment", down)


def test_logout_keeps_the_current_server(server, tmp_path):
    login(tmp_path, server.url, "carol", user="carol")
    proc = nick_jobs(tmp_path, "logout")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"Logged out of {server.url}.\n"
    assert config(tmp_path) == {"server": server.url}
    assert tokens(tmp_path) == {}
    info = server_info(tmp_path)
    assert (info["server"], info["session"], info["login"]) == (server.url, "none", None)
    assert_fails(
        nick_jobs(tmp_path, "list"),
        EXIT_AUTH,
        "You are not authorized to access this resource. "
        f"(log in with: nick-jobs login -s {server.url})",
    )


# --- an expired session ----------------------------------------------------------------


def test_an_expired_session_is_not_sent(tmp_path):
    """The expired token's server listens, and is never connected to."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        token = expired_token()
        store(tmp_path, url, token)
        expires = token_expiry(token)
        assert expires is not None
        message = f"your session at {url} expired at {utc_text(expires)}; log in again: "
        for command in (("list",), ("get", "x"), ("submit", "dummy"), ("status",)):
            assert_fails(nick_jobs(tmp_path, *command), EXIT_AUTH, message + "nick-jobs login")
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_an_expired_session_with_the_server_from_the_option_names_it(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    token = expired_token()
    store(tmp_path, url, token, current=False)
    expires = utc_text(token_expiry(token))  # type: ignore[arg-type]
    # `nick-jobs login` alone would log in to the default server: the hint names this one.
    assert_fails(
        nick_jobs(tmp_path, "list", "-s", url),
        EXIT_AUTH,
        f"your session at {url} expired at {expires}; log in again: nick-jobs login {url}",
    )


def test_an_expired_session_shows_in_server_and_status_and_logout_forgets_it(server, tmp_path):
    token = expired_token()
    with pytest.raises(ClientError) as refused:  # the server agrees that it has expired
        Client(server.url, token).list_jobs()
    assert refused.value.status == 401
    store(tmp_path, server.url, token)
    expires = token_expiry(token)
    assert expires is not None

    info = server_info(tmp_path)
    assert (info["session"], info["expires"]) == ("expired", expires.isoformat())
    table = nick_jobs(tmp_path, "server", "-o", "table").stdout.splitlines()
    assert table[-1] == f"session:  expired at {utc_text(expires)}"
    plain = nick_jobs(tmp_path, "server", "-o", "plain").stdout.splitlines()
    assert plain[-1] == f"session\texpired\t{expires.isoformat()}"
    assert_fails(
        nick_jobs(tmp_path, "status"),
        EXIT_AUTH,
        f"your session at {server.url} expired at {utc_text(expires)}; "
        "log in again: nick-jobs login",
    )

    # Health needs no token: the expired one is not sent, and the server answers.
    health = nick_jobs(tmp_path, "health")
    assert health.returncode == 0, health.stderr

    # Logging out only forgets it: the server refuses it already.
    logout = nick_jobs(tmp_path, "logout")
    assert logout.returncode == 0, logout.stderr
    assert logout.stdout == (
        f"Logged out of {server.url}. (the session had expired at {utc_text(expires)})\n"
    )
    assert tokens(tmp_path) == {}
    assert config(tmp_path) == {"server": server.url}


def test_a_refused_session_that_looked_valid_says_so(server, tmp_path):
    login(tmp_path, server.url, "carol", user="carol")
    token = tokens(tmp_path)[server.url]["token"]
    Client(server.url, token).logout()  # revoked elsewhere: it has not expired
    expires = token_expiry(token)
    assert expires is not None
    assert expires > datetime.now(UTC)
    assert_fails(
        nick_jobs(tmp_path, "list"),
        EXIT_AUTH,
        "You are not authorized to access this resource. "
        f"(your session at {server.url}, valid until {utc_text(expires)}, was refused: the "
        "server revoked it or no longer accepts it; log in again: nick-jobs login)",
    )


def test_status_tells_the_session_on_stderr_and_the_counts_on_stdout(server, tmp_path):
    login(tmp_path, server.url, "alice")
    expires = token_expiry(tokens(tmp_path)[server.url]["token"])
    assert expires is not None
    proc = nick_jobs(tmp_path, "status", "-o", "plain")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == f"{server.url}: logged in as alice, valid until {utc_text(expires)}\n"
    assert proc.stdout.splitlines() == [f"{status}\t0" for status in JOB_STATUSES]
    quiet = nick_jobs(tmp_path, "status", "-q")
    assert (quiet.returncode, quiet.stderr) == (0, "")


# --- reading a token's expiry ----------------------------------------------------------


def _segment(data: Any) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_token_expiry_reads_exp_without_the_key(server):
    token = server.client("alice").token
    claims = jwt.decode(token, options={"verify_signature": False})
    assert token_expiry(token) == datetime.fromtimestamp(claims["exp"], UTC)
    # A fractional exp, as RFC 7519 allows; the signature is not looked at.
    assert token_expiry(f"h.{_segment({'exp': 1.5})}.sig") == datetime.fromtimestamp(1.5, UTC)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-a-jwt",
        "a.b",
        f"h.{_segment({'sub': 'alice'})}.s",  # no exp
        f"h.{_segment({'exp': 'tomorrow'})}.s",
        f"h.{_segment({'exp': True})}.s",
        f"h.{_segment({'exp': 1e300})}.s",  # out of range
        f"h.{_segment([1, 2])}.s",  # not an object
        f"h.{_segment(b'not json')}.s",
        "h.!!!.s",  # not base64
    ],
)
def test_token_expiry_is_none_when_it_can_not_be_read(token):
    assert token_expiry(token) is None
