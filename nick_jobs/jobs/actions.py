"""The registry of job actions: what a job can do, who may submit it, how its params look.

Actions come from two places: the ``config.add_job_action(...)`` directive a host app
calls, and the ``nick_jobs.actions`` entry-point group an add-on package declares.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import marshmallow
from marshmallow import fields, validate

from nick_jobs.web.permissions import Permission

if TYPE_CHECKING:
    from pyramid.config import Configurator

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "nick_jobs.actions"

Handler = Callable[[dict[str, Any], Any], Any]


class EmptyParams(marshmallow.Schema):
    """For actions that take no params."""


@dataclass(frozen=True)
class JobAction:
    name: str
    handler: Handler
    schema: type[marshmallow.Schema] = EmptyParams
    title: str = ""
    description: str = ""
    permission: str = Permission.MANAGE_SITE.value
    max_retries: int = 0
    time_limit: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Automatic retries wait between min_backoff and max_backoff seconds (see backoff).
    min_backoff: float = 1.0
    max_backoff: float = 300.0
    # Seconds an aborted handler gets to stop on its own before its thread is interrupted.
    abort_grace: float = 10.0
    # Whether a running job may be stopped and resumed from the checkpoint it saves.
    resumable: bool = False

    @cached_property
    def _schema(self) -> marshmallow.Schema:
        # One instance per action: building a schema costs more than loading with it.
        return self.schema()

    def load_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Validate ``params`` (without ``action``); raises ``marshmallow.ValidationError``."""
        # One object, not a list: the schema is not built with many=True.
        loaded: dict[str, Any] = self._schema.load(params)
        return loaded

    def backoff(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before automatic retry number ``retry`` (1, 2, ...).

        Exponential with jitter: ``base = min_backoff * 2**(retry - 1)``, capped at
        ``max_backoff``, and the wait is drawn between ``base`` and ``2 * base`` (never
        past ``max_backoff``), so jobs that failed together do not all come back together.
        """
        return backoff_seconds(self.min_backoff, self.max_backoff, retry, rand)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "python",
            "title": self.title or self.name,
            "description": self.description,
            "permission": self.permission,
            "resumable": self.resumable,
            "params": json_schema(self.schema),
        }


def backoff_seconds(
    min_backoff: float, max_backoff: float, retry: int, rand: Callable[[], float] = random.random
) -> float:
    """The wait before automatic retry number ``retry``, as :meth:`JobAction.backoff`
    describes it (remote actions' retries wait the same way)."""
    base = min(max_backoff, min_backoff * 2.0 ** min(retry - 1, 64))
    return min(max_backoff, base * (1.0 + rand()))


class ActionRegistry:
    def __init__(self) -> None:
        self._actions: dict[str, JobAction] = {}

    def add(self, action: JobAction) -> None:
        if not action.name or not isinstance(action.name, str):
            raise ValueError("a job action needs a name")
        if not callable(action.handler):
            raise TypeError(f"the handler of job action {action.name!r} is not callable")
        if action.max_retries < 0:
            raise ValueError(f"max_retries of job action {action.name!r} must be >= 0")
        if not 0 <= action.min_backoff <= action.max_backoff:
            raise ValueError(f"job action {action.name!r} needs 0 <= min_backoff <= max_backoff")
        if action.abort_grace < 0:
            raise ValueError(f"abort_grace of job action {action.name!r} must be >= 0")
        self._actions[action.name] = action

    def get(self, name: str) -> JobAction | None:
        return self._actions.get(name)

    def __iter__(self) -> Iterator[JobAction]:
        return iter(sorted(self._actions.values(), key=lambda a: a.name))

    def __contains__(self, name: str) -> bool:
        return name in self._actions


def get_registry(registry: Mapping[str, Any]) -> ActionRegistry:
    actions: ActionRegistry = registry["nick_jobs.actions"]
    return actions


def add_job_action(
    config: Configurator,
    name: str,
    handler: Handler | str,
    schema: type[marshmallow.Schema] | str | None = None,
    title: str = "",
    description: str = "",
    permission: str = Permission.MANAGE_SITE.value,
    max_retries: int = 0,
    time_limit: float | None = None,
    min_backoff: float = 1.0,
    max_backoff: float = 300.0,
    abort_grace: float = 10.0,
    resumable: bool = False,
) -> None:
    """Pyramid directive: ``config.add_job_action("reindex", reindex, schema=ReindexSchema)``."""
    action = JobAction(
        name=name,
        handler=config.maybe_dotted(handler),
        schema=config.maybe_dotted(schema) if schema is not None else EmptyParams,
        title=title,
        description=description,
        permission=permission,
        max_retries=max_retries,
        time_limit=time_limit,
        min_backoff=min_backoff,
        max_backoff=max_backoff,
        abort_grace=abort_grace,
        resumable=resumable,
    )

    def register() -> None:
        get_registry(config.registry).add(action)

    config.action(("nick_jobs.action", name), register)


def load_entry_points(registry: ActionRegistry) -> None:
    """Register every action an installed package declares in ``nick_jobs.actions``."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            action = ep.load()
        except Exception:
            log.exception("could not load job action entry point %s", ep.value)
            continue
        if not isinstance(action, JobAction):
            log.error("entry point %s is not a nick_jobs.jobs.actions.JobAction; ignored", ep.value)
            continue
        if action.name in registry:
            # The host app's own registration wins over an add-on's.
            continue
        registry.add(action)


# --- JSON Schema from marshmallow -------------------------------------------------------

_SIMPLE_TYPES: list[tuple[type[fields.Field[Any]], dict[str, Any]]] = [
    (fields.Boolean, {"type": "boolean"}),
    (fields.Integer, {"type": "integer"}),
    (fields.Float, {"type": "number"}),
    (fields.Decimal, {"type": "number"}),
    (fields.Number, {"type": "number"}),
    (fields.UUID, {"type": "string", "format": "uuid"}),
    (fields.Email, {"type": "string", "format": "email"}),
    (fields.URL, {"type": "string", "format": "uri"}),
    (fields.DateTime, {"type": "string", "format": "date-time"}),
    (fields.Date, {"type": "string", "format": "date"}),
    (fields.String, {"type": "string"}),
    (fields.Dict, {"type": "object"}),
]


def _field_schema(field_obj: fields.Field[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(field_obj, fields.Nested):
        nested = field_obj.schema
        out = json_schema(type(nested))
        if getattr(nested, "many", False) or field_obj.many:
            out = {"type": "array", "items": out}
    elif isinstance(field_obj, fields.List):
        out = {"type": "array", "items": _field_schema(field_obj.inner)}
    else:
        for cls, schema in _SIMPLE_TYPES:
            if isinstance(field_obj, cls):
                out = dict(schema)
                break
    for validator in field_obj.validators:
        if isinstance(validator, validate.OneOf):
            out["enum"] = list(validator.choices)
        elif isinstance(validator, validate.Range):
            if validator.min is not None:
                key = "minimum" if validator.min_inclusive else "exclusiveMinimum"
                out[key] = validator.min
            if validator.max is not None:
                key = "maximum" if validator.max_inclusive else "exclusiveMaximum"
                out[key] = validator.max
        elif isinstance(validator, validate.Length):
            prefix = "Items" if out.get("type") == "array" else "Length"
            if validator.min is not None:
                out[f"min{prefix}"] = validator.min
            if validator.max is not None:
                out[f"max{prefix}"] = validator.max
    default = field_obj.load_default
    if default is not marshmallow.missing and not callable(default):
        out["default"] = default
    description = field_obj.metadata.get("description")
    if description:
        out["description"] = description
    if field_obj.allow_none:
        out["nullable"] = True
    return out


def json_schema(schema_cls: type[marshmallow.Schema]) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12 subset) describing what ``schema_cls`` loads."""
    schema = schema_cls()
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, field_obj in schema.load_fields.items():
        key = field_obj.data_key or name
        properties[key] = _field_schema(field_obj)
        if field_obj.required:
            required.append(key)
    out: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        out["required"] = required
    return out


def includeme(config: Configurator) -> None:
    config.registry["nick_jobs.actions"] = ActionRegistry()
    config.add_directive("add_job_action", add_job_action, action_wrap=False)
