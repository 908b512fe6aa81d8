"""The job's JSON: Nick's fields plus ``@id``, ``attempt``, ``progress``, ``parent``,
``next_run`` and ``error``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from .models import JobStatus


def isoformat(value: dt.datetime | None) -> str | None:
    """UTC with milliseconds and ``Z``, as JavaScript's ``toISOString()`` writes it."""
    if value is None:
        return None
    if value.utcoffset():
        value = value.astimezone(dt.UTC)
    # isoformat is several times faster than strftime, which matters on a 1000-row page.
    return value.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def job_json(job: Any, job_url: str) -> dict[str, Any]:
    """Serialise a job (ORM object or row with the same attributes)."""
    data = {
        "@id": job_url,
        "uuid": job.uuid,
        "title": job.title,
        "description": job.description,
        "params": job.params or {},
        "actor": job.actor,
        "created": isoformat(job.created),
        "started": isoformat(job.started),
        "finished": isoformat(job.finished),
        "status": job.status,
        "result": job.result or {},
        "attempt": job.attempt,
        # A row made by transitions.create (just submitted) has none of these yet.
        "progress": getattr(job, "progress", None),
        "parent": getattr(job, "parent", None),
        "next_run": isoformat(getattr(job, "next_run", None)),
    }
    if job.status == JobStatus.FAILED and job.error:
        data["error"] = {"type": job.error.get("type", ""), "message": job.error.get("message", "")}
    return data
