"""The ``nick-jobs`` command line's argument parser: argparse's, remembering its arguments.

Shell completion lists every command, option and choice, and argparse offers no public
way to walk a parser. :class:`Parser` keeps what it is given, through argparse's public
``add_argument``, ``add_subparsers``, argument groups and ``parents``, in
:attr:`Parser.arguments`. Every subparser is one too (argparse makes them of the class
of the parser whose ``add_subparsers`` made them).

A parser with :attr:`Parser.key_values` set takes ``key=value`` words after options too
(``submit dummy --title T steps=3``), which argparse leaves over otherwise: a
``nargs="*"`` positional is taken in one run.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any


class _RecordingGroup:
    """An argument group that tells its parser of each argument added to it."""

    def __init__(self, group: Any, arguments: list[argparse.Action]) -> None:
        self._group = group
        self._arguments = arguments

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action: argparse.Action = self._group.add_argument(*args, **kwargs)
        self._arguments.append(action)
        return action

    def __getattr__(self, name: str) -> Any:
        return getattr(self._group, name)


class Parser(argparse.ArgumentParser):
    #: ``key=value`` words left over after the options join ``params`` (see the module).
    key_values = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Before argparse's own __init__, which adds --help through add_argument.
        self.arguments: list[argparse.Action] = []
        super().__init__(*args, **kwargs)
        for parent in kwargs.get("parents", ()):
            # argparse copies a parent's actions themselves into this parser.
            self.arguments += getattr(parent, "arguments", [])

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.arguments.append(action)
        return action

    def add_subparsers(self, **kwargs: Any) -> Any:
        action = super().add_subparsers(**kwargs)
        self.arguments.append(action)
        return action

    def add_argument_group(self, *args: Any, **kwargs: Any) -> Any:
        return _RecordingGroup(super().add_argument_group(*args, **kwargs), self.arguments)

    def add_mutually_exclusive_group(self, **kwargs: Any) -> Any:
        return _RecordingGroup(super().add_mutually_exclusive_group(**kwargs), self.arguments)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if self.key_values:
            pairs = [word for word in extras if "=" in word and not word.startswith("-")]
            if pairs:
                parsed.params = [*(getattr(parsed, "params", None) or []), *pairs]
                extras = [word for word in extras if word not in pairs]
        return parsed, extras
