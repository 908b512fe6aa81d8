"""The job's JSON: Nick's fields plus ``@id``, ``attempt``, ``progress``, ``parent``,
``next_run`` and ``error``."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from nick_jobs.jobs.model import Job, JobStatus


def isoformat(value: dt.datetime | None) -> str | None:
    """UTC with milliseconds and ``Z``, as JavaScript's ``toISOString()`` writes it."""
    if value is None:
        return None
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
    """A row of :data:`nick_jobs.jobs.listing.LIST_COLUMNS`, by position: a page of jobs is the
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


# --- the same object, written by PostgreSQL ----------------------------------------------
# A page of jobs is the largest thing the API serialises. On PostgreSQL the database
# writes each row's JSON itself, in C: decoding 100 jsonb values and 200 timestamps into
# Python objects and encoding them again was most of a page's CPU. What follows is
# _job, key for key and in its order; tests hold the two equal.

_UTC = sa.literal_column("'UTC'")
_ISO_UTC = sa.literal_column("""'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'""")
_EMPTY = sa.literal_column("'{}'::jsonb")
_JSON_NULL = sa.literal_column("'null'::jsonb")
_EMPTY_TEXT = sa.literal_column("'\"\"'::jsonb")


def _iso_sql(column: Any) -> Any:
    # isoformat(): UTC, milliseconds cut (to_char cuts too), Z.
    return sa.func.to_char(sa.func.timezone(_UTC, column), _ISO_UTC)


def _object_or_empty_sql(column: Any) -> Any:
    # `value or {}`: SQL NULL and a stored JSON null both give {}.
    return sa.func.coalesce(sa.func.nullif(column, _JSON_NULL), _EMPTY)


def _key(name: str) -> Any:
    return sa.literal_column("'" + name + "'")


def job_json_sql(base_url: Any) -> sa.ColumnElement[str]:
    """A job row's JSON text, as :func:`listed_job_json` makes it from the same row.

    ``base_url`` is the container URL (a bind parameter): ``@id`` is it, ``/``, the uuid.
    PostgreSQL only.
    """
    fields = [
        ("@id", sa.func.concat(base_url, sa.literal_column("'/'"), Job.uuid)),
        ("uuid", Job.uuid),
        ("title", Job.title),
        ("description", Job.description),
        ("params", _object_or_empty_sql(Job.params)),
        ("actor", Job.actor),
        ("created", _iso_sql(Job.created)),
        ("started", _iso_sql(Job.started)),
        ("finished", _iso_sql(Job.finished)),
        ("status", Job.status),
        ("result", _object_or_empty_sql(Job.result)),
        ("attempt", Job.attempt),
        ("progress", Job.progress),
        ("parent", Job.parent),
        ("next_run", _iso_sql(Job.next_run)),
    ]
    error = sa.func.json_build_object(
        _key("type"),
        sa.func.coalesce(Job.error.op("->")(_key("type")), _EMPTY_TEXT),
        _key("message"),
        sa.func.coalesce(Job.error.op("->")(_key("message")), _EMPTY_TEXT),
    )
    # `status == FAILED and error`: a failed job with a non-empty error object.
    failed = sa.and_(
        Job.status == sa.literal_column("'" + JobStatus.FAILED.value + "'"),
        sa.func.jsonb_typeof(Job.error) == sa.literal_column("'object'"),
        Job.error != _EMPTY,
    )

    def build(pairs: list[tuple[str, Any]]) -> Any:
        return sa.func.json_build_object(*(part for k, v in pairs for part in (_key(k), v)))

    written = sa.case((failed, build([*fields, ("error", error)])), else_=build(fields))
    return sa.cast(written, sa.Text)
