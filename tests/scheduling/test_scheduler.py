"""The scheduler with a fake clock: one job per slot, races, missed slots, time zones,
and the owner's rights checked at every firing.

Also the cron rules, declared schedules (ini file, directive, the nightly prune), the
embedded scheduler thread, ``nick-jobs scheduler`` and the migrations of the two tables.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
import webtest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from prometheus_client import REGISTRY
from sqlalchemy.orm import Session

from alembic import command
from nick_jobs import main
from nick_jobs.cli.admin import build_parser
from nick_jobs.db import get_engine, migrations
from nick_jobs.db.meta import Base
from nick_jobs.jobs.model import Job
from nick_jobs.scheduling import cron
from nick_jobs.scheduling.model import ScheduledFiring, ScheduledJob
from nick_jobs.scheduling.scheduled_jobs import upcoming, update
from nick_jobs.scheduling.scheduler import (
    LIVENESS_ID,
    Scheduler,
    last_tick,
    parse_settings,
    record_tick,
    sync_declared,
)
from nick_jobs.settings import ConfigurationError
from nick_jobs.settings import parse as parse_base_settings
from nick_jobs.users import tokens
from nick_jobs.users.accounts import add_user, remove_user
from nick_jobs.users.model import User
from tests import processes
from tests.conftest import (
    PG_ADMIN_URL,
    PG_TEST_DB,
    REDIS_URL,
    ROOT,
    base_settings,
    need,
    reset_database,
    write_ini,
)

AMS = "Europe/Amsterdam"
scheduled = ScheduledJob.__table__
firings = ScheduledFiring.__table__
jobs = Job.__table__
users = User.__table__


def at(text: str) -> dt.datetime:
    """``"2026-01-05 10:05"`` (UTC) as an aware datetime."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


class FakeClock:
    def __init__(self, now: str) -> None:
        self.now = at(now)

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class World:
    app: Any
    engine: sa.Engine
    clock: FakeClock

    @property
    def registry(self):
        return self.app.registry

    def add(
        self,
        id_: str,
        schedule: str,
        *,
        timezone: str = "UTC",
        enabled: bool = True,
        params: dict[str, Any] | None = None,
        action: str = "dummy",
        actor: str = "admin",
        declared: bool = False,
    ) -> None:
        """A scheduled job as ``POST /@scheduled-jobs`` by ``actor`` stores it, at the clock's
        time (``dummy`` needs ``Manage Site``)."""
        now = self.clock()
        with self.engine.begin() as conn:
            conn.execute(
                scheduled.insert().values(
                    id=id_,
                    title=f"Title of {id_}",
                    description=f"Description of {id_}",
                    action=action,
                    params=params or {"steps": 2},
                    schedule=schedule,
                    timezone=timezone,
                    enabled=enabled,
                    actor=actor,
                    declared=declared,
                    created=now,
                    last_run=None,
                    next_run=upcoming(schedule, timezone, enabled, now),
                )
            )

    def scheduler(self, **options: Any) -> Scheduler:
        return Scheduler(self.registry, clock=self.clock, **options)

    def row(self, id_: str):
        with self.engine.connect() as conn:
            return conn.execute(sa.select(scheduled).where(scheduled.c.id == id_)).one_or_none()

    def rows(self) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return {row.id: row for row in conn.execute(sa.select(scheduled))}

    def jobs(self) -> list[Any]:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(jobs).order_by(jobs.c.id)).all()

    def set_roles(self, login: str, roles: list[str]) -> None:
        with self.engine.begin() as conn:
            conn.execute(users.update().where(users.c.login == login).values(roles=roles))

    def remove_user(self, login: str) -> None:
        with Session(self.engine) as session, session.begin():
            assert remove_user(session, login)

    def add_user(self, login: str, roles: list[str]) -> None:
        with Session(self.engine) as session, session.begin():
            add_user(session, login, f"{login}-password", roles=roles)

    def app_client(self) -> webtest.TestApp:
        return webtest.TestApp(self.app, extra_environ={"HTTP_HOST": "localhost:8080"})


def _reset(engine: sa.Engine) -> None:
    reset_database(engine)  # no jobs; users admin, alice and bob
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM scheduled_firings"))
        conn.execute(sa.text("DELETE FROM scheduled_jobs"))


@pytest.fixture
def make_world(request, tmp_path):
    """``make_world(database="sqlite"|"postgresql", now=..., **settings)``."""
    made = []

    def factory(database: str = "sqlite", now: str = "2026-01-05 10:02", **overrides: str):
        if database == "sqlite":
            url = f"sqlite:///{tmp_path / f'jobs{len(made)}.sqlite'}"
        else:
            url = request.getfixturevalue("pg_url")
        engine = get_engine(url)
        migrations.upgrade(engine)
        _reset(engine)
        settings = base_settings(
            **{
                "sqlalchemy.url": url,
                "nick_jobs.broker_url": "stub://",
                # Fired jobs stay created: these tests look at what the scheduler wrote.
                "nick_jobs.embedded_worker_threads": "0",
                **overrides,
            }
        )
        world = World(main({}, **settings), engine, FakeClock(now))
        made.append(world)
        return world

    yield factory
    for world in made:
        scheduler = world.registry.get("nick_jobs.scheduling.scheduler")
        if scheduler is not None:
            scheduler.stop()
        world.registry["nick_jobs.engine"].dispose()
        world.engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request, make_world) -> World:
    return make_world(request.param)


