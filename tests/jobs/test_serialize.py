"""The job's JSON, defined once by column name (``serialize.FIELDS``): Python writes it
from whatever holds the columns, PostgreSQL writes the same, and timestamps are UTC with
milliseconds and ``Z``, as JavaScript's ``toISOString()``."""

from __future__ import annotations

import datetime as dt
import json
import types
import zoneinfo
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from nick_jobs.db import get_engine
from nick_jobs.jobs.model import Job
from nick_jobs.jobs.serialize import COLUMNS, FIELDS, isoformat, job_json, job_json_sql

MOMENT = dt.datetime(2026, 3, 29, 0, 30, 5, 123456, tzinfo=dt.UTC)
URL = "http://localhost:8080/@jobs/00000000-0000-4000-8000-000000000001"


@pytest.mark.parametrize(
    "value",
    [
        MOMENT,
        MOMENT.astimezone(zoneinfo.ZoneInfo("UTC")),
        MOMENT.astimezone(zoneinfo.ZoneInfo("Europe/Paris")),  # +01:00, a DST night
        MOMENT.astimezone(zoneinfo.ZoneInfo("America/St_Johns")),  # -02:30
        MOMENT.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=45))),
        MOMENT.replace(tzinfo=None),  # naive: taken as UTC
    ],
    ids=["utc", "zoneinfo-utc", "paris", "st-johns", "kathmandu-like", "naive"],
)
def test_any_zone_is_written_as_utc_with_milliseconds(value: dt.datetime) -> None:
    assert isoformat(value) == "2026-03-29T00:30:05.123Z"


def test_whole_seconds_still_have_milliseconds() -> None:
    assert isoformat(MOMENT.replace(microsecond=0)) == "2026-03-29T00:30:05.000Z"


def test_none_stays_none() -> None:
    assert isoformat(None) is None


def stored_job(**values: Any) -> dict[str, Any]:
    """A job's columns as the jobs table holds them (the serialiser's and a few more)."""
    job = {
        "id": 1,
        "uuid": "00000000-0000-4000-8000-000000000001",
        "title": "A title",
        "description": "",
        "action": "dummy",
        "params": {"n": 1},
        "actor": "alice",
        "status": "completed",
        "created": MOMENT,
        "started": MOMENT + dt.timedelta(seconds=1),
        "finished": None,
        "result": {"answer": 42},
        "error": None,
        "attempt": 1,
        "progress": None,
        "parent": None,
        "next_run": None,
    }
    return {**job, **values}


EXPECTED = {
    "@id": URL,
    "uuid": "00000000-0000-4000-8000-000000000001",
    "title": "A title",
    "description": "",
    "params": {"n": 1},
    "actor": "alice",
    "created": "2026-03-29T00:30:05.123Z",
    "started": "2026-03-29T00:30:06.123Z",
    "finished": None,
    "status": "completed",
    "result": {"answer": 42},
    "attempt": 1,
    "progress": None,
    "parent": None,
    "next_run": None,
}


def test_the_keys_are_the_field_tables_in_its_order() -> None:
    data = job_json(stored_job(), URL)
    assert list(data) == ["@id", *(f.key for f in FIELDS)]
    assert data == EXPECTED
    # Every field is read from a column of the jobs table, by its name.
    assert set(COLUMNS) <= set(Job.__table__.c.keys())


@pytest.mark.parametrize(
    "holder",
    [
        dict,
        types.MappingProxyType,  # any Mapping, as a row's ``_mapping`` is
        lambda values: types.SimpleNamespace(**values),  # attributes, as a row's or an ORM's
        lambda values: Job(**values),
    ],
    ids=["dict", "mapping", "attributes", "orm"],
)
def test_a_job_is_read_by_column_name_from_what_holds_it(holder) -> None:
    assert job_json(holder(stored_job()), URL) == EXPECTED


def test_a_row_is_read_by_its_columns_names_whatever_their_order() -> None:
    engine = sa.create_engine("sqlite://")
    Job.__table__.create(engine)
    names = sorted(COLUMNS, reverse=True)  # not the table's order
    with engine.begin() as conn:
        conn.execute(sa.insert(Job.__table__).values(**stored_job()))
        row = conn.execute(sa.select(*(Job.__table__.c[n] for n in names))).one()
    engine.dispose()
    assert row._fields == tuple(names)
    assert job_json(row, URL) == job_json(row._mapping, URL) == EXPECTED


def test_a_just_submitted_job_has_no_progress_parent_or_next_run_yet() -> None:
    just_made = stored_job()
    for column in ("progress", "parent", "next_run"):
        del just_made[column]
    assert job_json(just_made, URL) == EXPECTED
    assert job_json(types.SimpleNamespace(**just_made), URL) == EXPECTED


@pytest.mark.parametrize("holder", [dict, lambda v: types.SimpleNamespace(**v)])
def test_a_job_without_a_column_it_must_have_is_refused(holder) -> None:
    job = stored_job()
    del job["status"]
    with pytest.raises((KeyError, AttributeError)):
        job_json(holder(job), URL)


