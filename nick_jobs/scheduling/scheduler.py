"""The scheduler: turns scheduled jobs into jobs when their cron slot comes.

Each :meth:`Scheduler.tick` reads the enabled scheduled jobs whose ``next_run`` has come
and fires each in a transaction of its own:

1. claim the slot: ``UPDATE scheduled_jobs SET next_run = <the slot after now> WHERE
   id = :id AND next_run = <the value read>``. Of several schedulers (API nodes,
   ``nick-jobs scheduler`` processes) that read the same row, exactly one updates it;
2. read the owner's row (``FOR SHARE`` on PostgreSQL; on SQLite the claim already holds
   the write lock): unless the owner still exists and its roles still grant the
   permission the action needs, create no job, disable the scheduled job with the
   refused firing recorded on it, log it and count it, and stop here. A declared
   scheduled job run as ``system`` (no user) has the configuration's authority;
3. create the job through :func:`nick_jobs.jobs.lifecycle.create`;
4. insert ``(scheduled_job_id, fire_time)`` into ``scheduled_firings``, whose primary key
   refuses a second job for the same slot whatever happens to ``next_run``;
5. commit; the job's message goes out once committed (the lifecycle sends it).

Slots missed while no scheduler ran are not replayed one by one: with
``nick_jobs.scheduler.missed = catchup`` (the default) the scheduled job fires once for
the latest missed slot; with ``skip`` it fires only if that slot is less than
``nick_jobs.scheduler.grace`` seconds old, and otherwise waits for the next one.

Schedules can also be declared, in the ini file (``nick_jobs.schedules``) or by an add-on
(``config.add_scheduled_job(...)``); they are written to the table at start-up.

Every tick also records that a scheduler is alive, in the database, so that every API node
can tell (``/healthz/ready`` reads it) whether any scheduler ticks, wherever it runs:
inside an API process or as ``nick-jobs scheduler``.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import marshmallow
import sqlalchemy as sa
from pyramid.settings import asbool, aslist
from sqlalchemy.exc import IntegrityError

from nick_jobs.db.after_commit import savepoint, transaction
from nick_jobs.db.meta import UTCDateTime, table, utcnow
from nick_jobs.jobs import lifecycle, remote_actions
from nick_jobs.jobs.actions import get_registry
from nick_jobs.ops.metrics import SCHEDULED_FIRINGS_SKIPPED
from nick_jobs.scheduling import cron
from nick_jobs.scheduling.model import SLUG, SLUG_MESSAGE, ScheduledFiring, ScheduledJob
from nick_jobs.scheduling.scheduled_jobs import (
    OWNER_LACKS_PERMISSION,
    OWNER_MISSING,
    check_definition,
    owner_may_submit,
    required_permission,
    upcoming,
)
from nick_jobs.settings import ConfigurationError, Settings, registry_settings
from nick_jobs.users.accounts import SYSTEM_LOGIN
from nick_jobs.users.model import User

if TYPE_CHECKING:
    from pyramid.config import Configurator
    from pyramid.registry import Registry

log = logging.getLogger(__name__)

scheduled = table(ScheduledJob)
firings = table(ScheduledFiring)
users = table(User)

MISSED_POLICIES = ("catchup", "skip")
# Who the jobs of declared schedules belong to, unless the declaration names a user. Not
# a user: such a schedule has the authority of the configuration that declares it.
SYSTEM_ACTOR = SYSTEM_LOGIN
PRUNE_SCHEDULE_ID = "prune-nightly"
# Set when the declared schedules could not be written at start-up.
SYNC_PENDING = "nick_jobs.scheduler.sync_pending"
DEFAULT_PRUNE_SCHEDULE = "0 3 * * *"
# The schedulers' liveness is one row of scheduled_firings under an id that no scheduled
# job can have (ids are slugs, which have no "@"), so it needs no table of its own: its
# ``created`` is when a scheduler last ticked, its ``job_uuid`` which process it was.
LIVENESS_ID = "@scheduler"
LIVENESS_SLOT = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# A scheduler in a tight loop (a slot it can't fire) records its liveness at most this often.
LIVENESS_EVERY = dt.timedelta(seconds=1)


# --- settings --------------------------------------------------------------------------


@dataclass(frozen=True)
class SchedulerSettings:
    # Run a scheduler thread inside the API process.
    embedded: bool
    missed: str
    # Longest pause between two ticks (a tick also comes when the next slot is due).
    interval_s: float
    # How late a slot may fire and still count as on time (for ``missed = skip``).
    grace_s: float
    # The cron expression of the declared nightly prune, or None for none.
    prune_schedule: str | None
    # /healthz/ready reports the scheduler down when no scheduler ticked for this long.
    stale_after_s: float = 30.0
    # Whether a scheduler that is down makes /healthz/ready answer 503.
    ready_requires: bool = False


def _seconds(settings: Mapping[str, Any], key: str, default: float) -> float:
    raw = settings.get(key, default)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{key} must be a number of seconds, not {raw!r}") from None
    if value <= 0:
        raise ConfigurationError(f"{key} must be more than 0 seconds, not {raw!r}")
    return value


def _strict_bool(settings: Mapping[str, Any], key: str, default: bool) -> bool:
    raw = settings.get(key, default)
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"true", "yes", "on", "1"}:
        return True
    if text in {"false", "no", "off", "0"}:
        return False
    # asbool would read a typo as false: a health setting must not fail open silently.
    raise ConfigurationError(f"{key} must be true or false, not {raw!r}")


def parse_settings(settings: Mapping[str, Any], base: Settings) -> SchedulerSettings:
    """The ``nick_jobs.scheduler.*`` settings; ``base`` is the parsed :class:`Settings`."""
    missed = settings.get("nick_jobs.scheduler.missed", "catchup").strip()
    if missed not in MISSED_POLICIES:
        raise ConfigurationError(
            f"nick_jobs.scheduler.missed must be catchup or skip, not {missed!r}"
        )
    embedded_default = base.embedded_broker and base.environment != "testing"
    prune_default = "off" if base.environment == "testing" else DEFAULT_PRUNE_SCHEDULE
    prune = settings.get("nick_jobs.prune_schedule", prune_default).strip()
    if prune.lower() in {"off", "false", "no", "none", ""}:
        prune_schedule = None
    else:
        try:
            prune_schedule = cron.normalize(prune)
        except cron.InvalidSchedule as exc:
            raise ConfigurationError(f"nick_jobs.prune_schedule: {exc}") from None
    interval = _seconds(settings, "nick_jobs.scheduler.interval", 5.0)
    stale_after = _seconds(settings, "nick_jobs.scheduler.stale_after", max(30.0, 3 * interval))
    # A healthy scheduler ticks at least every interval; with less than two intervals of
    # slack, one slow tick would report it down.
    if stale_after < 2 * interval:
        raise ConfigurationError(
            "nick_jobs.scheduler.stale_after must be at least twice "
            f"nick_jobs.scheduler.interval, not {stale_after:g} s for ticks every {interval:g} s"
        )
    return SchedulerSettings(
        embedded=asbool(settings.get("nick_jobs.scheduler.embedded", embedded_default)),
        missed=missed,
        interval_s=interval,
        grace_s=_seconds(settings, "nick_jobs.scheduler.grace", 60.0),
        prune_schedule=prune_schedule,
        stale_after_s=stale_after,
        ready_requires=_strict_bool(settings, "nick_jobs.ready_requires_scheduler", False),
    )


def get_settings(registry: Registry) -> SchedulerSettings:
    settings: SchedulerSettings = registry["nick_jobs.scheduler.settings"]
    return settings


# --- declared schedules ----------------------------------------------------------------


@dataclass(frozen=True)
class Declaration:
    id: str
    action: str
    schedule: str
    params: dict[str, Any] = field(default_factory=dict)
    title: str = ""
    description: str = ""
    timezone: str = "UTC"
    enabled: bool = True
    actor: str = SYSTEM_ACTOR
    # Where it was declared, for error messages.
    source: str = "config.add_scheduled_job"


def add_scheduled_job(
    config: Configurator,
    id: str,
    action: str,
    schedule: str,
    params: dict[str, Any] | None = None,
    title: str = "",
    description: str = "",
    timezone: str = "UTC",
    enabled: bool = True,
    actor: str = SYSTEM_ACTOR,
) -> None:
    """Pyramid directive: ``config.add_scheduled_job("reindex-nightly", "reindex", "0 2 * * *")``.

    The scheduled job is written to the database at start-up and kept in line with the
    declaration; the API shows it (``"declared": true``) but can't change or delete it.
    A schedule of the same id in the ini file wins over an add-on's.
    """
    declaration = Declaration(
        id=id,
        action=action,
        schedule=schedule,
        params=dict(params or {}),
        title=title,
        description=description,
        timezone=timezone,
        enabled=enabled,
        actor=actor,
    )

    def register() -> None:
        config.registry["nick_jobs.declared_schedules"][id] = declaration

    config.action(("nick_jobs.scheduled_job", id), register)


def declarations_from_settings(settings: Mapping[str, Any]) -> list[Declaration]:
    """``nick_jobs.schedules = a b`` with ``nick_jobs.schedule.a.action`` etc. for each."""
    out = []
    for id_ in aslist(settings.get("nick_jobs.schedules", "")):
        if not SLUG.match(id_):
            raise ConfigurationError(f"nick_jobs.schedules: {id_!r}: {SLUG_MESSAGE}")
        prefix = f"nick_jobs.schedule.{id_}."

        def get(key: str, default: Any = None, prefix: str = prefix) -> Any:
            value = settings.get(prefix + key, default)
            return value.strip() if isinstance(value, str) else value

        for required in ("action", "schedule"):
            if not get(required):
                raise ConfigurationError(f"{prefix}{required} is required")
        try:
            params = json.loads(get("params", "{}"))
        except ValueError:
            raise ConfigurationError(f"{prefix}params must be a JSON object") from None
        if not isinstance(params, dict):
            raise ConfigurationError(f"{prefix}params must be a JSON object")
        out.append(
            Declaration(
                id=id_,
                action=get("action"),
                schedule=get("schedule"),
                params=params,
                title=get("title", ""),
                description=get("description", ""),
                timezone=get("timezone", "UTC"),
                enabled=asbool(get("enabled", "true")),
                actor=get("actor", SYSTEM_ACTOR),
                source=f"{prefix}*",
            )
        )
    return out


def declarations(registry: Registry) -> dict[str, Declaration]:
    """Every declared schedule: the default prune, then add-ons', then the ini file's."""
    out: dict[str, Declaration] = {}
    prune = get_settings(registry).prune_schedule
    if prune:
        out[PRUNE_SCHEDULE_ID] = Declaration(
            id=PRUNE_SCHEDULE_ID,
            action="prune",
            schedule=prune,
            title="Prune finished jobs nightly",
            description="Deletes finished jobs older than 30 days, with their history.",
            source="nick_jobs.prune_schedule",
        )
    out.update(registry["nick_jobs.declared_schedules"])
    out.update({d.id: d for d in declarations_from_settings(registry.settings)})
    return out


def _checked(registry: Registry, declaration: Declaration) -> dict[str, Any]:
    """The column values of ``declaration``, or ConfigurationError saying what is wrong."""
    where = f"scheduled job {declaration.id!r} ({declaration.source})"
    if not isinstance(declaration.id, str) or not SLUG.match(declaration.id):
        raise ConfigurationError(f"{where}: {SLUG_MESSAGE}")
    try:
        schedule = cron.normalize(declaration.schedule)
        cron.zone(declaration.timezone)
        check_definition(registry, declaration.action, declaration.params)
    except cron.InvalidSchedule as exc:
        raise ConfigurationError(f"{where}: {exc}") from None
    except marshmallow.ValidationError as exc:
        raise ConfigurationError(f"{where}: {json.dumps(exc.messages)}") from None
    action = registry["nick_jobs.actions"].get(declaration.action)
    return {
        "title": declaration.title or action.title or action.name,
        "description": declaration.description or action.description,
        "action": declaration.action,
        "params": declaration.params,
        "schedule": schedule,
        "timezone": declaration.timezone,
        "enabled": declaration.enabled,
        "actor": declaration.actor,
        "declared": True,
    }


def sync_declared(registry: Registry, now: dt.datetime | None = None) -> None:
    """Write the declared schedules to the table; remove those no longer declared.

    Run at every start-up, by every process: the statements are conditional, so API
    nodes starting together end with the same rows. ``last_run`` is kept; ``next_run``
    moves only when the timing (schedule, time zone, enabled) changed.
    """
    now = now or utcnow()
    wanted = {id_: _checked(registry, d) for id_, d in declarations(registry).items()}
    engine = registry["nick_jobs.engine"]
    with engine.begin() as conn:
        if not wanted and not sa.inspect(conn).has_table("scheduled_jobs"):
            return  # a database not migrated yet, with nothing to write to it
        rows = {
            row.id: row
            for row in conn.execute(
                sa.select(scheduled)
                .where(sa.or_(scheduled.c.declared.is_(True), scheduled.c.id.in_(list(wanted))))
                .order_by(scheduled.c.id)
            )
        }
        for id_, values in wanted.items():
            row = rows.get(id_)
            if row is None:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            scheduled.insert().values(
                                id=id_,
                                created=now,
                                last_run=None,
                                next_run=upcoming(
                                    values["schedule"], values["timezone"], values["enabled"], now
                                ),
                                **values,
                            )
                        )
                except IntegrityError:
                    pass  # another process starting now inserted the same declaration
                continue
            if all(getattr(row, key) == value for key, value in values.items()):
                continue
            if not row.declared:
                log.warning("scheduled job %r is now managed by its declaration", id_)
            changes = dict(values)
            timing = ("schedule", "timezone", "enabled")
            if any(getattr(row, key) != values[key] for key in timing) or (
                row.next_run is None and values["enabled"]
            ):
                changes["next_run"] = upcoming(
                    values["schedule"], values["timezone"], values["enabled"], now
                )
            if values["enabled"] and not row.enabled:
                # Disabled by a refused firing, say: a start-up enables it again, as the
                # API can't, and its owner's rights are checked again at its next firing.
                changes.update(
                    skipped_slot=None, skipped_at=None, skip_reason=None, skip_message=None
                )
            conn.execute(scheduled.update().where(scheduled.c.id == id_).values(changes))
        stale = [id_ for id_, row in rows.items() if row.declared and id_ not in wanted]
        if stale:
            log.info("removing scheduled jobs no longer declared: %s", ", ".join(stale))
            conn.execute(firings.delete().where(firings.c.scheduled_job_id.in_(stale)))
            conn.execute(scheduled.delete().where(scheduled.c.id.in_(stale)))


# --- liveness --------------------------------------------------------------------------


def process_name() -> str:
    """``host:pid`` of this process, cut to the column's 36 characters."""
    pid = str(os.getpid())
    return f"{socket.gethostname()[: 35 - len(pid)]}:{pid}"