# --- cron ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 2 * *", "A schedule has 5 fields"),
        ("0 0 2 * * *", "has 6"),
        ("@daily", "has 1"),
        ("60 * * * *", "'60 * * * *' is not a valid cron expression"),
        ("* 24 * * *", "is not a valid cron expression"),
        ("*/0 * * * *", "is not a valid cron expression"),
        ("0 0 31 4 *", "'0 0 31 4 *' never fires"),
    ],
)
def test_invalid_cron_expressions_say_why(expression, message):
    with pytest.raises(cron.InvalidSchedule) as raised:
        cron.normalize(expression)
    assert message in str(raised.value)


def test_valid_cron_expressions_are_normalized():
    assert cron.normalize("  0   2 * *  MON-FRI ") == "0 2 * * MON-FRI"
    assert cron.normalize("*/15 9-17 1,15 JAN *") == "*/15 9-17 1,15 JAN *"


def test_time_zones():
    assert str(cron.zone("Europe/Amsterdam")) == AMS
    for bad in ("Mars/Olympus", "", "../../etc/passwd"):
        with pytest.raises(cron.InvalidSchedule):
            cron.zone(bad)


def test_next_and_last_fire():
    assert cron.next_fire("0 2 * * *", "UTC", at("2026-01-05 02:00")) == at("2026-01-06 02:00")
    assert cron.next_fire("0 2 * * *", "UTC", at("2026-01-05 01:59")) == at("2026-01-05 02:00")
    assert cron.last_fire("0 2 * * *", "UTC", at("2026-01-05 02:00")) == at("2026-01-05 02:00")
    assert cron.last_fire("0 2 * * *", "UTC", at("2026-01-05 01:59")) == at("2026-01-04 02:00")
    # Winter (UTC+1) and summer (UTC+2) in Amsterdam.
    assert cron.next_fire("0 9 * * *", AMS, at("2026-01-05 00:00")) == at("2026-01-05 08:00")
    assert cron.next_fire("0 9 * * *", AMS, at("2026-07-05 00:00")) == at("2026-07-05 07:00")


def test_a_time_skipped_by_daylight_saving_fires_right_after_the_gap():
    # 29 March 2026: 02:00 CET becomes 03:00 CEST (01:00 UTC).
    assert cron.next_fire("30 2 * * *", AMS, at("2026-03-28 12:00")) == at("2026-03-29 01:00")
    assert cron.next_fire("30 2 * * *", AMS, at("2026-03-29 01:00")) == at("2026-03-30 00:30")


def test_a_time_repeated_by_daylight_saving_fires_once_unless_the_hour_is_a_wildcard():
    # 25 October 2026: 03:00 CEST becomes 02:00 CET; 02:30 happens at 00:30 and 01:30 UTC.
    slots, t = [], at("2026-10-24 12:00")
    for _ in range(2):
        t = cron.next_fire("30 2 * * *", AMS, t)
        slots.append(t)
    assert slots == [at("2026-10-25 00:30"), at("2026-10-26 01:30")]
    # Hourly: every real hour fires, the repeated one included.
    slots, t = [], at("2026-10-24 23:30")
    for _ in range(4):
        t = cron.next_fire("0 * * * *", AMS, t)
        slots.append(t)
    assert slots == [at(f"2026-10-25 0{h}:00") for h in range(4)]
    assert cron.last_fire("30 2 * * *", AMS, at("2026-10-25 01:45")) == at("2026-10-25 00:30")


# --- firing ----------------------------------------------------------------------------


def test_fires_exactly_once_per_slot(world):
    world.add("every-five", "*/5 * * * *")
    scheduler = world.scheduler()
    assert world.row("every-five").next_run == at("2026-01-05 10:05")
    assert scheduler.tick(at("2026-01-05 10:04:59")) == []
    fired = scheduler.tick(at("2026-01-05 10:05"))
    assert [(f.scheduled_job, f.fire_time) for f in fired] == [
        ("every-five", at("2026-01-05 10:05"))
    ]
    assert scheduler.tick(at("2026-01-05 10:05")) == []
    assert scheduler.tick(at("2026-01-05 10:09:59")) == []
    assert len(scheduler.tick(at("2026-01-05 10:10:02"))) == 1
    made = world.jobs()
    assert len(made) == 2
    job = made[0]
    assert job.params == {"scheduled_job": "every-five", "action": "dummy", "steps": 2}
    assert (job.action, job.title, job.description, job.actor, job.status) == (
        "dummy",
        "Title of every-five",
        "Description of every-five",
        "admin",
        "created",
    )
    row = world.row("every-five")
    assert (row.last_run, row.next_run) == (at("2026-01-05 10:10:02"), at("2026-01-05 10:15"))
    assert scheduler.next_due == at("2026-01-05 10:15")
    with world.engine.connect() as conn:
        kept = conn.execute(
            sa.select(firings.c.fire_time, firings.c.job_uuid).where(
                firings.c.scheduled_job_id == "every-five"
            )
        ).all()
    assert kept == [(at("2026-01-05 10:10"), made[1].uuid)]