@pytest.mark.parametrize(
    ("stored", "error"),
    [
        (
            {"status": "failed", "error": {"type": "JobFailed", "message": "no"}},
            {"type": "JobFailed", "message": "no"},
        ),
        (
            {"status": "failed", "error": {"type": "JobFailed", "extra": 1}},
            {"type": "JobFailed", "message": ""},
        ),
        ({"status": "failed", "error": {}}, None),
        ({"status": "failed", "error": None}, None),
        ({"status": "failed", "error": ["not", "an", "object"]}, None),
        ({"status": "completed", "error": {"type": "Stale", "message": "old"}}, None),
    ],
    ids=["failed", "no-message", "empty", "none", "not-an-object", "not-failed"],
)
def test_only_a_failed_job_with_an_error_object_shows_it(stored, error) -> None:
    data = job_json(stored_job(**stored), URL)
    assert data.get("error") == error
    assert ("error" in data) is (error is not None)


def test_no_params_or_result_are_written_as_empty_objects() -> None:
    data = job_json(stored_job(params=None, result=None), URL)
    assert (data["params"], data["result"]) == ({}, {})


# --- PostgreSQL writes the same ------------------------------------------------------

PARIS = zoneinfo.ZoneInfo("Europe/Paris")

# Stored values of every kind a field is written from; JSON null and SQL NULL apart (a
# None is stored as JSON null).
VARIETY: list[dict[str, Any]] = [
    {},
    {
        "params": {
            "text": 'é "quoted" \\ back\nline \u2028 \u0001 😀',
            "numbers": [1.5, 0.1, -0, 12345678901234567890, 1e100],
            "nested": {"a": None, "b": [True, False, {}], "": ""},
        },
        "progress": {"step": 2, "steps": 3, "message": "Ünïcode"},
        "parent": "00000000-0000-4000-8000-000000000000",
        "attempt": 3,
    },
    {
        "created": dt.datetime(2026, 3, 29, 2, 30, 5, 999999, tzinfo=PARIS),
        "started": dt.datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
        "finished": dt.datetime(2027, 1, 1, tzinfo=dt.UTC),
        "next_run": dt.datetime(2027, 1, 1, 0, 0, 0, 500, tzinfo=dt.UTC),
    },
    {"title": "", "description": "", "error": sa.null(), "progress": sa.null()},
    {"params": sa.JSON.NULL, "result": sa.JSON.NULL, "progress": sa.JSON.NULL},
    {"status": "failed", "error": {"type": "JobFailed", "message": "it broke"}},
    {"status": "failed", "error": {"type": "JobFailed"}},
    {"status": "failed", "error": {"type": 7, "message": None}},
    {"status": "failed", "error": {}},
    {"status": "failed", "error": sa.null()},
    {"status": "failed", "error": sa.JSON.NULL},
    {"status": "failed", "error": ["not", "an", "object"]},
    {"status": "completed", "error": {"type": "Stale", "message": "not failed"}},
    {"status": "running", "finished": None, "result": {}},
    {"params": [], "result": False},  # never written so, but written as stored
    # A remote job's check-in data: shown when there is some, with or without an error.
    {"checkin_data": {"batch": 2, "note": "é"}},
    {"checkin_data": {}, "status": "failed", "error": {"type": "Io", "message": "disk"}},
    {"checkin_data": sa.JSON.NULL},
    {"checkin_data": sa.null(), "status": "failed", "error": {"type": "Io", "message": "x"}},
    {"checkin_data": [1, "two"]},
]


@pytest.fixture
def pg_conn(pg_url: str) -> Iterator[sa.Connection]:
    """A connection whose ``jobs`` is a temporary table of its own, shaped as the real
    one: rows written there are seen by no one else (a worker on the test database would
    otherwise rescue them) and go with the transaction."""
    engine = get_engine(pg_url)
    with engine.connect() as conn, conn.begin() as transaction:
        conn.execute(
            sa.text(
                "CREATE TEMPORARY TABLE jobs (LIKE public.jobs INCLUDING DEFAULTS) ON COMMIT DROP"
            )
        )
        yield conn
        transaction.rollback()
    engine.dispose()


def test_postgresql_writes_what_python_writes_for_any_stored_job(pg_conn: sa.Connection) -> None:
    rows = [
        stored_job(id=n, uuid=f"00000000-0000-4000-8000-{n:012d}", **values)
        for n, values in enumerate(VARIETY, start=1)
    ]
    for row in rows:
        pg_conn.execute(sa.insert(Job.__table__).values(**row))
    base = "https://jobs.example.org/api/@jobs"
    written = pg_conn.execute(
        sa.select(
            *(Job.__table__.c[name] for name in COLUMNS),
            job_json_sql(sa.literal(base, sa.String())).label("json"),
        ).order_by(Job.id)
    ).all()
    assert len(written) == len(VARIETY)
    for row in written:
        by_python = job_json(row._mapping, f"{base}/{row.uuid}")
        # Through JSON text both ways, and in the same order of keys.
        by_database = json.loads(row.json, object_pairs_hook=list)
        assert by_database == json.loads(json.dumps(by_python), object_pairs_hook=list), row.uuid
