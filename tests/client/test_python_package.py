"""The Python client as its own distribution (``clients/python/``, ``nick-jobs-client``):
its version and license are the server's, it declares no dependency and imports nothing
beyond the standard library, and the server carries the same package and adds its
commands to the same ``nick-jobs`` command.

tests/test_client_packaging.py builds and installs it.
"""

from __future__ import annotations

import ast
import configparser
import sys
import tomllib

import nick_jobs.client
import nick_jobs_client
from nick_jobs.cli import admin
from nick_jobs_client.cli import COMMANDS_GROUP, build_parser
from nick_jobs_client.cli.commands import COMMANDS
from tests.conftest import ROOT

CLIENT = ROOT / "clients" / "python"
SERVER_COMMANDS = {"serve", "migrate", "worker", "sweep", "users", "tokens", "scheduler"}


def setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg", encoding="utf-8")
    return cfg


def client_project() -> dict:
    return tomllib.loads((CLIENT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def entry_points(cfg: configparser.ConfigParser, group: str) -> dict[str, str]:
    lines = cfg["options.entry_points"][group].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=", 1)) for line in lines)


def test_the_client_has_the_servers_version_and_license():
    assert client_project()["version"] == setup_cfg()["metadata"]["version"], (
        "clients/python/pyproject.toml's version must be setup.cfg's [metadata] version"
    )
    assert (CLIENT / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()


def test_the_client_declares_no_dependency():
    project = client_project()
    assert project["dependencies"] == []
    assert "optional-dependencies" not in project


def test_the_client_imports_the_standard_library_alone():
    outside = {}
    for path in sorted((CLIENT / "nick_jobs_client").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in {"nick_jobs_client"}:
                    outside.setdefault(str(path.relative_to(CLIENT)), set()).add(name)
    assert outside == {}


def test_both_distributions_install_the_clients_nick_jobs_command():
    script = "nick-jobs = nick_jobs_client.cli:main"
    cfg = setup_cfg()
    assert cfg["options.entry_points"]["console_scripts"].strip() == script
    assert client_project()["scripts"] == {"nick-jobs": "nick_jobs_client.cli:main"}
    # The server adds its own commands to it.
    assert entry_points(cfg, COMMANDS_GROUP) == {
        "server": "nick_jobs.cli.admin:add_server_commands"
    }


def test_the_server_carries_the_clients_package_from_clients_python():
    options = setup_cfg()["options"]
    assert {"nick_jobs_client", "nick_jobs_client.cli"} <= set(options["packages"].split())
    assert options["package_dir"].split() == [
        "nick_jobs_client",
        "=",
        "clients/python/nick_jobs_client",
    ]
    assert nick_jobs_client.__file__ == str(CLIENT / "nick_jobs_client" / "__init__.py")
    assert nick_jobs_client.__version__ == setup_cfg()["metadata"]["version"]


def test_nick_jobs_client_is_the_client_under_its_old_name():
    assert nick_jobs.client.__all__ == [n for n in nick_jobs_client.__all__ if n != "__version__"]
    for name in nick_jobs.client.__all__:
        assert getattr(nick_jobs.client, name) is getattr(nick_jobs_client, name), name


def commands(parser) -> set[str]:
    (subparsers,) = [a for a in parser.arguments if isinstance(a.choices, dict)]
    return set(subparsers.choices)


def test_the_client_parser_has_the_client_commands_and_the_entry_points_ones():
    # This checkout's environment has the server installed: its entry point adds its
    # commands once, however many times it is named.
    parser = build_parser([admin.add_server_commands])
    assert commands(parser) == set(COMMANDS) | SERVER_COMMANDS
    assert commands(admin.build_parser()) == set(COMMANDS) | SERVER_COMMANDS
    assert commands(build_parser()) == set(COMMANDS) | SERVER_COMMANDS