def test_fired_jobs_are_sent_after_the_commit(make_world):
    world = make_world()
    world.add("nightly", "0 0 * * *")
    sent = []
    scheduler = world.scheduler()
    scheduler.queue = type("Queue", (), {"send": lambda self, *args: sent.append(args)})()
    fired = scheduler.tick(at("2026-01-06 00:00:01"))
    assert sent == [(fired[0].job_uuid, "dummy", 0.0)]


def test_a_remote_action_is_scheduled_and_its_jobs_wait_for_a_consumer(world):
    """A schedule of a remote action (declared as data) creates its job under the
    action's current version, with no broker message: a consumer claims it."""
    client = world.app_client()
    token = tokens.issue(world.registry["nick_jobs.settings"], "admin", "Admin")
    admin = {"Authorization": f"Bearer {token}"}
    definition = {"params": {"type": "object", "properties": {"site": {"type": "string"}}}}
    client.put_json("/@job-actions/reindex", definition, headers=admin, status=201)
    client.put_json("/@job-actions/reindex", {**definition, "lease": 90}, headers=admin)
    # Its params are checked against the action's JSON Schema, as a submit's.
    nightly = {"id": "nightly-reindex", "action": "reindex", "schedule": "0 0 * * *"}
    res = client.post_json(
        "/@scheduled-jobs", {**nightly, "params": {"site": 7}}, headers=admin, status=400
    )
    assert "site" in res.json["error"]["fields"]["params"]
    client.post_json(
        "/@scheduled-jobs", {**nightly, "params": {"site": "news"}}, headers=admin, status=201
    )
    listed = client.get("/@scheduled-job-actions", headers=admin).json
    assert {"reindex": "remote"}.items() <= {a["name"]: a["kind"] for a in listed}.items()
    sent = []
    scheduler = world.scheduler()
    scheduler.queue = type("Queue", (), {"send": lambda self, *args: sent.append(args)})()
    # Made through the API, its first slot is the next midnight from the real clock.
    slot = world.row("nightly-reindex").next_run
    fired = scheduler.tick(slot + dt.timedelta(seconds=1))
    assert [f.scheduled_job for f in fired] == ["nightly-reindex"]
    assert sent == []
    [job] = world.jobs()
    assert (job.action, job.action_version, job.status) == ("reindex", 2, "created")
    assert job.params == {"scheduled_job": "nightly-reindex", "action": "reindex", "site": "news"}


def test_schedulers_racing_create_one_job_per_firing(world):
    """Four schedulers tick at the same instants; each slot of each schedule fires once."""
    for name in ("a", "b", "c"):
        world.add(name, "* * * * *")
    schedulers = [world.scheduler() for _ in range(4)]
    slots = [at("2026-01-05 10:03") + dt.timedelta(minutes=i) for i in range(8)]
    barrier = threading.Barrier(len(schedulers))

    def run(scheduler: Scheduler) -> list[tuple[str, dt.datetime]]:
        out = []
        for slot in slots:
            barrier.wait(timeout=30)
            out += [(f.scheduled_job, f.fire_time) for f in scheduler.tick(slot)]
        return out

    with ThreadPoolExecutor(len(schedulers)) as pool:
        results = list(pool.map(run, schedulers))
    fired = [item for result in results for item in result]
    assert sorted(fired) == sorted((name, slot) for name in "abc" for slot in slots)
    made = world.jobs()
    assert len(made) == 3 * len(slots)
    assert {j.params["scheduled_job"] for j in made} == {"a", "b", "c"}


def test_the_firing_key_refuses_a_second_job_for_a_slot(world):
    """Even if next_run is put back on a slot that fired, the slot creates no second job."""
    world.add("nightly", "0 0 * * *")
    scheduler = world.scheduler()
    assert len(scheduler.tick(at("2026-01-06 00:00:01"))) == 1
    with world.engine.begin() as conn:
        conn.execute(scheduled.update().values(next_run=at("2026-01-06 00:00")))
    assert scheduler.tick(at("2026-01-06 00:00:02")) == []
    assert len(world.jobs()) == 1
    assert world.row("nightly").next_run == at("2026-01-07 00:00")


def test_slots_missed_while_down_are_caught_up_once(make_world):
    world = make_world(now="2026-01-05 00:30")
    world.add("hourly", "0 * * * *")
    scheduler = world.scheduler()
    # Nothing ran from 00:30 until 06:30: five slots missed, one job.
    fired = scheduler.tick(at("2026-01-05 06:30"))
    assert [f.fire_time for f in fired] == [at("2026-01-05 06:00")]
    assert scheduler.tick(at("2026-01-05 06:31")) == []
    assert len(world.jobs()) == 1
    row = world.row("hourly")
    assert (row.last_run, row.next_run) == (at("2026-01-05 06:30"), at("2026-01-05 07:00"))


