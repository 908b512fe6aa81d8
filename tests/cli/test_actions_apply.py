"""``nick-jobs actions apply CONFIG FILE``: remote actions declared in a YAML or JSON file,
applied to a SQLite file and to a PostgreSQL database.

The first test runs the real console script; the others run the same ``main`` in this
process, its output captured, as the script would (a new interpreter's imports cost
more than the command itself).
"""

from __future__ import annotations

import contextlib
import io
import json
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import webtest

from nick_jobs import main
from nick_jobs.cli import admin
from nick_jobs.cli.admin import add_server_commands
from nick_jobs.db import get_engine, migrations
from nick_jobs.jobs import remote_actions
from nick_jobs_client.cli import build_parser
from nick_jobs_client.cli.commands import add_client_commands
from nick_jobs_client.cli.parser import Parser
from tests.cli.test_cli import assert_clean_error, nick_jobs
from tests.conftest import PG_ADMIN_URL, PG_TEST_DB, base_settings, write_ini

REINDEX = """\
actions:
  reindex:
    title: Reindex a site
    permission: Add Jobs
    params: {type: object, properties: {site: {type: string}}, required: [site]}
    lease: 120
"""


@dataclass
class Database:
    ini: Path
    engine: sa.Engine
    settings: dict[str, str]

    def stored(self) -> dict[str, tuple[int, dict[str, Any]]]:
        """Every remote action: its version and definition."""
        with self.engine.connect() as conn:
            return {a.name: (a.version, a.definition) for a in remote_actions.every(conn)}

    def versions(self, name: str) -> list[tuple[int, str]]:
        with self.engine.connect() as conn:
            return [(v["version"], v["created_by"]) for v in remote_actions.versions(conn, name)]


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path) -> Iterator[Database]:
    """A migrated database of the test's own, and an ini file on it."""
    if request.param == "sqlite":
        url, drop = f"sqlite:///{tmp_path / 'jobs.sqlite'}", None
    else:
        base = request.getfixturevalue("pg_url")
        name = f"{PG_TEST_DB}_apply_{secrets.token_hex(3)}"
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
        url, drop = base.rsplit("/", 1)[0] + f"/{name}", name
    settings = base_settings(**{"sqlalchemy.url": url, "nick_jobs.broker_url": "stub://"})
    engine = get_engine(url)
    migrations.upgrade(engine)
    yield Database(write_ini(tmp_path / "apply.ini", settings), engine, settings)
    engine.dispose()
    if drop:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {drop} WITH (FORCE)"))
        admin.dispose()


