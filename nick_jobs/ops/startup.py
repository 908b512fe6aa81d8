"""What happens once the application is built: migrate (development), seed, start workers."""

from __future__ import annotations

import atexit
import logging
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Session

from nick_jobs.db import migrations
from nick_jobs.jobs import lifecycle
from nick_jobs.scheduling import scheduler
from nick_jobs.settings import registry_settings
from nick_jobs.users.accounts import add_user
from nick_jobs.users.model import User
from nick_jobs.web.permissions import ADMINISTRATOR_ROLE
from nick_jobs.worker.sweeper import EmbeddedSweeperMiddleware, Sweeper

if TYPE_CHECKING:
    from pyramid.events import ApplicationCreated

log = logging.getLogger(__name__)


def ensure_bootstrap_admin(engine: sa.Engine) -> None:
    """Create ``admin``/``admin`` (Administrator) if no such user exists. Never in production."""
    with Session(engine) as session, session.begin():
        if session.get(User, "admin") is None:
            add_user(session, "admin", "admin", fullname="Admin", roles=[ADMINISTRATOR_ROLE])
            log.warning("created the development user admin/admin")


def on_application_created(event: ApplicationCreated) -> None:
    registry = event.app.registry
    settings = registry_settings(registry)
    engine = registry["nick_jobs.engine"]
    if settings.auto_migrate:
        migrations.upgrade(engine)
    if settings.bootstrap_admin:
        ensure_bootstrap_admin(engine)
    queue = registry["nick_jobs.queue"]
    if settings.embedded_broker and settings.embedded_worker_threads > 0:
        # The sweeper (lost jobs, lost messages) runs for as long as the embedded worker.
        registry["nick_jobs.worker.sweeper"] = sweeper = Sweeper(registry)
        queue.broker.add_middleware(EmbeddedSweeperMiddleware(sweeper))
        queue.start_embedded_worker(settings.embedded_worker_threads)
        atexit.register(queue.stop_embedded_worker)
        # The embedded queue lives in memory: jobs waiting when the process stopped are
        # still "created" in the database, so they are sent again now.
        with engine.connect() as conn:
            resent = lifecycle.send_waiting(conn, queue.send)
        if resent:
            log.info("sent %d waiting jobs to the embedded worker", resent)
    # Declared schedules are written; the embedded scheduler starts (development).
    scheduler.on_start(registry)
