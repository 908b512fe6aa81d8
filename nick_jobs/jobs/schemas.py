"""Marshmallow schemas for what clients send."""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

# --- fields that take their JSON type only ------------------------------------------------
# marshmallow's own read "3" as an integer, 1.5 as 1 (unless strict), "yes" as true: a
# client's mistake silently turned into a value. These take only what JSON sends.


class StrictInteger(fields.Integer):
    """A JSON integer: not ``"3"``, ``1.5``, ``1.0`` or ``true``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)


class StrictFloat(fields.Float):
    """A JSON number: not ``"1.5"`` or ``true``. NaN and infinities are refused as well."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.make_error("invalid", input=value)
        return super()._deserialize(value, attr, data, **kwargs)


class StrictBoolean(fields.Boolean):
    """``true`` or ``false``: not ``"yes"``, ``1`` or ``"true"``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if value is True or value is False:
            return value
        raise self.make_error("invalid", input=value)


class LoginSchema(Schema):
    class Meta:
        # As Nick does, other keys in the body are ignored: clients send more than these.
        unknown = EXCLUDE

    login = fields.String(required=True, validate=validate.Length(min=1, max=100))
    password = fields.String(required=True, validate=validate.Length(min=1, max=1000))


class JobCreateSchema(Schema):
    """``POST /@jobs``. Unknown keys (``uuid``, ``status``, ``result``...) are refused."""

    title = fields.String(validate=validate.Length(max=500))
    description = fields.String(validate=validate.Length(max=10_000))
    params = fields.Dict(keys=fields.String(), required=True)

    @validates_schema
    def _action_named(self, data: dict[str, Any], **kwargs: Any) -> None:
        action = data.get("params", {}).get("action")
        if not isinstance(action, str) or not action:
            raise ValidationError({"params": {"action": ["Name the action to run, as a string."]}})


class ListQuerySchema(Schema):
    """``GET /@jobs`` query parameters."""

    status = fields.String(
        validate=validate.OneOf(["created", "running", "completed", "failed", "aborted", "stopped"])
    )
    actor = fields.String(validate=validate.Length(min=1, max=100))
    action = fields.String(validate=validate.Length(min=1, max=100))
    q = fields.String(validate=validate.Length(min=1, max=200))
    parent = fields.UUID()
    sort = fields.String(validate=validate.OneOf(["newest", "oldest"]))
    b_size = fields.Integer(validate=validate.Range(min=1))
    # plone.restapi's offset paging, for clients written for Plone; listing.MAX_OFFSET bounds it.
    b_start = fields.Integer(validate=validate.Range(min=0))
    cursor = fields.String(validate=validate.Length(max=200))
    count = fields.Boolean()


class ActionsQuerySchema(Schema):
    """``GET /@job-actions`` query parameters."""

    q = fields.String(validate=validate.Length(min=1, max=200))
    b_size = fields.Integer(validate=validate.Range(min=1))
    cursor = fields.String(validate=validate.Length(max=200))
