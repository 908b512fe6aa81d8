"""What the command line remembers between runs: the current server and a token per server.

Both live in :func:`config_dir` (``$XDG_CONFIG_HOME/nick-jobs``, by default
``~/.config/nick-jobs``), readable by their owner only: ``config.json`` names the current
server (the one ``login`` last logged in to, or ``server URL`` chose) and
``tokens.json`` holds the token ``login`` got from each server.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nick_jobs_client.client import DEFAULT_URL, token_expiry

TOKENS_FILE = "tokens.json"
# The client's settings beside the tokens: for now the current server.
CONFIG_FILE = "config.json"
URL_VARIABLE = "NICK_JOBS_URL"


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/nick-jobs``, by default ``~/.config/nick-jobs``."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.environ.get("APPDATA")
    return Path(base or Path.home() / ".config") / "nick-jobs"


def tokens_path() -> Path:
    return config_dir() / TOKENS_FILE


def config_path() -> Path:
    return config_dir() / CONFIG_FILE


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write ``path`` readable by its owner only (0600, in a 0700 directory)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.chmod(tmp, 0o600)  # in case the file existed with wider permissions
    os.replace(tmp, path)
    return path


def _read_tokens() -> dict[str, Any]:
    return _read_json(tokens_path())


def _write_tokens(tokens: dict[str, Any]) -> Path:
    return _write_json(tokens_path(), tokens)


def current_server() -> str | None:
    """The server ``login`` last logged in to (or ``server URL`` chose), if any."""
    server = _read_json(config_path()).get("server")
    return server if isinstance(server, str) and server else None


def set_current_server(server: str) -> Path:
    config = _read_json(config_path())
    config["server"] = server
    return _write_json(config_path(), config)


def resolve_server(args: argparse.Namespace) -> None:
    """Set ``args.server`` and ``args.server_source``: ``--server``, else the environment
    variable, else the current server, else the default."""
    if args.server:
        args.server_source = "option"
    elif os.environ.get(URL_VARIABLE):
        args.server, args.server_source = os.environ[URL_VARIABLE], "environment"
    elif server := current_server():
        args.server, args.server_source = server, "current"
    else:
        args.server, args.server_source = DEFAULT_URL, "default"


def stored_token(server: str) -> str | None:
    entry = _read_tokens().get(server)
    return entry.get("token") if isinstance(entry, dict) else None


@dataclass(frozen=True)
class StoredSession:
    """The token ``login`` stored for a server, and when it expires (``None``: unknown)."""

    server: str
    login: str
    token: str
    expires: datetime | None

    @property
    def expired(self) -> bool:
        return self.expires is not None and self.expires <= datetime.now(UTC)


def stored_session(server: str) -> StoredSession | None:
    entry = _read_tokens().get(server)
    if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
        return None
    token = entry["token"]
    return StoredSession(server, str(entry.get("login") or ""), token, token_expiry(token))


def utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class SessionExpired(Exception):
    """The stored token has expired: the command stops before sending it."""


def store_token(server: str, login: str, token: str) -> Path:
    tokens = _read_tokens()
    tokens[server] = {"login": login, "token": token}
    return _write_tokens(tokens)


def forget_token(server: str) -> bool:
    tokens = _read_tokens()
    if tokens.pop(server, None) is None:
        return False
    _write_tokens(tokens)
    return True
