"""Remote actions: actions declared as data, whose jobs consumers run over HTTP.

A remote action has no Python handler. Its definition (title, permission, the JSON
Schemas of its params and result, retries, lease, ...) is stored in the database, so
every API process sees a change at once; each change that alters it bumps its
``version``, and every version is kept. Python actions (:mod:`nick_jobs.jobs.actions`)
and remote ones share one namespace: a name is one or the other.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import jsonschema
import marshmallow
import sqlalchemy as sa
from marshmallow import fields, validate
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nick_jobs.db.after_commit import savepoint
from nick_jobs.db.meta import table, utcnow
from nick_jobs.jobs.actions import ActionRegistry, JobAction, backoff_seconds
from nick_jobs.jobs.model import RemoteAction, RemoteActionVersion
from nick_jobs.web.permissions import Permission

KIND_PYTHON = "python"
KIND_REMOTE = "remote"

remote_actions = table(RemoteAction)
remote_action_versions = table(RemoteActionVersion)

# What a definition's numbers may be: wide enough for any real use, bounded so that a
# typo can't make a job wait for years.
MAX_RETRIES = 100
MAX_BACKOFF_S = 7 * 24 * 3600
MIN_LEASE_S, MAX_LEASE_S = 5, 24 * 3600
MAX_CLAIM_WINDOW_S = 7 * 24 * 3600
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"

_ANY_OBJECT: dict[str, Any] = {"type": "object"}


def _check_json_schema(value: Any) -> None:
    if not isinstance(value, dict):
        raise marshmallow.ValidationError("A JSON Schema is a JSON object.")
    try:
        jsonschema.Draft202012Validator.check_schema(value)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(part) for part in exc.absolute_path)
        raise marshmallow.ValidationError(
            f"Not a valid JSON Schema (draft 2020-12){f' at {where}' if where else ''}: "
            f"{exc.message}"
        ) from None


def _check_labels(value: Any) -> None:
    if len(value) > 50:
        raise marshmallow.ValidationError("At most 50 labels.")


class DefinitionSchema(marshmallow.Schema):
    """What ``PUT /@job-actions/{name}`` takes (and ``GET`` shows): defaults for what it
    leaves out. ``name``, ``kind`` and ``version`` may be sent back as ``GET`` gave them."""

    name = fields.String(metadata={"description": "The URL's name, if given."})
    kind = fields.String(
        validate=validate.Equal(KIND_REMOTE),
        metadata={"description": "Always remote: Python actions are declared in code."},
    )
    version = fields.Integer(
        strict=True,
        validate=validate.Range(min=1),
        metadata={
            "description": "The version this change is made from: a 409 when the action "
            "has another one by now (optional)."
        },
    )
    title = fields.String(load_default="", validate=validate.Length(max=500))
    description = fields.String(load_default="", validate=validate.Length(max=10_000))
    permission = fields.String(
        load_default=Permission.MANAGE_SITE.value,
        validate=validate.OneOf([p.value for p in Permission]),
        metadata={"description": "The permission a user needs to submit it."},
    )
    resumable = fields.Boolean(load_default=False)
    params = fields.Dict(
        load_default=lambda: dict(_ANY_OBJECT),
        validate=_check_json_schema,
        metadata={"description": "The JSON Schema of its params (draft 2020-12)."},
    )
    result = fields.Dict(
        load_default=None,
        allow_none=True,
        validate=_check_json_schema,
        metadata={"description": "The JSON Schema of its result; none: any object."},
    )
    labels = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=100)),
        values=fields.String(validate=validate.Length(max=200)),
        load_default=dict,
        validate=_check_labels,
    )
    max_retries = fields.Integer(
        strict=True, load_default=0, validate=validate.Range(min=0, max=MAX_RETRIES)
    )
    min_backoff = fields.Float(load_default=1.0, validate=validate.Range(min=0, max=MAX_BACKOFF_S))
    max_backoff = fields.Float(
        load_default=300.0, validate=validate.Range(min=0, max=MAX_BACKOFF_S)
    )
    lease = fields.Integer(
        strict=True,
        load_default=60,
        validate=validate.Range(min=MIN_LEASE_S, max=MAX_LEASE_S),
        metadata={"description": "Seconds a claim lasts unless its consumer checks in."},
    )
    claim_window = fields.Integer(
        strict=True,
        load_default=0,
        validate=validate.Range(min=0, max=MAX_CLAIM_WINDOW_S),
        metadata={
            "description": "Seconds after its creation during which a job with claims goes "
            "only to consumers presenting them."
        },
    )

    class Meta:
        unknown = marshmallow.RAISE

    @marshmallow.validates_schema
    def _backoffs(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("min_backoff", 1.0) > data.get("max_backoff", 300.0):
            raise marshmallow.ValidationError(
                "min_backoff can't be more than max_backoff.", "min_backoff"
            )


_DEFINITION_SCHEMA = DefinitionSchema()
# The keys a stored definition holds: what the schema loads, but name, kind and version.
_DEFINITION_KEYS = tuple(
    key for key in _DEFINITION_SCHEMA.fields if key not in ("name", "kind", "version")
)


def load_definition(data: Any, name: str) -> tuple[dict[str, Any], int | None]:
    """A ``PUT`` body as a stored definition with its defaults, and the version it was
    made from (None when it gives none); raises ``marshmallow.ValidationError``."""
    if not isinstance(data, dict):
        raise marshmallow.ValidationError({"_schema": ["An action is a JSON object."]})
    loaded = _DEFINITION_SCHEMA.load(data)
    if loaded.get("name", name) != name:
        raise marshmallow.ValidationError(
            {"name": [f"The body names {loaded['name']!r}, the URL {name!r}."]}
        )
    return {key: loaded[key] for key in _DEFINITION_KEYS}, loaded.get("version")


@dataclass(frozen=True)
class RemoteJobAction:
    """A remote action as submission, retries and listings use it: the same attributes
    as a Python :class:`~nick_jobs.jobs.actions.JobAction`, no handler."""

    name: str
    version: int
    definition: dict[str, Any] = field(repr=False)
    kind: str = KIND_REMOTE

    @property
    def title(self) -> str:
        return str(self.definition["title"])

    @property
    def description(self) -> str:
        return str(self.definition["description"])

    @property
    def permission(self) -> str:
        return str(self.definition["permission"])

    @property
    def resumable(self) -> bool:
        return bool(self.definition["resumable"])

    @property
    def max_retries(self) -> int:
        return int(self.definition["max_retries"])

    @property
    def min_backoff(self) -> float:
        return float(self.definition["min_backoff"])

    @property
    def max_backoff(self) -> float:
        return float(self.definition["max_backoff"])

    @property
    def lease(self) -> int:
        return int(self.definition["lease"])

    @property
    def claim_window(self) -> int:
        return int(self.definition["claim_window"])

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.definition["labels"])

    def load_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Validate ``params`` (without ``action``) against the params' JSON Schema;
        raises ``marshmallow.ValidationError`` with the errors by field, as a Python
        action's marshmallow schema would."""
        _validate(self.definition["params"], params)
        return params

    def check_result(self, result: Any) -> None:
        """Validate a consumer's result against the result's JSON Schema, if any."""
        schema = self.definition.get("result")
        if schema is not None:
            _validate(schema, result)

    def backoff(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        return backoff_seconds(self.min_backoff, self.max_backoff, retry, rand)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": KIND_REMOTE, "version": self.version, **self.definition}


Action = JobAction | RemoteJobAction


def describe(action: Action) -> dict[str, Any]:
    """What ``GET /@job-actions`` shows of either kind."""
    return action.describe()


def _validate(schema: dict[str, Any], instance: Any) -> None:
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(instance),
        key=lambda error: list(error.absolute_path),
    )
    if errors:
        raise marshmallow.ValidationError(_by_field(errors, instance))