def test_slots_missed_while_down_are_skipped_when_configured(make_world):
    world = make_world(now="2026-01-05 00:30", **{"nick_jobs.scheduler.missed": "skip"})
    world.add("hourly", "0 * * * *")
    scheduler = world.scheduler()
    assert scheduler.missed == "skip"
    assert scheduler.tick(at("2026-01-05 06:30")) == []
    row = world.row("hourly")
    assert (row.last_run, row.next_run) == (None, at("2026-01-05 07:00"))
    # A slot within the grace period (60 s by default) is on time, not missed.
    assert len(scheduler.tick(at("2026-01-05 07:00:45"))) == 1
    assert len(world.jobs()) == 1


def test_disabled_scheduled_jobs_never_fire(make_world):
    world = make_world()
    world.add("off", "* * * * *", enabled=False)
    world.add("switched-off", "* * * * *")
    with world.engine.begin() as conn:
        conn.execute(
            scheduled.update().where(scheduled.c.id == "switched-off").values(enabled=False)
        )
    scheduler = world.scheduler()
    for minute in range(3, 8):
        assert scheduler.tick(at(f"2026-01-05 10:0{minute}")) == []
    assert world.jobs() == []
    assert world.row("off").next_run is None


def test_an_enabled_row_without_next_run_gets_one(make_world):
    world = make_world()
    world.add("nightly", "0 0 * * *")
    with world.engine.begin() as conn:
        conn.execute(scheduled.update().values(next_run=None))
    assert world.scheduler().tick(at("2026-01-05 12:00")) == []
    assert world.row("nightly").next_run == at("2026-01-06 00:00")


def test_time_zones_and_daylight_saving(make_world):
    world = make_world(now="2026-03-27 12:00")
    world.add("nine", "0 9 * * *", timezone=AMS)
    world.add("half-past-two", "30 2 * * *", timezone=AMS)
    scheduler = world.scheduler()
    fired_at = []
    t = at("2026-03-27 12:00")
    while t < at("2026-03-30 12:00"):
        t += dt.timedelta(minutes=15)
        fired_at += [(f.scheduled_job, f.fire_time) for f in scheduler.tick(t)]
    assert fired_at == [
        ("half-past-two", at("2026-03-28 01:30")),  # 02:30 CET
        ("nine", at("2026-03-28 08:00")),  # 09:00 CET
        ("half-past-two", at("2026-03-29 01:00")),  # 02:30 doesn't exist: 03:00 CEST
        ("nine", at("2026-03-29 07:00")),  # 09:00 CEST
        ("half-past-two", at("2026-03-30 00:30")),
        ("nine", at("2026-03-30 07:00")),
    ]


# --- the owner's rights, checked at every firing ---------------------------------------


def skipped(reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "nick_jobs_scheduled_firings_skipped_total", {"reason": reason}
    )
    return value or 0.0


def _demote_by_removal(world: World) -> None:
    world.remove_user("carol")


def _demote_by_re_adding(world: World) -> None:
    world.remove_user("carol")
    world.add_user("carol", roles=[])


def _demote_by_role(world: World) -> None:
    world.set_roles("carol", ["Editor"])


@pytest.mark.parametrize(
    ("demote", "reason", "says"),
    [
        (_demote_by_removal, "owner_missing", "Its owner 'carol' no longer exists"),
        (
            _demote_by_re_adding,
            "owner_lacks_permission",
            "Its owner 'carol' no longer has the permission 'Manage Site' "
            "that the action 'dummy' needs",
        ),
        (_demote_by_role, "owner_lacks_permission", "no longer has the permission 'Manage Site'"),
    ],
    ids=["removed", "re-added-without-the-role", "role-removed"],
)
def test_a_schedule_whose_owner_lost_the_permission_creates_no_job(
    world, caplog, demote, reason, says
):
    """An Administrator's schedule fires while they are one, and never after."""
    world.add_user("carol", roles=["Administrator"])
    world.add("carols", "*/5 * * * *", actor="carol")
    world.add("admins", "*/5 * * * *")
    scheduler = world.scheduler()
    assert {f.scheduled_job for f in scheduler.tick(at("2026-01-05 10:05"))} == {
        "carols",
        "admins",
    }
    before = world.row("carols")
    demote(world)
    counted = skipped(reason)
    with caplog.at_level(logging.WARNING, logger="nick_jobs.scheduling.scheduler"):
        fired = scheduler.tick(at("2026-01-05 10:10:03"))
    # The other schedule is not held back by this one.
    assert [f.scheduled_job for f in fired] == ["admins"]
    # A tick fires its due schedules in the order of their slot, then of their id.
    assert [j.params["scheduled_job"] for j in world.jobs()] == ["admins", "carols", "admins"]
    row = world.row("carols")
    assert (row.enabled, row.next_run, row.last_run) == (False, None, before.last_run)
    assert (row.skipped_slot, row.skipped_at, row.skip_reason) == (
        at("2026-01-05 10:10"),
        at("2026-01-05 10:10:03"),
        reason,
    )
    assert says in row.skip_message
    assert skipped(reason) == counted + 1
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "carols" in r.getMessage()
    ]
    assert len(warnings) == 1
    assert "2026-01-05T10:10:00+00:00" in warnings[0].getMessage()
    assert says in warnings[0].getMessage()
    # Disabled: later slots neither fire nor count again.
    assert scheduler.tick(at("2026-01-05 10:15:01"))[0].scheduled_job == "admins"
    assert skipped(reason) == counted + 1
    assert [j.actor for j in world.jobs()].count("carol") == 1