def record_tick(engine: sa.Engine, when: dt.datetime, who: str) -> None:
    """Record that the scheduler ``who`` ticked at ``when``, unless one ticked later.

    One conditional UPDATE, and an INSERT the first time ever: schedulers on clocks a
    little apart never move the time back.
    """
    at = sa.bindparam("when", when, type_=UTCDateTime())
    with engine.begin() as conn:
        matched = conn.execute(
            firings.update()
            .where(firings.c.scheduled_job_id == LIVENESS_ID)
            .values(
                created=sa.case((firings.c.created < at, at), else_=firings.c.created),
                job_uuid=sa.case((firings.c.created < at, who), else_=firings.c.job_uuid),
            )
        ).rowcount
        if matched:
            return
        try:
            with conn.begin_nested():
                conn.execute(
                    firings.insert().values(
                        scheduled_job_id=LIVENESS_ID,
                        fire_time=LIVENESS_SLOT,
                        job_uuid=who,
                        created=when,
                    )
                )
        except IntegrityError:
            pass  # another scheduler wrote the first row at the same moment


@dataclass(frozen=True)
class Liveness:
    last_tick: dt.datetime
    # host:pid of the scheduler that ticked last.
    by: str


def last_tick(conn: sa.Connection) -> Liveness | None:
    """When a scheduler, any of them, last ticked; None if none ever did."""
    row = conn.execute(
        sa.select(firings.c.created, firings.c.job_uuid).where(
            firings.c.scheduled_job_id == LIVENESS_ID
        )
    ).one_or_none()
    return None if row is None else Liveness(row.created, row.job_uuid)


