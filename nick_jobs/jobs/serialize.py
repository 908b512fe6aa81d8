"""The job's JSON: Nick's fields plus ``@id``, ``attempt``, ``progress``, ``parent``,
``next_run`` and ``error``.

It is defined once, in :data:`FIELDS`, by column name: :func:`job_json` writes it in
Python from anything that has the columns (a row, a row's mapping, an ORM object, a job
dict), and :func:`job_json_sql` has PostgreSQL write the same text. Adding a field is a
line there.
"""

from __future__ import annotations

import datetime as dt
import enum
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from nick_jobs.db.meta import table
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


class Written(enum.Enum):
    """How a column's value is written in the job's JSON."""

    AS_IS = "as is"
    # isoformat(): UTC, milliseconds, Z; null stays null.
    TIMESTAMP = "timestamp"
    # The stored object, {} when there is none (SQL NULL or a JSON null).
    OBJECT = "object or {}"


@dataclass(frozen=True)
class Field:
    """One key of the job's JSON: the column it is read from, and how it is written."""

    key: str
    column: str
    written: Written = Written.AS_IS
    # A job dict made by a submit has no such column yet: read as null.
    optional: bool = False


# The job's JSON after its "@id", key for key and in this order; "error" follows, for a
# failed job only (see job_json).
FIELDS: tuple[Field, ...] = (
    Field("uuid", "uuid"),
    Field("title", "title"),
    Field("description", "description"),
    Field("params", "params", Written.OBJECT),
    Field("actor", "actor"),
    Field("created", "created", Written.TIMESTAMP),
    Field("started", "started", Written.TIMESTAMP),
    Field("finished", "finished", Written.TIMESTAMP),
    Field("status", "status"),
    Field("result", "result", Written.OBJECT),
    Field("attempt", "attempt"),
    Field("progress", "progress", optional=True),
    Field("parent", "parent", optional=True),
    Field("next_run", "next_run", Written.TIMESTAMP, optional=True),
)

# Every column the JSON is made from, by name: what a reader selects to serialise a job.
# After FIELDS' come the two whose keys only some jobs have: "checkin_data" (a remote
# job's consumer sent some) and "error" (a failed job).
COLUMNS: tuple[str, ...] = (*dict.fromkeys(f.column for f in FIELDS), "checkin_data", "error")


# --- written by Python ---------------------------------------------------------------


def _object_or_empty(value: Any) -> Any:
    return {} if value is None else value


_PYTHON_WRITERS: dict[Written, Callable[[Any], Any]] = {
    Written.TIMESTAMP: isoformat,
    Written.OBJECT: _object_or_empty,
}
_KEYS = tuple(f.key for f in FIELDS)
_REWRITTEN = tuple(
    (f.key, _PYTHON_WRITERS[f.written]) for f in FIELDS if f.written is not Written.AS_IS
)
# Every column at once, in C: a row (or a job dict) has them all but right after a submit.
_READ = (*(f.column for f in FIELDS), "checkin_data", "error")
_read_items = operator.itemgetter(*_READ)
_read_attributes = operator.attrgetter(*_READ)


def _read_leniently(job: Mapping[str, Any] | Any) -> list[Any]:
    """:data:`_READ`'s values, an optional field's missing column read as None."""
    if isinstance(job, Mapping):
        return [job.get(f.column) if f.optional else job[f.column] for f in FIELDS] + [
            job.get("checkin_data"),
            job["error"],
        ]
    return [
        getattr(job, f.column, None) if f.optional else getattr(job, f.column) for f in FIELDS
    ] + [getattr(job, "checkin_data", None), job.error]


