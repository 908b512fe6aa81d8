"""Scheduled jobs: cron rules that create jobs, their storage and the scheduler."""

from __future__ import annotations


def includeme(config) -> None:
    # The settings and the config.add_scheduled_job directive, before add-ons use it.
    config.include("nick_jobs.scheduling.scheduler")