def test_an_owner_keeps_firing_what_any_user_may_submit(make_world):
    """The check is the action's permission: ``echo`` needs only ``Add Jobs``."""
    world = make_world()
    world.add("alices-echo", "0 * * * *", action="echo", params={"message": "hi"}, actor="alice")
    world.add("alices-dummy", "0 * * * *", actor="alice")
    fired = world.scheduler().tick(at("2026-01-05 11:00"))
    assert [f.scheduled_job for f in fired] == ["alices-echo"]
    assert world.row("alices-echo").enabled is True
    assert world.row("alices-dummy").skip_reason == "owner_lacks_permission"


def test_an_owner_given_the_role_back_is_checked_again_once_enabled(make_world):
    world = make_world()
    world.add("alices", "0 * * * *", actor="alice")
    scheduler = world.scheduler()
    assert scheduler.tick(at("2026-01-05 11:00")) == []
    assert world.row("alices").enabled is False
    world.set_roles("alice", ["Administrator"])
    with Session(world.engine) as session, session.begin():
        update(world.registry, session.get(ScheduledJob, "alices"), {"enabled": True})
    row = world.row("alices")
    assert (row.enabled, row.skip_reason, row.skipped_at, row.skipped_slot) == (
        True,
        None,
        None,
        None,
    )
    assert [f.scheduled_job for f in scheduler.tick(row.next_run)] == ["alices"]


def test_a_declared_schedule_of_the_system_fires_without_a_user(make_world):
    """``system`` is no user: a declared schedule run as it has the configuration's authority."""
    world = make_world()
    world.add("from-the-ini", "0 * * * *", actor="system", declared=True)
    # An API schedule whose owner happens to be named system is a user's like any other.
    world.add("by-the-api", "0 * * * *", actor="system")
    fired = world.scheduler().tick(at("2026-01-05 11:00"))
    assert [f.scheduled_job for f in fired] == ["from-the-ini"]
    assert world.row("by-the-api").skip_reason == "owner_missing"


def test_a_declared_schedule_of_a_user_is_checked_and_enabled_again_at_start_up(make_world):
    world = make_world(
        **{
            **DECLARED,
            "nick_jobs.schedule.echo-hourly.action": "dummy",
            "nick_jobs.schedule.echo-hourly.params": "{}",
        }
    )
    hourly = world.row("echo-hourly")
    fired = world.scheduler().tick(hourly.next_run)
    assert "echo-hourly" not in {f.scheduled_job for f in fired}
    row = world.row("echo-hourly")
    assert (row.enabled, row.skip_reason) == (False, "owner_lacks_permission")
    # The API can't enable a declared schedule; the next start-up does, and its owner is
    # checked again when it next fires.
    sync_declared(world.registry)
    row = world.row("echo-hourly")
    assert (row.enabled, row.skip_reason, row.next_run is not None) == (True, None, True)


def test_a_demotion_in_flight_when_the_slot_comes_is_seen_by_the_firing(make_world):
    """PostgreSQL: the firing reads its owner ``FOR SHARE``, so it waits for a change of the
    owner's roles that is not committed yet and then sees it, instead of firing on the roles
    of a moment before and committing its job after the demotion."""
    world = make_world("postgresql")
    world.add_user("carol", roles=["Administrator"])
    world.add("carols", "0 * * * *", actor="carol")
    scheduler = world.scheduler()

    def firing_waits_for_the_demotion() -> bool:
        with world.engine.connect() as conn:
            return bool(
                conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event_type = 'Lock' "
                        "AND query LIKE '%FOR SHARE%'"
                    )
                ).scalar_one()
            )

    with ThreadPoolExecutor(1) as pool:
        demotion = world.engine.connect()
        try:
            transaction = demotion.begin()
            demotion.execute(users.update().where(users.c.login == "carol").values(roles=[]))
            ticking = pool.submit(scheduler.tick, at("2026-01-05 11:00"))
            wait_for(firing_waits_for_the_demotion, 20, "the firing to wait for the demotion")
            assert not ticking.done()
            transaction.commit()
        finally:
            demotion.close()  # rolls back, if the test failed: the tick must not wait forever
        assert ticking.result(timeout=20) == []
    assert world.jobs() == []
    assert world.row("carols").skip_reason == "owner_lacks_permission"


# --- declared schedules ----------------------------------------------------------------

DECLARED = {
    "nick_jobs.schedules": "dummy-nightly echo-hourly",
    "nick_jobs.schedule.dummy-nightly.action": "dummy",
    "nick_jobs.schedule.dummy-nightly.schedule": "0 2 * * *",
    "nick_jobs.schedule.dummy-nightly.params": '{"steps": 3}',
    "nick_jobs.schedule.dummy-nightly.title": "Nightly dummy",
    "nick_jobs.schedule.echo-hourly.action": "echo",
    "nick_jobs.schedule.echo-hourly.schedule": "0 * * * *",
    "nick_jobs.schedule.echo-hourly.params": '{"message": "tick"}',
    "nick_jobs.schedule.echo-hourly.timezone": AMS,
    "nick_jobs.schedule.echo-hourly.actor": "alice",
}


