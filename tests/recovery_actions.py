"""Actions for the recovery tests (``nick_jobs.includes = ... tests.recovery_actions``)."""

from __future__ import annotations

from typing import Any

from nick_jobs.web.permissions import Permission


def patient(params: dict[str, Any], ctx) -> dict[str, Any]:
    """Its first attempt runs for a minute (long enough to be killed); later ones return."""
    if ctx.attempt == 1:
        ctx.sleep(60)
    return {"attempt": ctx.attempt}


def includeme(config) -> None:
    config.add_job_action(
        "patient", patient, title="Patient", permission=Permission.ADD_JOBS.value, max_retries=1
    )