def apply(
    db: Database, path: Path, *options: str, script: bool = False
) -> subprocess.CompletedProcess[str]:
    argv = ["actions", "apply", str(db.ini), str(path), *options]
    if script:
        return nick_jobs(*argv)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = admin.main(argv)
        except SystemExit as exc:  # argparse's refusals
            code = exc.code if isinstance(exc.code, int) else 2
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def write(tmp_path: Path, text: str, name: str = "actions.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def lines(proc) -> list[str]:
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout.splitlines()


def test_applying_creates_the_actions_and_applying_again_changes_nothing(db, tmp_path):
    path = write(tmp_path, REINDEX)
    assert lines(apply(db, path, script=True)) == ["created reindex (version 1)"]
    version, definition = db.stored()["reindex"]
    assert version == 1
    assert definition["title"] == "Reindex a site"
    assert definition["permission"] == "Add Jobs"
    assert definition["lease"] == 120
    assert definition["params"]["required"] == ["site"]
    assert definition["max_retries"] == 0  # the defaults PUT fills in
    assert lines(apply(db, path, script=True)) == ["unchanged reindex (version 1)"]
    assert db.stored()["reindex"][0] == 1
    assert [v for v, _ in db.versions("reindex")] == [1]


def test_a_changed_definition_is_a_new_version_made_by_the_by_login(db, tmp_path):
    path = write(tmp_path, REINDEX)
    lines(apply(db, path))
    path.write_text(REINDEX.replace("lease: 120", "lease: 300"))
    assert lines(apply(db, path, "--by", "deploy-bot")) == ["updated reindex (version 1 → 2)"]
    version, definition = db.stored()["reindex"]
    assert (version, definition["lease"]) == (2, 300)
    assert db.versions("reindex")[0] == (2, "deploy-bot")
    # Without --by: cli: and the system user.
    assert db.versions("reindex")[1][1].startswith("cli")


def test_a_dry_run_says_what_would_change_and_writes_nothing(db, tmp_path):
    path = write(tmp_path, REINDEX)
    assert lines(apply(db, path, "--dry-run")) == ["would create reindex (version 1)"]
    assert db.stored() == {}
    lines(apply(db, path))
    path.write_text(REINDEX.replace("lease: 120", "lease: 300"))
    assert lines(apply(db, path, "--dry-run")) == ["would update reindex (version 1 → 2)"]
    empty = write(tmp_path, "actions: {}\n", "empty.yaml")
    assert lines(apply(db, empty, "--prune", "--dry-run")) == ["would delete reindex"]
    version, definition = db.stored()["reindex"]
    assert (version, definition["lease"]) == (1, 120)
    assert [v for v, _ in db.versions("reindex")] == [1]


def test_prune_deletes_the_remote_actions_the_file_does_not_name(db, tmp_path):
    both = REINDEX + "  old-thing:\n    title: Gone soon\n"
    lines(apply(db, write(tmp_path, both)))
    assert set(db.stored()) == {"reindex", "old-thing"}
    path = write(tmp_path, REINDEX, "one.yaml")
    # Without --prune an action left out of the file stays.
    assert lines(apply(db, path)) == ["unchanged reindex (version 1)"]
    assert set(db.stored()) == {"reindex", "old-thing"}
    assert lines(apply(db, path, "--prune")) == [
        "unchanged reindex (version 1)",
        "deleted old-thing",
    ]
    assert set(db.stored()) == {"reindex"}
    # Its versions stay, as its jobs name them; made again, it goes on after them.
    assert [v for v, _ in db.versions("old-thing")] == [1]
    assert lines(apply(db, write(tmp_path, both))) == [
        "created old-thing (version 2)",
        "unchanged reindex (version 1)",
    ]


def test_a_json_file_applies_as_a_yaml_one(db, tmp_path):
    data = {
        "actions": {
            "reindex": {"title": "Reindex a site", "lease": 120},
            "export": {"permission": "View Jobs", "max_retries": 3},
        }
    }
    path = write(tmp_path, json.dumps(data), "actions.json")
    assert lines(apply(db, path)) == ["created export (version 1)", "created reindex (version 1)"]
    stored = db.stored()
    assert stored["export"][1]["max_retries"] == 3
    assert stored["reindex"][1]["lease"] == 120


INVALID = {
    "yaml-syntax": ("actions.yaml", "actions:\n  reindex: {title: [unclosed\n", ["not valid YAML"]),
    "yaml-date": (
        "actions.yaml",
        "actions:\n  reindex: {title: 2024-01-01}\n",
        ["a value JSON has no type for"],
    ),
    "json-syntax": ("actions.json", '{"actions": {', ["not valid JSON"]),
    "bad-field": (
        "actions.yaml",
        "actions:\n  reindex: {lease: 1}\n  export: {colour: red}\n",
        ["reindex: lease: ", "export: colour: Unknown field."],
    ),
    "bad-schema": (
        "actions.yaml",
        "actions:\n  reindex: {params: {type: nothing}}\n",
        ["reindex: params: Not a valid JSON Schema"],
    ),
    "python-action": (
        "actions.yaml",
        "actions:\n  reindex: {title: ok}\n  echo: {title: mine}\n",
        ["echo: a Python action"],
    ),
    "bad-name": ("actions.yaml", "actions:\n  'no spaces': {}\n", ["'no spaces': not an action"]),
    "no-actions-key": ("actions.yaml", "reindex: {title: x}\n", ["one mapping, `actions`"]),
    "extension": ("actions.txt", "actions: {}\n", [".yaml, .yml or .json"]),
}


@pytest.mark.parametrize("case", INVALID)
def test_an_invalid_file_applies_nothing(db, tmp_path, case):
    lines(apply(db, write(tmp_path, REINDEX.replace("lease: 120", "lease: 60"), "first.yaml")))
    before = db.stored()
    name, text, words = INVALID[case]
    proc = apply(db, write(tmp_path, text.replace("{title: ok}", "{lease: 90}"), name), "--prune")
    assert_clean_error(proc, 2, *words)
    assert proc.stdout == ""
    assert db.stored() == before
    assert [v for v, _ in db.versions("reindex")] == [1]


def test_a_version_in_the_file_must_be_the_current_one(db, tmp_path):
    lines(apply(db, write(tmp_path, REINDEX)))
    stale = REINDEX.replace("lease: 120", "lease: 200\n    version: 2")
    stale += "  export: {title: Export}\n"
    proc = apply(db, write(tmp_path, stale, "stale.yaml"))
    assert_clean_error(proc, 1, "reindex is at version 1 now", "nothing was applied")
    assert set(db.stored()) == {"reindex"}
    assert db.stored()["reindex"][0] == 1
    current = REINDEX.replace("lease: 120", "lease: 200\n    version: 1")
    assert lines(apply(db, write(tmp_path, current, "current.yaml"))) == [
        "updated reindex (version 1 → 2)"
    ]


def test_the_api_shows_what_was_applied(db, tmp_path):
    lines(apply(db, write(tmp_path, REINDEX)))
    settings = {**db.settings, "nick_jobs.embedded_worker_threads": "0"}
    app = webtest.TestApp(main({}, **settings))
    try:
        from sqlalchemy.orm import Session

        from nick_jobs.users.accounts import add_user

        with Session(db.engine) as session, session.begin():
            add_user(session, "admin", "admin-password", roles=["Administrator"])
        token = app.post_json("/@login", {"login": "admin", "password": "admin-password"}).json
        headers = {"Authorization": f"Bearer {token['token']}", "Accept": "application/json"}
        shown = app.get("/@job-actions/reindex", headers=headers).json
        assert shown["kind"] == "remote"
        assert shown["version"] == 1
        assert shown["title"] == "Reindex a site"
        assert shown["lease"] == 120
        versions = app.get("/@job-actions/reindex/versions", headers=headers).json
        assert [v["version"] for v in versions] == [1]
        assert versions[0]["created_by"].startswith("cli")
    finally:
        app.app.registry["nick_jobs.queue"].stop_embedded_worker()


# --- the command line's shape ---------------------------------------------------------------


def test_the_client_alone_keeps_a_bare_actions_command():
    parser = Parser(prog="nick-jobs")
    add_client_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["actions", "--search", "re"])
    assert args.search == "re"
    assert not hasattr(args, "config")
    with pytest.raises(SystemExit):
        parser.parse_args(["actions", "apply", "x.ini", "a.yaml"])


def test_with_the_server_actions_lists_and_actions_apply_applies():
    parser = build_parser([add_server_commands])
    listed = parser.parse_args(["actions", "-q"])
    applying = parser.parse_args(["actions", "apply", "x.ini", "a.yaml", "--prune"])
    assert listed.actions_command is None
    assert listed.func is not applying.func
    assert applying.actions_command == "apply"
    assert (applying.config, applying.file, applying.prune, applying.dry_run) == (
        "x.ini",
        "a.yaml",
        True,
        False,
    )
