"""Scheduled jobs: cron rules that create jobs. Validation, storage and their JSON.

A scheduled job names an action, its params and a 5-field cron ``schedule`` read in a
``timezone``. Each time it fires, :mod:`nick_jobs.scheduling.scheduler` creates one job with
``params = {"scheduled_job": id, "action": action, **params}``, the scheduled job's title
and description, run as the user who created the scheduled job.

The owner's rights are checked at every firing, not only when the scheduled job is
created: :func:`owner_may_submit` tells whether a user with given roles may still submit
its action. Only administrators (``Manage Site``) see or change scheduled jobs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import marshmallow
import sqlalchemy as sa
from marshmallow import Schema, ValidationError, fields, validate, validates
from pyramid.authorization import ALL_PERMISSIONS, ACLHelper, Allow, Authenticated, Everyone
from sqlalchemy.orm import Session

from nick_jobs.db.meta import table, utcnow
from nick_jobs.jobs.actions import ActionRegistry, get_registry
from nick_jobs.jobs.remote_actions import Actions
from nick_jobs.jobs.schemas import StrictBoolean
from nick_jobs.jobs.serialize import isoformat
from nick_jobs.scheduling import cron
from nick_jobs.scheduling.model import SLUG, SLUG_MESSAGE, ScheduledFiring, ScheduledJob
from nick_jobs.web.permissions import ADMINISTRATOR_ROLE, Permission, role_principal, user_principal
from nick_jobs.web.resources import AclOnly, jobs_acl

_ADMIN = (Allow, role_principal(ADMINISTRATOR_ROLE), ALL_PERMISSIONS)


# --- what clients send -----------------------------------------------------------------


def check_schedule(value: str) -> None:
    """A field validator: ``ValidationError`` unless ``value`` is a cron rule we run."""
    try:
        cron.normalize(value)
    except cron.InvalidSchedule as exc:
        raise ValidationError(str(exc)) from None


def check_timezone(value: str) -> None:
    """A field validator: ``ValidationError`` unless ``value`` is a known time zone."""
    try:
        cron.zone(value)
    except cron.InvalidSchedule as exc:
        raise ValidationError(str(exc)) from None


class _Rule(Schema):
    """A cron rule and the zone it is read in, checked as the scheduler reads them."""

    schedule = fields.String(validate=validate.Length(min=1, max=200))
    timezone = fields.String(validate=validate.Length(min=1, max=64))

    @validates("schedule")
    def _schedule(self, value: str, **kwargs: Any) -> None:
        check_schedule(value)

    @validates("timezone")
    def _timezone(self, value: str, **kwargs: Any) -> None:
        check_timezone(value)


class _Fields(_Rule):
    title = fields.String(validate=validate.Length(max=500))
    description = fields.String(validate=validate.Length(max=10_000))
    action = fields.String(validate=validate.Length(min=1, max=100))
    params = fields.Dict(keys=fields.String())
    enabled = StrictBoolean()


class ScheduledJobCreateSchema(_Fields):
    """``POST /@scheduled-jobs``. Unknown keys (``last_run``, ``next_run``...) are refused."""

    id = fields.String(required=True, validate=validate.Regexp(SLUG, error=SLUG_MESSAGE))
    action = fields.String(required=True, validate=validate.Length(min=1, max=100))
    schedule = fields.String(required=True, validate=validate.Length(min=1, max=200))


class ScheduledJobPatchSchema(_Fields):
    """``PATCH /@scheduled-jobs/{id}``: any of the fields; the id can't change."""


#: How many firings ``GET /@scheduled-jobs/@preview`` gives at most, and by default.
PREVIEW_MAX = 20
PREVIEW_DEFAULT = 5


class PreviewQuerySchema(_Rule):
    """``GET /@scheduled-jobs/@preview``: a rule and a zone, checked as a scheduled job's."""

    schedule = fields.String(required=True, validate=validate.Length(min=1, max=200))
    timezone = fields.String(load_default="UTC", validate=validate.Length(min=1, max=64))
    count = fields.Integer(
        load_default=PREVIEW_DEFAULT, validate=validate.Range(min=1, max=PREVIEW_MAX)
    )


# --- JSON ------------------------------------------------------------------------------


def scheduled_job_json(row: Any, url: str) -> dict[str, Any]:
    return {
        "@id": url,
        "id": row.id,
        "title": row.title,
        "description": row.description,
        "action": row.action,
        "params": row.params or {},
        "schedule": row.schedule,
        "enabled": row.enabled,
        "timezone": row.timezone,
        "last_run": isoformat(row.last_run),
        "next_run": isoformat(row.next_run),
        "declared": row.declared,
        "skipped": skipped_json(row),
    }


def skipped_json(row: Any) -> dict[str, Any] | None:
    """The firing the scheduler refused when it disabled ``row``, or None."""
    if row.skip_reason is None:
        return None
    return {
        "slot": isoformat(row.skipped_slot),
        "at": isoformat(row.skipped_at),
        "reason": row.skip_reason,
        "message": row.skip_message,
    }


# --- the owner's rights, checked at every firing ---------------------------------------

# Why a firing was refused: the ``reason`` of ``skipped``, and the metric's label.
OWNER_MISSING = "owner_missing"
OWNER_LACKS_PERMISSION = "owner_lacks_permission"


def owner_may_submit(login: str, roles: Iterable[str], permission: str) -> bool:
    """Whether the user ``login`` with ``roles`` may submit an action needing ``permission``.

    The same ACLs decide as for ``POST /@jobs`` under nick-jobs' own root, with the
    principals a request of that user would have: an Administrator may submit anything,
    any user what needs only ``Add Jobs``.
    """
    context = AclOnly(jobs_acl())
    principals = [
        Everyone,
        Authenticated,
        user_principal(login),
        *(role_principal(role) for role in roles),
    ]
    return bool(ACLHelper().permits(context, principals, permission))


