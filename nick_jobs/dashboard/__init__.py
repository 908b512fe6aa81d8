"""The admin dashboard, served at ``nick_jobs.dashboard_path`` (docs/dashboard.md)."""

from __future__ import annotations


def includeme(config) -> None:
    pass