def includeme(config) -> None:
    """An add-on declaring a schedule (``nick_jobs.includes = tests.scheduling.test_scheduler``)."""
    config.add_scheduled_job(
        "addon-weekly",
        "echo",
        "0 4 * * 0",
        params={"message": "weekly"},
        title="Weekly echo",
    )


def test_schedules_declared_in_the_ini_file_are_written_at_start_up(make_world):
    world = make_world(**DECLARED)
    rows = world.rows()
    assert set(rows) == {"dummy-nightly", "echo-hourly"}
    nightly = rows["dummy-nightly"]
    assert (nightly.action, nightly.params, nightly.title, nightly.timezone) == (
        "dummy",
        {"steps": 3},
        "Nightly dummy",
        "UTC",
    )
    assert (nightly.declared, nightly.enabled, nightly.actor) == (True, True, "system")
    assert (
        nightly.description
        == "Sleeps, reports steps, and completes or fails as asked: for demos and tests."
    )
    hourly = rows["echo-hourly"]
    assert (hourly.timezone, hourly.actor, hourly.title) == (AMS, "alice", "Echo")
    fired = world.scheduler().tick(nightly.next_run)
    assert {f.scheduled_job for f in fired} >= {"dummy-nightly"}


def test_declared_schedules_follow_the_declaration_at_each_start(make_world, tmp_path):
    first = make_world(**DECLARED)
    with first.engine.begin() as conn:
        conn.execute(scheduled.update().values(last_run=at("2026-01-05 02:00")))
    before = first.rows()
    url = first.engine.url.render_as_string(hide_password=False)
    changed = {
        **DECLARED,
        "nick_jobs.schedules": "dummy-nightly",
        "nick_jobs.schedule.dummy-nightly.schedule": "15 2 * * *",
        "sqlalchemy.url": url,
    }
    settings = base_settings(
        **{"nick_jobs.broker_url": "stub://", "nick_jobs.embedded_worker_threads": "0", **changed}
    )
    app = main({}, **settings)
    try:
        after = first.rows()
    finally:
        app.registry["nick_jobs.engine"].dispose()
    assert set(after) == {"dummy-nightly"}  # echo-hourly is no longer declared
    assert after["dummy-nightly"].schedule == "15 2 * * *"
    assert after["dummy-nightly"].next_run.minute == 15
    assert after["dummy-nightly"].last_run == before["dummy-nightly"].last_run


def test_an_unchanged_declaration_keeps_next_run(make_world):
    world = make_world(**DECLARED)
    with world.engine.begin() as conn:
        conn.execute(scheduled.update().values(next_run=at("2026-01-05 02:00")))
    sync_declared(world.registry)
    assert world.row("dummy-nightly").next_run == at("2026-01-05 02:00")


def test_declared_schedules_wait_for_a_database_that_is_not_ready(tmp_path):
    """A database not reachable (here: not migrated) at start-up doesn't stop the start."""
    url = f"sqlite:///{tmp_path / 'later.sqlite'}"
    overrides = {"sqlalchemy.url": url, "nick_jobs.embedded_worker_threads": "0"}
    app = main({}, **base_settings(**{**DECLARED, **overrides}))
    engine = get_engine(url)
    try:
        migrations.upgrade(engine)
        Scheduler(app.registry).tick()
        with engine.connect() as conn:
            ids = conn.execute(sa.select(scheduled.c.id).order_by(scheduled.c.id)).scalars()
            assert list(ids) == ["dummy-nightly", "echo-hourly"]
    finally:
        app.registry["nick_jobs.engine"].dispose()
        engine.dispose()


def test_an_add_on_declares_with_the_directive(make_world):
    includes = "tests.actions_for_tests tests.scheduling.test_scheduler"
    world = make_world(**{"nick_jobs.includes": includes})
    row = world.row("addon-weekly")
    assert (row.action, row.params, row.title, row.schedule, row.declared) == (
        "echo",
        {"message": "weekly"},
        "Weekly echo",
        "0 4 * * 0",
        True,
    )


