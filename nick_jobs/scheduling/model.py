"""Scheduled jobs (cron rules that create jobs) and the key that makes each firing unique."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from nick_jobs.db.meta import Base, JSONType, UTCDateTime

# A scheduled job's id: a slug, as it appears in its URL.
SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,98}[a-z0-9])?$")
SLUG_MESSAGE = (
    "An id is 1 to 100 lowercase letters, digits, '-' or '_', starting and ending with a "
    "letter or digit, e.g. 'reindex-events'."
)


class ScheduledJob(Base):
    __tablename__ = "scheduled_jobs"

    # A slug such as "reindex-events", chosen by whoever creates it.
    id: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    title: Mapped[str] = mapped_column(sa.Text, default="")
    description: Mapped[str] = mapped_column(sa.Text, default="")
    action: Mapped[str] = mapped_column(sa.String(100))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # A 5-field cron expression, read in ``timezone``.
    schedule: Mapped[str] = mapped_column(sa.String(200))
    timezone: Mapped[str] = mapped_column(sa.String(64), default="UTC")
    enabled: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    # Who created it: the jobs it fires are theirs.
    actor: Mapped[str] = mapped_column(sa.String(100))
    # Declared in the ini file or by an add-on, and kept in line with it at start-up;
    # the API does not change these.
    declared: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_run: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The next slot to fire; None while disabled. Schedulers claim a firing by moving it
    # on with a conditional UPDATE, so only one of them wins each slot.
    next_run: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The firing the scheduler refused, when it disabled the scheduled job because its
    # owner no longer exists or no longer holds the permission the action needs: the
    # slot, when, why (a short code, also the metric's label) and a sentence saying so.
    # All NULL otherwise; enabling it again clears them.
    skipped_slot: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    skipped_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    skip_reason: Mapped[str | None] = mapped_column(sa.String(40), nullable=True)
    skip_message: Mapped[str | None] = mapped_column(sa.Text, nullable=True)


class ScheduledFiring(Base):
    """One row per firing: the primary key makes a second job for the same slot impossible."""

    __tablename__ = "scheduled_firings"

    scheduled_job_id: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    fire_time: Mapped[dt.datetime] = mapped_column(UTCDateTime, primary_key=True)
    job_uuid: Mapped[str] = mapped_column(sa.String(36))
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime)
