"""The ``nick_jobs.commands`` entry-point group: another distribution adds its commands to
``nick-jobs``, as the server does; one that can't does not take the others down.

Each test puts a small distribution of its own (a ``.dist-info`` folder and a module) on
the path of a real ``nick-jobs`` process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from nick_jobs_client.cli.commands import COMMANDS
from tests import processes

SERVER_COMMANDS = {"serve", "migrate", "worker", "sweep", "users", "tokens", "scheduler"}

HELLO = """
def add_commands(subparsers):
    hello = subparsers.add_parser("hello", help="say hello")
    hello.set_defaults(func=lambda args: print("hello from a plugin") or 0)
"""


def distribution(folder: Path, entry_points: str, module: str = "") -> Path:
    """A distribution ``extra-commands`` installed in ``folder``, with these entry points
    and, when given, the module ``extra_commands``."""
    info = folder / "extra_commands-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: extra-commands\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[nick_jobs.commands]\n{entry_points}\n")
    if module:
        (folder / "extra_commands.py").write_text(module)
    return folder


def nick_jobs(path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(path)}
    return processes.run(
        [sys.executable, "-m", "nick_jobs_client.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def listed_commands(help_text: str) -> set[str]:
    match = re.search(r"\{([a-z,-]+)\}", help_text)
    assert match, help_text
    return set(match.group(1).split(","))


def test_a_distribution_adds_its_commands_beside_the_clients_and_the_servers(tmp_path):
    path = distribution(tmp_path, "extra = extra_commands:add_commands", HELLO)
    helped = nick_jobs(path, "--help")
    assert helped.returncode == 0, helped.stderr
    assert listed_commands(helped.stdout) == set(COMMANDS) | SERVER_COMMANDS | {"hello"}
    said = nick_jobs(path, "hello")
    assert (said.returncode, said.stdout, said.stderr) == (0, "hello from a plugin\n", "")


def test_commands_that_fail_to_load_leave_the_others_working(tmp_path):
    path = distribution(tmp_path, "broken = no_such_module:add_commands")
    proc = nick_jobs(path, "--help")
    assert proc.returncode == 0, proc.stderr
    assert listed_commands(proc.stdout) == set(COMMANDS) | SERVER_COMMANDS
    assert proc.stderr.startswith("nick-jobs: warning: the commands 'broken' ")
    assert "No module named 'no_such_module'" in proc.stderr


def test_a_command_name_taken_already_is_refused_with_a_warning(tmp_path):
    module = HELLO.replace('"hello"', '"login"')
    path = distribution(tmp_path, "clash = extra_commands:add_commands", module)
    proc = nick_jobs(path, "login", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Log in to a nick-jobs server" in proc.stdout  # the client's login
    assert proc.stderr.startswith("nick-jobs: warning: the commands 'clash' were not added: ")