def test_declared_schedules_are_read_only_through_the_api(make_world):
    world = make_world(**DECLARED)
    client = webtest.TestApp(world.app, extra_environ={"HTTP_HOST": "localhost:8080"})
    token = tokens.issue(world.registry["nick_jobs.settings"], "admin", "Admin")
    headers = {"Authorization": f"Bearer {token}"}
    listed = client.get("/@scheduled-jobs", headers=headers).json
    assert [(item["id"], item["declared"]) for item in listed] == [
        ("dummy-nightly", True),
        ("echo-hourly", True),
    ]
    path = "/@scheduled-jobs/dummy-nightly"
    for res in (
        client.patch_json(path, {"enabled": False}, headers=headers, status=409),
        client.delete(path, headers=headers, status=409),
    ):
        assert res.json["error"]["type"] == "Declared scheduled job"
    assert world.row("dummy-nightly").enabled is True


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"nick_jobs.schedule.dummy-nightly.action": "reindex"}, "Unknown action 'reindex'"),
        ({"nick_jobs.schedule.dummy-nightly.schedule": "0 2 * *"}, "has 5 fields"),
        ({"nick_jobs.schedule.dummy-nightly.timezone": "Nowhere"}, "Unknown time zone"),
        ({"nick_jobs.schedule.dummy-nightly.params": "[1]"}, "params must be a JSON object"),
        ({"nick_jobs.schedule.dummy-nightly.params": '{"steps": -1}'}, "steps"),
        ({"nick_jobs.schedules": "Bad.Id"}, "An id is 1 to 100 lowercase letters"),
        ({"nick_jobs.schedules": "missing"}, "nick_jobs.schedule.missing.action is required"),
        ({"nick_jobs.scheduler.missed": "always"}, "catchup or skip"),
        ({"nick_jobs.scheduler.interval": "0"}, "more than 0 seconds"),
        ({"nick_jobs.prune_schedule": "nightly"}, "nick_jobs.prune_schedule"),
        ({"nick_jobs.ready_requires_scheduler": "maybe"}, "must be true or false"),
        (
            {"nick_jobs.scheduler.interval": "10", "nick_jobs.scheduler.stale_after": "15"},
            "stale_after must be at least twice nick_jobs.scheduler.interval",
        ),
    ],
)
def test_bad_declarations_and_settings_stop_the_start(make_world, overrides, message):
    with pytest.raises(ConfigurationError, match=message):
        make_world(**{**DECLARED, **overrides})


def test_the_nightly_prune_is_declared_by_default_and_can_be_switched_off(make_world):
    def defaults(environment: str, **settings: str):
        base = {
            "sqlalchemy.url": "sqlite://",
            "nick_jobs.jwt_secret": "s" * 40,
            "nick_jobs.environment": environment,
            **settings,
        }
        return parse_settings(base, parse_base_settings(base))

    assert defaults("development").prune_schedule == "0 3 * * *"
    assert defaults("development").embedded is True
    assert defaults("development", **{"nick_jobs.prune_schedule": "off"}).prune_schedule is None
    production = defaults("production", **{"nick_jobs.broker_url": "redis://localhost"})
    assert (production.prune_schedule, production.embedded) == ("0 3 * * *", False)
    assert (defaults("testing").prune_schedule, defaults("testing").embedded) == (None, False)

    world = make_world(**{"nick_jobs.prune_schedule": "30 1 * * *"})
    prune = world.row("prune-nightly")
    assert (prune.action, prune.schedule, prune.declared, prune.actor) == (
        "prune",
        "30 1 * * *",
        True,
        "system",
    )
    url = world.engine.url.render_as_string(hide_password=False)
    app = main(
        {}, **base_settings(**{"sqlalchemy.url": url, "nick_jobs.embedded_worker_threads": "0"})
    )
    app.registry["nick_jobs.engine"].dispose()
    assert world.row("prune-nightly") is None  # the testing default is off


# --- running it ------------------------------------------------------------------------


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _due_now(world: World, id_: str) -> None:
    """A scheduled job whose slot came a second ago (real time), and whose next is months
    away: a test that outlasts a minute boundary still sees one firing."""
    world.clock.now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    world.add(id_, "0 0 1 1 *")
    with world.engine.begin() as conn:
        conn.execute(scheduled.update().values(next_run=world.clock.now))


def test_the_embedded_scheduler_runs_in_the_api_process(make_world):
    world = make_world(
        **{"nick_jobs.scheduler.embedded": "true", "nick_jobs.scheduler.interval": "0.1"}
    )
    scheduler = world.registry["nick_jobs.scheduling.scheduler"]
    assert scheduler.running
    _due_now(world, "minutely")
    made = wait_for(world.jobs, 10, "the embedded scheduler to fire")
    assert made[0].params["scheduled_job"] == "minutely"
    scheduler.stop()
    assert not scheduler.running


