"""The ``nick-jobs`` command: the client commands, and the commands other distributions add.

The client commands (``login``, ``list``, ``submit``, ``stream``, ...; see
:mod:`nick_jobs_client.cli.commands`) are always there. Another distribution adds its own
through the entry-point group ``nick_jobs.commands``: each entry point names a callable
that takes the subparsers object of the ``nick-jobs`` parser (what argparse's
``add_subparsers`` returns) and adds its commands to it. The server distribution adds
``migrate``, ``worker``, ``users`` and the rest so, and one ``nick-jobs`` command then
offers both sets::

    [options.entry_points]
    nick_jobs.commands =
        server = nick_jobs.cli.admin:add_server_commands
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from nick_jobs_client.cli.commands import EXIT_OK, add_client_commands
from nick_jobs_client.cli.parser import Parser

__all__ = [
    "COMMANDS_GROUP",
    "AddCommands",
    "PrintVersion",
    "build_parser",
    "main",
    "registered_commands",
]

COMMANDS_GROUP = "nick_jobs.commands"

#: What an entry point of ``nick_jobs.commands`` names: it adds commands to the
#: subparsers object it is given (argparse keeps that class private, hence ``Any``).
AddCommands = Callable[[Any], None]


class PrintVersion(argparse.Action):
    """``--version``: argparse's own action, with the version looked up only when asked
    (reading the package metadata would cost every other command its time)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", "print the version of nick-jobs and exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        import nick_jobs_client

        print(f"nick-jobs {nick_jobs_client.__version__}")
        parser.exit(EXIT_OK)


def registered_commands() -> dict[str, AddCommands]:
    """The callables of the ``nick_jobs.commands`` entry points, by name.

    One that fails to load (a distribution half removed, say), or later to add its
    commands, is left out with a warning: the client commands and the other
    distributions' still work.
    """
    from importlib.metadata import entry_points

    found: dict[str, AddCommands] = {}
    for entry_point in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        try:
            found[entry_point.name] = entry_point.load()
        except Exception as exc:
            _warn(f"the commands {entry_point.name!r} ({entry_point.value}) were not loaded: {exc}")
    return found


def _warn(message: str) -> None:
    print(f"nick-jobs: warning: {message}", file=sys.stderr)


def build_parser(commands: Sequence[AddCommands] = ()) -> Parser:
    """The ``nick-jobs`` parser: the client commands, then ``commands``, then those of the
    ``nick_jobs.commands`` entry points that ``commands`` does not already hold."""
    parser = Parser(
        prog="nick-jobs",
        description="Submit, show and manage the jobs of a nick-jobs server; with the server "
        "installed, also serve the API, migrate the database, run workers and manage users.",
    )
    parser.add_argument("--version", action=PrintVersion)
    sub = parser.add_subparsers(dest="command", required=True)
    add_client_commands(sub)
    for add in commands:
        add(sub)
    added = list(commands)
    for name, add in registered_commands().items():
        if add in added:
            continue
        added.append(add)
        try:
            add(sub)
        except Exception as exc:  # a name another command has, say: argparse refuses it
            _warn(f"the commands {name!r} were not added: {exc}")
    # Named in the usage and in the "required" error, which otherwise says "command".
    sub.metavar = "{" + ",".join(sub.choices) + "}"
    # `nick-jobs completion` writes its script from the whole parser.
    parser.set_defaults(root_parser=parser)
    return parser


def main(argv: Sequence[str] | None = None, commands: Sequence[AddCommands] = ()) -> int:
    """Run ``nick-jobs`` with ``argv`` (default: the process's arguments)."""
    args = build_parser(commands).parse_args(argv)
    code: int = args.func(args)
    return code