def _by_field(errors: list[jsonschema.ValidationError], instance: Any) -> dict[str, Any]:
    """JSON Schema errors shaped as marshmallow's: ``{"steps": ["..."]}``, nested by
    path; an object's missing and unknown properties under their own names."""
    out: dict[str, Any] = {}

    def add(path: list[Any], message: str) -> None:
        node = out
        for part in path[:-1]:
            node = node.setdefault(str(part), {})
        node.setdefault(str(path[-1]), []).append(message)

    for error in errors:
        path = list(error.absolute_path)
        if error.validator == "required":
            parent = _at(instance, path)
            for name in error.validator_value if isinstance(error.validator_value, list) else ():
                if isinstance(parent, dict) and name not in parent:
                    add([*path, name], "Missing data for required field.")
        elif error.validator == "additionalProperties" and error.validator_value is False:
            parent = _at(instance, path)
            schema = error.schema if isinstance(error.schema, dict) else {}
            allowed = set(schema.get("properties", {}))
            for name in parent if isinstance(parent, dict) else ():
                if name not in allowed:
                    add([*path, name], "Unknown field.")
        else:
            add(path or ["_schema"], error.message)
    return out


def _at(instance: Any, path: list[Any]) -> Any:
    for part in path:
        instance = instance[part]
    return instance


# --- storage ---------------------------------------------------------------------------


def get(conn: Session | sa.Connection, name: str) -> RemoteJobAction | None:
    row = conn.execute(
        sa.select(remote_actions.c.version, remote_actions.c.definition).where(
            remote_actions.c.name == name
        )
    ).one_or_none()
    return RemoteJobAction(name, row.version, row.definition) if row else None