def test_the_scheduler_command_is_listed_and_refuses_the_embedded_broker(tmp_path):
    assert "scheduler" in build_parser().format_help()
    ini = write_ini(
        tmp_path / "stub.ini",
        base_settings(**{"sqlalchemy.url": f"sqlite:///{tmp_path / 'x.sqlite'}"}),
    )
    proc = processes.run(
        [sys.executable, "-m", "nick_jobs.cli", "scheduler", str(ini)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert proc.returncode == 2
    assert "embedded broker" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_scheduler_command_fires_on_postgresql(make_world, tmp_path):
    need("Redis", "127.0.0.1", 6379)
    world = make_world("postgresql")
    url = world.engine.url.render_as_string(hide_password=False)
    tag = secrets.token_hex(4)
    settings = base_settings(
        **{
            "sqlalchemy.url": url,
            "nick_jobs.broker_url": REDIS_URL,
            "nick_jobs.broker_namespace": f"nick-jobs-test-{tag}",
            "nick_jobs.queue": f"nick_jobs_scheduler_test_{tag}",
            "nick_jobs.scheduler.interval": "0.2",
        }
    )
    ini = write_ini(tmp_path / "scheduler.ini", settings)
    _due_now(world, "from-the-command")
    proc = subprocess.Popen(
        [sys.executable, "-m", "nick_jobs.cli", "scheduler", str(ini)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        made = wait_for(world.jobs, 20, "nick-jobs scheduler to fire")
        assert made[0].params["scheduled_job"] == "from-the-command"
        # Its ticks are what the API nodes' readiness reads; a tick records its liveness
        # after it fired, so the row may come a moment after the job.

        def liveness():
            with world.engine.connect() as conn:
                return last_tick(conn)

        assert wait_for(liveness, 20, "the scheduler's liveness").by.endswith(f":{proc.pid}")
        scheduler_check = world.app_client().get("/healthz/ready").json["checks"]["scheduler"]
        assert scheduler_check["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert len(world.jobs()) == 1


# --- liveness --------------------------------------------------------------------------


def test_each_tick_records_the_schedulers_liveness_in_one_row(world):
    with world.engine.connect() as conn:
        assert last_tick(conn) is None
    before = dt.datetime.now(dt.UTC)
    # A fake clock far in the past: liveness is on the real clock all the same.
    world.scheduler().tick()
    with world.engine.connect() as conn:
        first = last_tick(conn)
    assert first.last_tick >= before.replace(microsecond=before.microsecond // 1000 * 1000)
    assert first.by.endswith(f":{os.getpid()}")
    # Two more schedulers tick: still one row, at the latest tick.
    for _ in range(2):
        world.scheduler().tick()
    with world.engine.connect() as conn:
        rows = conn.execute(
            sa.select(firings.c.created).where(firings.c.scheduled_job_id == LIVENESS_ID)
        ).all()
    assert len(rows) == 1
    assert rows[0].created >= first.last_tick


def test_a_scheduler_whose_clock_is_behind_never_moves_the_liveness_back(world):
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    record_tick(world.engine, now, "ahead:1")
    record_tick(world.engine, now - dt.timedelta(seconds=3), "behind:2")
    with world.engine.connect() as conn:
        assert (last_tick(conn).last_tick, last_tick(conn).by) == (now, "ahead:1")
    record_tick(world.engine, now + dt.timedelta(seconds=1), "behind:2")
    with world.engine.connect() as conn:
        assert last_tick(conn).by == "behind:2"


def test_a_scheduler_in_a_tight_loop_records_its_liveness_once_per_period(make_world, monkeypatch):
    # A period no test run reaches: the count below can't depend on how fast ticks are.
    monkeypatch.setattr("nick_jobs.scheduling.scheduler.LIVENESS_EVERY", dt.timedelta(hours=1))
    world = make_world()
    scheduler = world.scheduler()
    writes: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if "scheduled_firings" in statement and statement.split()[0] in {"UPDATE", "INSERT"}:
            writes.append(statement.split()[0])

    sa.event.listen(scheduler.engine, "after_cursor_execute", count)
    try:
        for _ in range(5):
            scheduler.tick()
        world.scheduler().tick()  # another scheduler records its own
    finally:
        sa.event.remove(scheduler.engine, "after_cursor_execute", count)
    # The first tick found no row and inserted it; the next four wrote nothing.
    assert writes == ["UPDATE", "INSERT", "UPDATE"]


# --- the migration ---------------------------------------------------------------------


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_the_migrated_schema_matches_the_models(request, tmp_path, database):
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'schema.sqlite'}"
    else:
        url = request.getfixturevalue("pg_url")
    engine = get_engine(url)
    migrations.upgrade(engine)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            tables = set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert {"scheduled_jobs", "scheduled_firings"} <= tables


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_the_skip_columns_migrate_up_over_existing_schedules_and_down_again(
    request, tmp_path, database
):
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'skips.sqlite'}"
    else:
        # A database of its own, at revision 0006, beside the session's migrated one.
        url = request.getfixturevalue("pg_url").replace(PG_TEST_DB, f"{PG_TEST_DB}_skips")
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {PG_TEST_DB}_skips WITH (FORCE)"))
            conn.execute(sa.text(f"CREATE DATABASE {PG_TEST_DB}_skips"))
        admin.dispose()
    engine = get_engine(url)
    try:
        migrations.upgrade(engine, "0006")
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO scheduled_jobs (id, title, description, action, params, "
                    "schedule, timezone, enabled, actor, declared, created) VALUES ('kept', "
                    "'t', 'd', 'dummy', '{}', '0 * * * *', 'UTC', true, 'admin', false, "
                    ":created)"
                ),
                {"created": at("2026-01-05 10:00")},
            )
        migrations.upgrade(engine, "0007")
        assert migrations.current_revision(engine) == "0007"
        with engine.connect() as conn:
            row = conn.execute(sa.select(scheduled)).one()
        assert (row.id, row.enabled, row.skip_reason, row.skipped_at) == ("kept", True, None, None)
        command.downgrade(migrations.alembic_config(engine), "0006")
        with engine.connect() as conn:
            columns = {c["name"] for c in sa.inspect(conn).get_columns("scheduled_jobs")}
            assert conn.execute(sa.text("SELECT id FROM scheduled_jobs")).scalars().all() == [
                "kept"
            ]
        assert not {"skipped_slot", "skipped_at", "skip_reason", "skip_message"} & columns
    finally:
        engine.dispose()
    if database == "postgresql":
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {PG_TEST_DB}_skips WITH (FORCE)"))
        admin.dispose()
