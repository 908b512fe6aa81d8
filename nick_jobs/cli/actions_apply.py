"""``nick-jobs actions apply CONFIG FILE``: the remote actions a YAML or JSON file declares,
written to the database of the ini file ``CONFIG`` in one transaction.

The file holds one mapping, ``actions``, of action names to definitions, each the object
``PUT /@job-actions/{name}`` takes (:func:`nick_jobs.jobs.remote_actions.load_definition`)::

    actions:
      reindex:
        title: Reindex a site
        permission: Add Jobs
        params: {type: object, properties: {site: {type: string}}, required: [site]}
        lease: 120

The whole file is checked before anything is written: one bad definition, or a name that
is a Python action's, and nothing is applied. Each action is then created, changed (a new
version) or left as it is when its definition is the stored one; ``--prune`` deletes the
remote actions the file does not name; ``--dry-run`` does all of it, rolls back, and
says what it would have done.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import marshmallow
import yaml
from sqlalchemy.orm import Session

from nick_jobs.jobs import remote_actions

if TYPE_CHECKING:
    import sqlalchemy as sa

    from nick_jobs.jobs.actions import ActionRegistry

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2

# Who the versions written say made them, unless --by names someone.
BY_PREFIX = "cli:"

_NAME = re.compile(remote_actions.NAME)


class InvalidFile(Exception):
    """The file can't be applied: each of ``problems`` is one line that says why."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(problems)
        self.problems = problems


class Conflict(Exception):
    """An action is no longer at the version its definition in the file gives."""

    def __init__(self, name: str, current: int | None) -> None:
        super().__init__(name, current)
        self.name = name
        self.current = current


@dataclass(frozen=True)
class Declared:
    """One action of the file, checked: its stored definition and the version, if the
    file gives one, that it must be changed from."""

    name: str
    definition: dict[str, Any]
    from_version: int | None