def every(conn: Session | sa.Connection) -> list[RemoteJobAction]:
    rows = conn.execute(
        sa.select(
            remote_actions.c.name, remote_actions.c.version, remote_actions.c.definition
        ).order_by(remote_actions.c.name)
    ).all()
    return [RemoteJobAction(row.name, row.version, row.definition) for row in rows]


class NameTaken(Exception):
    """The name is a Python action's."""


class VersionConflict(Exception):
    """The change was made from a version that is no longer the current one."""

    def __init__(self, current: int | None) -> None:
        super().__init__(current)
        self.current = current


@dataclass(frozen=True)
class Put:
    action: RemoteJobAction
    created: bool  # a new action
    changed: bool  # a new version (always for a new action)


def put(
    conn: Session | sa.Connection,
    python_actions: ActionRegistry,
    name: str,
    definition: dict[str, Any],
    by: str,
    *,
    from_version: int | None = None,
    now: dt.datetime | None = None,
) -> Put:
    """Create or change the remote action ``name``; a change that alters nothing keeps
    its version. ``from_version``: refuse (:class:`VersionConflict`) unless it is the
    current one. The caller's transaction commits it."""
    if name in python_actions:
        raise NameTaken(name)
    now = now or utcnow()
    current = conn.execute(
        sa.select(remote_actions.c.version, remote_actions.c.definition)
        .where(remote_actions.c.name == name)
        .with_for_update()
    ).one_or_none()
    if from_version is not None and (current is None or current.version != from_version):
        raise VersionConflict(current.version if current else None)
    if current is not None and current.definition == definition:
        return Put(RemoteJobAction(name, current.version, current.definition), False, False)
    if current is None:
        # An action made again after a delete goes on after the versions kept, so that a
        # version its jobs name means one definition only.
        last = conn.execute(
            sa.select(sa.func.max(remote_action_versions.c.version)).where(
                remote_action_versions.c.name == name
            )
        ).scalar()
        version = (last or 0) + 1
    else:
        version = current.version + 1
    values = {"version": version, "definition": definition, "updated": now, "updated_by": by}
    if current is None:
        # Two racing PUTs of a new name: the primary key lets one in, the other is told
        # the action exists by now, as a change made from an outdated version is.
        try:
            with _savepoint(conn):
                conn.execute(remote_actions.insert().values(name=name, **values))
        except IntegrityError:
            raise VersionConflict(get_version(conn, name)) from None
    else:
        conn.execute(
            remote_actions.update()
            .where(remote_actions.c.name == name, remote_actions.c.version == current.version)
            .values(values)
        )
    conn.execute(
        remote_action_versions.insert().values(
            name=name, version=version, definition=definition, created=now, created_by=by
        )
    )
    return Put(RemoteJobAction(name, version, definition), current is None, True)


def get_version(conn: Session | sa.Connection, name: str) -> int | None:
    return conn.execute(
        sa.select(remote_actions.c.version).where(remote_actions.c.name == name)
    ).scalar_one_or_none()


def _savepoint(conn: Session | sa.Connection) -> contextlib.AbstractContextManager[Any]:
    return conn.begin_nested() if isinstance(conn, Session) else savepoint(conn)


def delete(conn: Session | sa.Connection, name: str) -> bool:
    """Remove the remote action (its versions stay, as its jobs name them); False if
    there was none."""
    result = conn.execute(remote_actions.delete().where(remote_actions.c.name == name))
    # A DELETE's result is a CursorResult whether a Session or a Connection ran it.
    return bool(cast("sa.CursorResult[Any]", result).rowcount)


def versions(conn: Session | sa.Connection, name: str) -> list[dict[str, Any]]:
    """Every version of ``name``, newest first."""
    rows = conn.execute(
        sa.select(remote_action_versions)
        .where(remote_action_versions.c.name == name)
        .order_by(remote_action_versions.c.version.desc())
    ).all()
    return [
        {
            "name": row.name,
            "kind": KIND_REMOTE,
            "version": row.version,
            **row.definition,
            "created": row.created,
            "created_by": row.created_by,
        }
        for row in rows
    ]


class Actions:
    """Python and remote actions together, as a request or a submit sees them: the
    Python registry first, the database for any other name."""

    def __init__(self, python_actions: ActionRegistry, conn: Session | sa.Connection) -> None:
        self.python = python_actions
        self.conn = conn

    def get(self, name: str) -> Action | None:
        action = self.python.get(name)
        if action is not None:
            return action
        return get(self.conn, name)

    def __iter__(self) -> Iterator[Action]:
        """Every action, sorted by name (a remote one named as a Python one is hidden)."""
        remote = [action for action in every(self.conn) if action.name not in self.python]
        return iter(sorted([*self.python, *remote], key=lambda action: action.name))