def known_actions(
    registry: Mapping[str, Any], conn: Session | sa.Connection | None = None
) -> ActionRegistry | Actions:
    """The Python actions, and with ``conn`` the remote ones too (they are in the
    database; a schedule declared in the ini file is checked before any is read)."""
    python = get_registry(registry)
    return python if conn is None else Actions(python, conn)


def required_permission(
    registry: Mapping[str, Any], action: str, conn: Session | sa.Connection | None = None
) -> str:
    """The permission submitting ``action`` needs; ``Manage Site`` for an unknown action."""
    found = known_actions(registry, conn).get(action)
    return found.permission if found is not None else Permission.MANAGE_SITE.value


# --- checks shared by the API, the ini file and the directive --------------------------


def check_definition(
    registry: Mapping[str, Any],
    action: str,
    params: dict[str, Any],
    conn: Session | sa.Connection | None = None,
) -> dict[str, Any]:
    """Raise ``ValidationError`` unless ``action`` exists and takes ``params`` (with
    ``conn``, a remote action too).

    Returns the params as given (they are stored as sent, and loaded again when the
    job runs, exactly like the params of ``POST /@jobs``).
    """
    found = known_actions(registry, conn).get(action)
    if found is None:
        raise ValidationError({"action": [f"Unknown action {action!r}."]})
    reserved = sorted({"action", "scheduled_job"} & set(params))
    if reserved:
        message = "Set by the scheduler; not a param."
        raise ValidationError({"params": {key: [message] for key in reserved}})
    try:
        found.load_params(params)
    except marshmallow.ValidationError as exc:
        raise ValidationError({"params": exc.messages}) from None
    return params


def preview(schedule: str, timezone: str, count: int) -> dict[str, Any]:
    """The next ``count`` firings of ``schedule`` in ``timezone`` from now, as the
    scheduler would make them (validated input: see :class:`PreviewQuerySchema`)."""
    normalized = cron.normalize(schedule)
    times = cron.next_fires(normalized, timezone, utcnow(), count)
    return {
        "schedule": normalized,
        "timezone": timezone,
        "next": [isoformat(time) for time in times],
    }


def upcoming(schedule: str, timezone: str, enabled: bool, now: dt.datetime) -> dt.datetime | None:
    """``next_run`` for a scheduled job (re)defined at ``now``: None while disabled."""
    return cron.next_fire(schedule, timezone, now) if enabled else None


# --- storage ---------------------------------------------------------------------------


class AlreadyExists(Exception):
    pass


def create(
    dbsession: Session, registry: Mapping[str, Any], data: dict[str, Any], actor: str
) -> ScheduledJob:
    """Store a new scheduled job from validated ``data``; AlreadyExists on a taken id."""
    params = check_definition(registry, data["action"], data.get("params", {}), dbsession)
    action = known_actions(registry, dbsession).get(data["action"])
    assert action is not None  # check_definition has refused an unknown action
    now = utcnow()
    schedule = cron.normalize(data["schedule"])
    timezone = data.get("timezone", "UTC")
    enabled = data.get("enabled", True)
    if dbsession.get(ScheduledJob, data["id"]) is not None:
        raise AlreadyExists(data["id"])
    row = ScheduledJob(
        id=data["id"],
        title=data.get("title") or action.title or action.name,
        description=data.get("description", action.description),
        action=data["action"],
        params=params,
        schedule=schedule,
        timezone=timezone,
        enabled=enabled,
        actor=actor,
        declared=False,
        created=now,
        last_run=None,
        next_run=upcoming(schedule, timezone, enabled, now),
    )
    dbsession.add(row)
    dbsession.flush()
    return row


def update(
    registry: Mapping[str, Any],
    row: ScheduledJob,
    data: dict[str, Any],
    conn: Session | sa.Connection | None = None,
) -> ScheduledJob:
    """Apply validated PATCH ``data`` to ``row``.

    A change of schedule, time zone or ``enabled`` moves ``next_run`` to the first slot
    after now: slots missed while disabled are not caught up. Enabling it clears the
    firing the scheduler refused (``skipped``): the owner's rights are checked again at
    the next firing.
    """
    action = data.get("action", row.action)
    params = data.get("params", row.params or {})
    if "action" in data or "params" in data:
        check_definition(registry, action, params, conn)
    for key in ("title", "description"):
        if key in data:
            setattr(row, key, data[key])
    row.action = action
    row.params = params
    timing = (
        cron.normalize(data.get("schedule", row.schedule)),
        data.get("timezone", row.timezone),
        data.get("enabled", row.enabled),
    )
    if timing != (row.schedule, row.timezone, row.enabled):
        row.schedule, row.timezone, row.enabled = timing
        row.next_run = upcoming(row.schedule, row.timezone, row.enabled, utcnow())
    if row.enabled and row.skip_reason is not None:
        clear_skip(row)
    return row


def clear_skip(row: Any) -> None:
    """Forget the firing the scheduler refused (on a model row)."""
    row.skipped_slot = row.skipped_at = row.skip_reason = row.skip_message = None


def delete(dbsession: Session, row: ScheduledJob) -> None:
    """Remove a scheduled job and its firing keys; the jobs it created stay."""
    dbsession.execute(
        sa.delete(table(ScheduledFiring)).where(ScheduledFiring.scheduled_job_id == row.id)
    )
    dbsession.delete(row)
    dbsession.flush()
