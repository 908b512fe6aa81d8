"""PostgreSQL cursors describe a result once for each kind of result (nick_jobs.models.cursor)."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa

from nick_jobs.models import get_engine
from nick_jobs.models.cursor import Cursor

QUERIES = [
    "SELECT 1 AS one, 'x'::varchar(5) AS five, now() AS at, '{}'::jsonb AS doc",
    "SELECT uuid, status, params, created FROM jobs LIMIT 0",
    "SELECT 2 AS two",
    "SELECT",  # a result with no fields at all
    "SET application_name = 'cursor-test'",  # no result rows
]


def stock_description(dsn: str, query: str) -> list[tuple] | None:
    with psycopg.connect(dsn) as conn:
        description = conn.execute(query).description
        return None if description is None else [tuple(c) for c in description]


@pytest.fixture
def engine(pg_url):
    engine = get_engine(pg_url)
    yield engine
    engine.dispose()


def test_engines_use_the_cursor(engine) -> None:
    with engine.connect() as conn:
        assert isinstance(conn.connection.driver_connection.cursor(), Cursor)


def test_a_description_is_psycopgs_own(engine, pg_url) -> None:
    dsn = sa.engine.make_url(pg_url).set(drivername="postgresql").render_as_string(False)
    with engine.connect() as conn:
        cursor = conn.connection.driver_connection.cursor()
        for query in QUERIES:
            for _ in range(2):  # built, then from the cache
                described = cursor.execute(query).description
                expected = stock_description(dsn, query)
                assert (None if described is None else [tuple(c) for c in described]) == expected
        cursor.execute(QUERIES[0])
        with psycopg.connect(dsn) as stock:
            expected = [c.type_display for c in stock.execute(QUERIES[0]).description]
        assert [c.type_display for c in cursor.description] == expected


def test_the_same_kind_of_result_reuses_its_columns_and_a_new_kind_does_not(engine) -> None:
    with engine.connect() as conn:
        cursor = conn.connection.driver_connection.cursor()
        first = cursor.execute("SELECT 1 AS a, 'b' AS b").description
        again = cursor.execute("SELECT 7 AS a, 'other' AS b").description
        assert all(x is y for x, y in zip(first, again, strict=True))
        assert again is not first  # a list of its own: changing it changes nothing here
        renamed = cursor.execute("SELECT 1 AS a, 'b' AS c").description
        assert renamed[1].name == "c"
        retyped = cursor.execute("SELECT 1.5 AS a, 'b' AS b").description
        assert retyped[0].type_code != first[0].type_code


def test_sqlalchemy_reads_rows_by_name_through_it(engine) -> None:
    with engine.connect() as conn:
        for value in (1, 2):
            row = conn.execute(sa.text("SELECT :v AS value, 'x' AS name"), {"v": value}).one()
            assert (row.value, row.name) == (value, "x")
