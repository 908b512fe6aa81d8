"""Scheduled jobs: cron rules that create jobs, their storage and the scheduler."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyramid.config import Configurator


def includeme(config: Configurator) -> None:
    # The settings and the config.add_scheduled_job directive, before add-ons use it.
    config.include("nick_jobs.scheduling.scheduler")
