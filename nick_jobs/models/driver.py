"""Core statements run on the psycopg connection under a SQLAlchemy ``Connection``.

A worker runs two statements per job (start, finish), a request one or two (its
identity, its job or page, a submit's insert). SQLAlchemy's execution path (cache key,
parameters, execution context, result metadata) costs about 70 µs of CPU per statement
on these machines where psycopg's own ``execute`` costs 30: a third of the runner's CPU
per job. :func:`run` compiles a statement once per dialect and then runs it on the
driver, with the same SQL, the same type conversions both ways (each bound value through
its type's bind processor, each returned one through its result processor), the same
cursor events for listeners, and psycopg's errors wrapped as SQLAlchemy's. Rows come as
named tuples. Connections on psycopg that autocommit or have begun a transaction take
that path; any other runs the statement through SQLAlchemy as usual.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import sqlalchemy as sa


@dataclass(frozen=True)
class Result:
    """What :func:`run` returns on either path: the rows and the row count."""

    rows: Sequence[Any]
    rowcount: int

    def one_or_none(self) -> Any:
        if len(self.rows) > 1:
            raise sa.exc.MultipleResultsFound("more than one row where one was expected")
        return self.rows[0] if self.rows else None


@dataclass(frozen=True)
class _Compiled:
    sql: str
    compiled: sa.sql.compiler.Compiled
    binds: dict[str, Callable[[Any], Any]]
    row: type | None  # a named tuple of the returned columns, or None
    results: tuple[Callable[[Any], Any] | None, ...]
    converted: bool  # whether any returned column goes through a result processor


_COMPILED: dict[int, tuple[Any, _Compiled | None]] = {}


def _compile(statement: Any, dialect: sa.Dialect) -> _Compiled | None:
    cached = _COMPILED.get(id(statement))
    if cached is not None and cached[0] is statement:
        return cached[1]
    # Compiled (and its columns read) on a copy: SQLAlchemy memoizes a DML statement's
    # returned columns on it, and a RETURNING added to it later would see the old ones.
    copy = statement.execution_options()
    compiled = copy.compile(dialect=dialect)
    entry: _Compiled | None = None
    if not any(b.expanding or b.literal_execute for b in compiled.binds.values()):
        # As SQLAlchemy converts: through the dialect's implementation of each type.
        binds = {}
        for bind, name in compiled.bind_names.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                binds[name] = processor
        if isinstance(copy, sa.Select):
            columns = list(copy.selected_columns)
        else:
            columns = list(copy.exported_columns) if compiled.returning else []
        row = _row_type([c.key for c in columns]) if columns else None
        results = tuple(
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns
        )
        if row is not None or not columns:
            converted = any(p is not None for p in results)
            entry = _Compiled(compiled.string, compiled, binds, row, results, converted)
    # Keyed by id, holding the statement so that id is not reused while cached.
    _COMPILED[id(statement)] = (statement, entry)
    return entry


def _row_type(keys: list[str]) -> type | None:
    """A named tuple of ``keys``; None where names can't be fields (repeated, or starting
    with an underscore), and such a statement goes through SQLAlchemy."""
    try:
        return collections.namedtuple("Row", keys)
    except ValueError:
        return None


def autocommits(conn: sa.Connection) -> bool:
    """Whether each statement on ``conn`` commits by itself: set on the connection, or on
    its engine (which SQLAlchemy's ``in_transaction`` and ``get_isolation_level`` don't
    tell: the driver's own flag does)."""
    if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return True
    return getattr(conn.connection.driver_connection, "autocommit", False) is True


def _driver_path(conn: Any) -> bool:
    if not isinstance(conn, sa.Connection) or conn.dialect.driver != "psycopg":
        return False
    # Inside a transaction SQLAlchemy has begun, psycopg opens it with the statement as
    # it would under SQLAlchemy; autocommit needs none. A connection that has begun
    # nothing is left to SQLAlchemy, whose autobegin the driver would skip.
    return conn.in_transaction() or autocommits(conn)


def run(conn: sa.Connection | sa.orm.Session, statement: Any, params: dict[str, Any]) -> Result:
    """Run ``statement`` with ``params`` on ``conn`` (a ``Connection`` or ``Session``);
    its rows (if it returns any) and its row count."""
    entry = _compile(statement, conn.dialect) if _driver_path(conn) else None
    if entry is None:
        result = conn.execute(statement, params)
        return Result(result.all() if result.returns_rows else (), result.rowcount)
    values = entry.compiled.construct_params(params)
    for name, processor in entry.binds.items():
        if name in values:
            values[name] = processor(values[name])
    driver = conn.connection.driver_connection
    # The connection's dispatch holds its own listeners and its engine's.
    events = conn.dispatch
    try:
        with driver.cursor() as cursor:
            if events.before_cursor_execute:
                events.before_cursor_execute(conn, cursor, entry.sql, values, None, False)
            cursor.execute(entry.sql, values, prepare=True)
            fetched = cursor.fetchall() if entry.row is not None else ()
            if events.after_cursor_execute:
                events.after_cursor_execute(conn, cursor, entry.sql, values, None, False)
            rowcount = cursor.rowcount
    except psycopg.Error as exc:
        # As SQLAlchemy's own execute does: a lost connection is invalidated, so neither
        # the pool nor a holder of the Connection hands it out again.
        lost = conn.dialect.is_disconnect(exc, driver, None)
        if lost and not conn.invalidated:
            conn.invalidate(exc)
        raise sa.exc.DBAPIError.instance(
            entry.sql,
            values,
            exc,
            psycopg.Error,
            dialect=conn.dialect,
            connection_invalidated=lost,
        ) from exc
    rows = ()
    if entry.row is not None:
        make, results = entry.row._make, entry.results
        if entry.converted:
            rows = [
                make(v if p is None else p(v) for p, v in zip(results, raw, strict=True))
                for raw in fetched
            ]
        else:
            # Nothing to convert (a page of JSON texts): psycopg's tuples as they are.
            rows = list(map(make, fetched))
    return Result(rows, rowcount)