# --- firing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Fired:
    scheduled_job: str
    fire_time: dt.datetime
    job_uuid: str
    action: str


class Scheduler:
    """Fires due scheduled jobs. ``clock`` returns the current aware UTC time."""

    def __init__(
        self,
        registry: Registry,
        clock: Callable[[], dt.datetime] = utcnow,
        *,
        missed: str | None = None,
        grace_s: float | None = None,
        interval_s: float | None = None,
    ) -> None:
        settings = get_settings(registry)
        self.registry = registry
        self.engine: sa.Engine = registry["nick_jobs.engine"]
        self.queue = registry["nick_jobs.queue"]
        self.clock = clock
        self.missed = missed or settings.missed
        if self.missed not in MISSED_POLICIES:
            raise ValueError(f"missed must be one of {MISSED_POLICIES}, not {self.missed!r}")
        self.grace = dt.timedelta(seconds=grace_s or settings.grace_s)
        self.interval_s = interval_s or settings.interval_s
        # When the last tick ended (on ``clock``), and the earliest slot still to come.
        self.last_tick: dt.datetime | None = None
        self.next_due: dt.datetime | None = None
        # When this scheduler last recorded its liveness, on the real clock.
        self._recorded: dt.datetime | None = None
        self.name = process_name()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- one tick ----------------------------------------------------------------------

    def tick(self, now: dt.datetime | None = None) -> list[Fired]:
        """Fire every scheduled job that is due at ``now``; return what was fired here."""
        now = now or self.clock()
        if self.registry.get(SYNC_PENDING):
            sync_declared(self.registry, now)
            self.registry[SYNC_PENDING] = False
        with self.engine.connect() as conn:
            due = conn.execute(
                sa.select(scheduled)
                .where(
                    scheduled.c.enabled.is_(True),
                    sa.or_(scheduled.c.next_run.is_(None), scheduled.c.next_run <= now),
                )
                # The longest-waiting first, and the same order on every database: a
                # table's own order changes as its rows are updated.
                .order_by(scheduled.c.next_run.nulls_first(), scheduled.c.id)
            ).all()
        fired = []
        for row in due:
            try:
                result = self._fire(row, now)
            except Exception:
                log.exception("could not fire scheduled job %r", row.id)
                continue
            if result is not None:
                fired.append(result)
        with self.engine.connect() as conn:
            self.next_due = conn.execute(
                sa.select(sa.func.min(scheduled.c.next_run)).where(scheduled.c.enabled.is_(True))
            ).scalar_one_or_none()
        self.last_tick = now
        self._record_liveness()
        return fired

    def _record_liveness(self) -> None:
        # The real clock, not ``clock``: health checks compare it with the time now.
        real = utcnow()
        if self._recorded is not None and real - self._recorded < LIVENESS_EVERY:
            return
        record_tick(self.engine, real, self.name)
        self._recorded = real

    def _fire(self, row: Any, now: dt.datetime) -> Fired | None:
        if row.next_run is None:
            # Enabled but never scheduled (written by hand, or by an older version).
            with self.engine.begin() as conn:
                conn.execute(
                    scheduled.update()
                    .where(scheduled.c.id == row.id, scheduled.c.next_run.is_(None))
                    .values(next_run=cron.next_fire(row.schedule, row.timezone, now))
                )
            return None
        # The latest slot that has come: row.next_run itself, unless slots were missed.
        fire_time = max(cron.last_fire(row.schedule, row.timezone, now), row.next_run)
        on_time = now - fire_time <= self.grace
        fire = on_time or self.missed == "catchup"
        following = cron.next_fire(row.schedule, row.timezone, now)
        with transaction(self.engine) as conn:
            claim = (
                scheduled.update()
                .where(
                    scheduled.c.id == row.id,
                    scheduled.c.next_run == row.next_run,
                    scheduled.c.enabled.is_(True),
                )
                .values(next_run=following)
                .returning(
                    scheduled.c.action,
                    scheduled.c.params,
                    scheduled.c.title,
                    scheduled.c.description,
                    scheduled.c.actor,
                    scheduled.c.declared,
                )
            )
            current = conn.execute(claim).one_or_none()
            if current is None:
                return None  # another scheduler fired this slot, or the row changed
            if not fire:
                log.info(
                    "scheduled job %r: skipped the slot of %s, missed by %s",
                    row.id,
                    fire_time.isoformat(),
                    now - fire_time,
                )
                return None
            refused = self._refusal(conn, current)
            if refused is not None:
                reason, message = refused
                conn.execute(
                    scheduled.update()
                    .where(scheduled.c.id == row.id)
                    .values(
                        enabled=False,
                        next_run=None,
                        skipped_slot=fire_time,
                        skipped_at=now,
                        skip_reason=reason,
                        skip_message=message,
                    )
                )
            else:
                fired = self._create_job(conn, row.id, current, fire_time, now)
        # Committed: only now is the refusal recorded for good, and worth telling.
        if refused is not None:
            SCHEDULED_FIRINGS_SKIPPED.labels(reason).inc()
            log.warning(
                "scheduled job %r: refused the firing of %s, created no job, disabled it: %s",
                row.id,
                fire_time.isoformat(),
                message,
            )
            return None
        return fired

    def _refusal(self, conn: sa.Connection, current: Any) -> tuple[str, str] | None:
        """Why the owner of the scheduled job just claimed may not fire it, or None.

        Read in the claim's transaction. On PostgreSQL ``FOR SHARE`` holds the owner's
        row until the commit: a change of its roles, or its removal, waits for this
        firing, so no job made with rights the owner had a moment ago commits after the
        change. On SQLite the claim's write already keeps every other writer out.
        """
        if current.declared and current.actor == SYSTEM_ACTOR:
            return None  # the configuration's own, not a user's
        owner = conn.execute(
            sa.select(users.c.roles)
            .where(users.c.login == current.actor)
            .with_for_update(read=True)
        ).one_or_none()
        if owner is None:
            return OWNER_MISSING, f"Its owner {current.actor!r} no longer exists."
        permission = required_permission(self.registry, current.action, conn)
        if owner_may_submit(current.actor, owner.roles or (), permission):
            return None
        return OWNER_LACKS_PERMISSION, (
            f"Its owner {current.actor!r} no longer has the permission {permission!r} "
            f"that the action {current.action!r} needs."
        )

    def _create_job(
        self, conn: sa.Connection, id_: str, current: Any, fire_time: dt.datetime, now: dt.datetime
    ) -> Fired | None:
        """The job of a firing its owner may make, in the claim's transaction."""
        try:
            # A remote action's job is made under its current version, for a consumer.
            remote = (
                None
                if current.action in get_registry(self.registry)
                else remote_actions.get(conn, current.action)
            )
            with savepoint(conn):
                job = lifecycle.create(
                    conn,
                    action=current.action,
                    params={
                        "scheduled_job": id_,
                        "action": current.action,
                        **(current.params or {}),
                    },
                    actor=current.actor,
                    title=current.title,
                    description=current.description,
                    action_version=remote.version if remote is not None else None,
                    send=self.queue.send,
                )
                conn.execute(
                    firings.insert().values(
                        scheduled_job_id=id_,
                        fire_time=fire_time,
                        job_uuid=job["uuid"],
                        created=now,
                    )
                )
        except IntegrityError:
            # This slot already has its job; next_run still moves on.
            log.info("scheduled job %r: slot %s already fired", id_, fire_time)
            return None
        # ``last_run`` is when it last created a job: set with the job, not by the claim,
        # which a refused firing also makes.
        conn.execute(scheduled.update().where(scheduled.c.id == id_).values(last_run=now))
        # Only the latest firing is needed to refuse a repeat of it.
        conn.execute(
            firings.delete().where(
                firings.c.scheduled_job_id == id_, firings.c.fire_time < fire_time
            )
        )
        log.info("scheduled job %r fired for %s: job %s", id_, fire_time.isoformat(), job["uuid"])
        return Fired(id_, fire_time, job["uuid"], current.action)

    # --- the loop ----------------------------------------------------------------------

    def _pause(self) -> float:
        """Seconds until the next tick: the next slot, at most ``interval_s`` away."""
        if self.next_due is None:
            return self.interval_s
        until = (self.next_due - self.clock()).total_seconds()
        return min(self.interval_s, max(until, 0.05))

    def run(self, stop: threading.Event | None = None) -> None:
        """Tick until ``stop`` (or :meth:`stop`) is set."""
        stop = stop or self._stop
        while not stop.is_set() and not self._stop.is_set():
            try:
                self.tick()
            except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
                # The database is away: keep trying; nothing is lost, only late.
                log.warning("scheduler tick failed, the database is not reachable: %s", exc)
            except Exception:
                log.exception("scheduler tick failed")
            stop.wait(self._pause())

    def start(self) -> None:
        """Run :meth:`run` on a daemon thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="nick-jobs-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


# --- start-up and the command ----------------------------------------------------------


def on_start(registry: Registry) -> Scheduler | None:
    """At application start: write the declared schedules, start the embedded scheduler.

    A database that is down doesn't stop the start (the API answers 503 until it is
    back): the declared schedules are then written by the first tick that reaches it.
    A declaration that is wrong does stop it.
    """
    try:
        sync_declared(registry)
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        log.warning("could not write the declared schedules now; will retry: %s", exc)
        registry[SYNC_PENDING] = True
    if not get_settings(registry).embedded:
        return None
    scheduler = Scheduler(registry)
    registry["nick_jobs.scheduling.scheduler"] = scheduler
    scheduler.start()
    atexit.register(scheduler.stop)
    return scheduler


def includeme(config: Configurator) -> None:
    config.registry["nick_jobs.scheduler.settings"] = parse_settings(
        config.get_settings(), registry_settings(config.registry)
    )
    config.registry["nick_jobs.declared_schedules"] = {}
    config.add_directive("add_scheduled_job", add_scheduled_job, action_wrap=False)