def default_by() -> str:
    """``cli:`` and the operating system's user: a change made here is told apart from one
    made through the API, which records a login."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container, say)
        return BY_PREFIX.rstrip(":")
    return BY_PREFIX + user


def read_file(path: Path) -> Any:
    """The file's data, parsed as its extension says: ``.yaml``/``.yml`` or ``.json``."""
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise InvalidFile([f"{path}: the file must be .yaml, .yml or .json, by its extension"])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidFile([f"{path}: {getattr(exc, 'strerror', None) or exc}"]) from None
    try:
        data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise InvalidFile([f"{path}: not valid JSON: {exc}"]) from None
    except yaml.MarkedYAMLError as exc:
        where = ""
        if exc.problem_mark is not None:
            mark = exc.problem_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        raise InvalidFile([f"{path}: not valid YAML{where}: {exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise InvalidFile([f"{path}: not valid YAML: {' '.join(str(exc).split())}"]) from None
    try:
        # A definition is stored as JSON, which has fewer types than YAML (a date) and no
        # NaN or infinity (which Python's JSON reader takes).
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidFile(
            [f"{path}: a value JSON has no type for ({exc}): quote it to make it a string"]
        ) from None
    return data


def _messages(errors: Any, path: str = "") -> list[str]:
    """marshmallow's nested errors as ``field.sub: message`` lines."""
    if isinstance(errors, dict):
        lines: list[str] = []
        for key, value in errors.items():
            where = path if key == "_schema" else (f"{path}.{key}" if path else str(key))
            lines += _messages(value, where)
        return lines
    if isinstance(errors, list):
        return [line for item in errors for line in _messages(item, path)]
    return [f"{path}: {errors}" if path else str(errors)]


def check(data: Any, python_actions: ActionRegistry) -> list[Declared]:
    """The file's actions, each checked as ``PUT`` checks it, sorted by name; raises
    :class:`InvalidFile` with every problem found, each naming its action and field."""
    if not isinstance(data, dict) or set(data) != {"actions"}:
        raise InvalidFile(["the file holds one mapping, `actions`, of names to definitions"])
    actions = data["actions"]
    if not isinstance(actions, dict):
        raise InvalidFile(["`actions` is a mapping of names to definitions"])
    problems: list[str] = []
    declared: list[Declared] = []
    for name in sorted(actions, key=str):
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            problems.append(
                f"{name!r}: not an action name (1 to 100 letters, digits, _ . : or -, "
                "starting with a letter or digit)"
            )
            continue
        if name in python_actions:
            problems.append(
                f"{name}: a Python action, declared in code: a remote action needs another name"
            )
            continue
        try:
            definition, from_version = remote_actions.load_definition(actions[name], name)
        except marshmallow.ValidationError as exc:
            problems += [f"{name}: {line}" for line in _messages(exc.messages)]
            continue
        declared.append(Declared(name, definition, from_version))
    if problems:
        raise InvalidFile(problems)
    return declared


def apply(
    engine: sa.Engine,
    python_actions: ActionRegistry,
    declared: list[Declared],
    by: str,
    *,
    prune: bool = False,
    dry_run: bool = False,
) -> list[str]:
    """Write ``declared`` (and with ``prune`` delete the other remote actions) in one
    transaction, rolled back when ``dry_run``; one line an action, as the command prints
    them (``would create ...`` for a dry run). Raises :class:`Conflict` (nothing
    written) when an action is no longer at the version its definition gives."""
    lines: list[str] = []
    with Session(engine) as session:
        transaction = session.begin()
        try:
            before = {action.name: action.version for action in remote_actions.every(session)}
            for action in declared:
                try:
                    put = remote_actions.put(
                        session,
                        python_actions,
                        action.name,
                        action.definition,
                        by,
                        from_version=action.from_version,
                    )
                except remote_actions.VersionConflict as exc:
                    raise Conflict(action.name, exc.current) from None
                version = put.action.version
                if put.created:
                    lines.append(_line(dry_run, "create", f"{action.name} (version {version})"))
                elif put.changed:
                    was = before.get(action.name, version - 1)
                    lines.append(
                        _line(dry_run, "update", f"{action.name} (version {was} → {version})")
                    )
                else:
                    lines.append(f"unchanged {action.name} (version {version})")
            if prune:
                names = {action.name for action in declared}
                for name in sorted(set(before) - names):
                    remote_actions.delete(session, name)
                    lines.append(_line(dry_run, "delete", name))
        except BaseException:
            transaction.rollback()
            raise
        if dry_run:
            transaction.rollback()
        else:
            transaction.commit()
    return lines


def _line(dry_run: bool, verb: str, what: str) -> str:
    """``created reindex (version 1)``, or ``would create reindex (version 1)``."""
    return f"would {verb} {what}" if dry_run else f"{verb}d {what}"


def _python_actions(config_uri: str) -> tuple[ActionRegistry, sa.Engine]:
    """The Python actions and the engine of the app ``config_uri`` configures: the app's
    configuration is made as the API makes it, but not started (no embedded worker, no
    scheduler, no migration)."""
    from pyramid.config import Configurator
    from pyramid.paster import get_appsettings

    from nick_jobs.jobs.actions import get_registry

    with Configurator(settings=dict(get_appsettings(config_uri))) as config:
        config.include("nick_jobs")
    return get_registry(config.registry), config.registry["nick_jobs.engine"]


def _fail(line: str) -> None:
    print(f"nick-jobs: {line}", file=sys.stderr)


def cmd_actions_apply(args: argparse.Namespace) -> int:
    """``nick-jobs actions apply CONFIG FILE [--dry-run] [--prune] [--by LOGIN]``."""
    if args.by is not None and not args.by.strip():
        _fail("--by takes a non-empty name")
        return EXIT_USAGE
    try:
        data = read_file(Path(args.file))
    except InvalidFile as exc:
        for line in exc.problems:
            _fail(line)
        _fail("nothing was applied")
        return EXIT_USAGE
    if not os.path.exists(args.config.split("#")[0]):
        _fail(f"no such config file: {args.config}")
        return EXIT_USAGE
    python_actions, engine = _python_actions(args.config)
    try:
        declared = check(data, python_actions)
    except InvalidFile as exc:
        for line in exc.problems:
            _fail(f"{args.file}: {line}")
        _fail("nothing was applied")
        return EXIT_USAGE
    try:
        lines = apply(
            engine,
            python_actions,
            declared,
            args.by or default_by(),
            prune=args.prune,
            dry_run=args.dry_run,
        )
    except Conflict as exc:
        now = "no longer exists" if exc.current is None else f"is at version {exc.current} now"
        _fail(f"{exc.name} {now}, not the version the file gives; nothing was applied")
        return EXIT_ERROR
    finally:
        engine.dispose()
    for line in lines:
        print(line)
    return EXIT_OK
