"""The job's JSON: Nick's fields plus ``@id``, ``attempt``, ``progress``, ``parent``,
``next_run`` and ``error``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from .models import JobStatus


def isoformat(value: dt.datetime | str | None) -> str | None:
    """UTC with milliseconds and ``Z``, as JavaScript's ``toISOString()`` writes it.

    A string is one the database wrote so already (a page of jobs on PostgreSQL).
    """
    if value is None or value.__class__ is str:
        return value
    # A page of 50 jobs formats 200 timestamps, nearly all of them UTC already (as the
    # database's are): isoformat and a slice, half the cost of replace() then isoformat,
    # and several times cheaper than strftime.
    text = value.isoformat(timespec="milliseconds")
    if text[-6:] == "+00:00":
        return text[:-6] + "Z"
    if value.tzinfo is None:  # naive: taken as UTC
        return text + "Z"
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def job_json(job: Any, job_url: str) -> dict[str, Any]:
    """Serialise a job (ORM object or row with the same attributes)."""
    return _job(
        job_url,
        job.uuid,
        job.title,
        job.description,
        job.params,
        job.actor,
        job.created,
        job.started,
        job.finished,
        job.status,
        job.result,
        job.error,
        job.attempt,
        # A row made by transitions.create (just submitted) has none of these yet.
        getattr(job, "progress", None),
        getattr(job, "parent", None),
        getattr(job, "next_run", None),
    )


def listed_job_json(row: Any, base_url: str) -> dict[str, Any]:
    """A row of :data:`nick_jobs.listing.LIST_COLUMNS`, by position: a page of jobs is the
    hottest serialisation there is, and a row's attributes cost more. After the ``id``,
    the columns are :func:`_job`'s arguments in its order."""
    return _job(f"{base_url}/{row[1]}", *row[1:])


def _job(
    url: str,
    uuid: str,
    title: str,
    description: str,
    params: dict[str, Any] | None,
    actor: str,
    created: dt.datetime | None,
    started: dt.datetime | None,
    finished: dt.datetime | None,
    status: str,
    result: dict[str, Any] | None,
    error: dict[str, Any] | None,
    attempt: int,
    progress: dict[str, Any] | None,
    parent: str | None,
    next_run: dt.datetime | None,
) -> dict[str, Any]:
    data = {
        "@id": url,
        "uuid": uuid,
        "title": title,
        "description": description,
        "params": params or {},
        "actor": actor,
        "created": isoformat(created),
        "started": isoformat(started),
        "finished": isoformat(finished),
        "status": status,
        "result": result or {},
        "attempt": attempt,
        "progress": progress,
        "parent": parent,
        "next_run": isoformat(next_run),
    }
    if status == JobStatus.FAILED and error:
        data["error"] = {"type": error.get("type", ""), "message": error.get("message", "")}
    return data