def job_json(job: Mapping[str, Any] | Any, job_url: str) -> dict[str, Any]:
    """The JSON of a job read by column name: from a mapping (a job dict, a row's
    ``_mapping``) or from attributes (a row, an ORM object)."""
    try:
        values = _read_items(job) if isinstance(job, Mapping) else _read_attributes(job)
    except (KeyError, AttributeError):
        values = _read_leniently(job)
    data: dict[str, Any] = {"@id": job_url}
    data.update(zip(_KEYS, values, strict=False))  # all but the last two
    for key, write in _REWRITTEN:
        data[key] = write(data[key])
    checkin_data = values[-2]
    # What a remote job's consumer sent with its last check-in, when it sent some.
    if checkin_data is not None:
        data["checkin_data"] = checkin_data
    error = values[-1]
    # A failed job with a non-empty error object.
    if data["status"] == JobStatus.FAILED and isinstance(error, dict) and error:
        data["error"] = {"type": error.get("type", ""), "message": error.get("message", "")}
    return data


# --- the same object, written by PostgreSQL ----------------------------------------------
# A page of jobs is the largest thing the API serialises. On PostgreSQL the database
# writes each row's JSON itself, in C: decoding 100 jsonb values and 200 timestamps into
# Python objects and encoding them again was most of a page's CPU. The expression is
# made from FIELDS as job_json is; tests hold the two equal.

_UTC: sa.ColumnClause[Any] = sa.literal_column("'UTC'")
_ISO_UTC: sa.ColumnClause[Any] = sa.literal_column("""'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'""")
_EMPTY: sa.ColumnClause[Any] = sa.literal_column("'{}'::jsonb")
_JSON_NULL: sa.ColumnClause[Any] = sa.literal_column("'null'::jsonb")
_EMPTY_TEXT: sa.ColumnClause[Any] = sa.literal_column("'\"\"'::jsonb")


def _iso_sql(column: Any) -> Any:
    # isoformat(): UTC, milliseconds cut (to_char cuts too), Z.
    return sa.func.to_char(sa.func.timezone(_UTC, column), _ISO_UTC)


def _object_or_empty_sql(column: Any) -> Any:
    # _object_or_empty(): SQL NULL and a stored JSON null both give {}.
    return sa.func.coalesce(sa.func.nullif(column, _JSON_NULL), _EMPTY)


_SQL_WRITERS: dict[Written, Callable[[Any], Any]] = {
    Written.AS_IS: lambda column: column,
    Written.TIMESTAMP: _iso_sql,
    Written.OBJECT: _object_or_empty_sql,
}


def _key(name: str) -> Any:
    return sa.literal_column("'" + name + "'")


def job_json_sql(base_url: Any) -> sa.ColumnElement[str]:
    """A job row's JSON text, as :func:`job_json` writes it from the same row.

    ``base_url`` is the container URL (a bind parameter): ``@id`` is it, ``/``, the uuid.
    PostgreSQL only.
    """
    c = table(Job).c
    fields = [
        ("@id", sa.func.concat(base_url, sa.literal_column("'/'"), c.uuid)),
        *((f.key, _SQL_WRITERS[f.written](c[f.column])) for f in FIELDS),
    ]
    error = sa.func.json_build_object(
        _key("type"),
        sa.func.coalesce(c.error.op("->")(_key("type")), _EMPTY_TEXT),
        _key("message"),
        sa.func.coalesce(c.error.op("->")(_key("message")), _EMPTY_TEXT),
    )
    # As job_json: a failed job with a non-empty error object.
    failed = sa.and_(
        c.status == sa.literal_column("'" + JobStatus.FAILED.value + "'"),
        sa.func.jsonb_typeof(c.error) == sa.literal_column("'object'"),
        c.error != _EMPTY,
    )

    def build(pairs: list[tuple[str, Any]]) -> Any:
        return sa.func.json_build_object(*(part for k, v in pairs for part in (_key(k), v)))

    # As job_json: data a consumer sent (not SQL NULL, nor a stored JSON null).
    sent = sa.and_(c.checkin_data.is_not(None), c.checkin_data != _JSON_NULL)
    checkin = [("checkin_data", c.checkin_data)]
    written = sa.case(
        (sa.and_(failed, sent), build([*fields, *checkin, ("error", error)])),
        (failed, build([*fields, ("error", error)])),
        (sent, build([*fields, *checkin])),
        else_=build(fields),
    )
    return sa.cast(written, sa.Text)
