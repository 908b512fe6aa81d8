"""Listing jobs newest or oldest first with an opaque keyset cursor.

Keyset paging (``WHERE id < :last ORDER BY id DESC``, or ``id > :last ... ASC`` oldest
first) costs the same at any depth, where OFFSET grows with it: at a million rows the
difference is 0.06 ms against 99 ms. Both orders read the same indexes, one forwards and
one backwards.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from nick_jobs.db.meta import table
from nick_jobs.jobs import serialize
from nick_jobs.jobs.model import Job
from nick_jobs.users.model import identity_holds
from nick_jobs.web.errors import Error, api_error

# A page's rows, on a database that doesn't write their JSON: the id (for the cursor) and
# the columns the serialiser reads, by name.
_ROW_COLUMNS = (Job.id, *(table(Job).c[name] for name in serialize.COLUMNS))


# The orders of the job list (``sort=``), by id: newest first is the default.
Sort = Literal["newest", "oldest"]


def encode_cursor(last_id: int) -> str:
    """A cursor holding a row id: the job list's newest first, and other lists' own."""
    return _encode(f"v1:{last_id}")


def _encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# An oldest-first cursor says so: given with the other order it would skip or repeat
# jobs, so it is refused rather than read. A newest-first one stays as it always was, so
# the cursors clients already hold keep working.
_OLDEST_PREFIX = "v1:oldest:"


def encode_list_cursor(last_id: int, sort: Sort) -> str:
    """The job list's cursor after ``last_id`` in the order ``sort``."""
    if sort == "oldest":
        return _encode(f"{_OLDEST_PREFIX}{last_id}")
    return encode_cursor(last_id)


# What encode_cursor writes: a row id, which a BIGINT holds (a larger one was a 500 when
# bound: SQLite can't take it, PostgreSQL refuses it).
_CURSOR_ID = re.compile(r"[0-9]{1,19}")
_MAX_ID = 2**63 - 1


def _invalid_cursor() -> Exception:
    return api_error(Error.INVALID_CURSOR, "The cursor is not one this server gave out.")


def _decode_text(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise _invalid_cursor() from None


def _row_id(value: str) -> int:
    if not _CURSOR_ID.fullmatch(value) or int(value) > _MAX_ID:
        raise _invalid_cursor()
    return int(value)


def decode_cursor(cursor: str) -> int:
    """The row id of a cursor :func:`encode_cursor` wrote; ``400`` for any other."""
    version, _, value = _decode_text(cursor).partition(":")
    if version != "v1":
        raise _invalid_cursor()
    return _row_id(value)


def decode_list_cursor(cursor: str, sort: Sort) -> int:
    """The row id of a job list cursor for the order ``sort``; ``400`` for any other,
    one made for the other order included."""
    text = _decode_text(cursor)
    made_for: Sort
    if text.startswith(_OLDEST_PREFIX):
        made_for, last_id = "oldest", _row_id(text.removeprefix(_OLDEST_PREFIX))
    else:
        made_for, last_id = "newest", decode_cursor(cursor)
    if made_for != sort:
        raise api_error(
            Error.INVALID_CURSOR,
            f"The cursor pages the jobs {made_for} first: ask with sort={made_for}, "
            "as the Link that gave it does.",
        )
    return last_id


# How deep b_start may go: past it, an offset makes the database read and drop that many
# rows for every page, and a client is sent to the cursor.
MAX_OFFSET = 10_000


@dataclass(frozen=True)
class Page:
    """A page of jobs: rows with ``id`` and the columns of
    :data:`nick_jobs.jobs.serialize.COLUMNS`, or on PostgreSQL rows with ``id`` and
    ``json``, the job's JSON text (``json_rows`` is then True)."""

    rows: list[Any]
    next_cursor: str | None
    total: int | None
    json_rows: bool = False
    # Asked with a guard and rows came back, which the guard let through (an empty
    # page tells nothing either way).
    guard_held: bool = False


def _like_escape(text: str) -> str:
    """``text`` as a literal inside a LIKE pattern with ``/`` as the escape character."""
    return text.replace("/", "//").replace("%", "/%").replace("_", "/_")


def _conditions(
    status: bool, actor: bool, action: bool, q: bool, parent: bool
) -> list[sa.ColumnElement[bool]]:
    conditions: list[sa.ColumnElement[bool]] = []
    if parent:
        conditions.append(Job.parent == sa.bindparam("b_parent"))
    if status:
        conditions.append(Job.status == sa.bindparam("b_status"))
    if actor:
        conditions.append(Job.actor == sa.bindparam("b_actor"))
    if action:
        conditions.append(Job.action == sa.bindparam("b_action"))
    if q:
        conditions.append(
            sa.or_(
                Job.title.icontains(sa.bindparam("b_q"), escape="/"),
                Job.description.icontains(sa.bindparam("b_q"), escape="/"),
            )
        )
    return conditions


# Statements built once per combination of filters, with bind parameters: building a
# select per request cost about a tenth of a list request's CPU.
@functools.cache
def _page_statement(
    json_rows: bool,
    status: bool,
    actor: bool,
    action: bool,
    q: bool,
    parent: bool,
    after: bool,
    guarded: bool = False,
    oldest: bool = False,
    offset: bool = False,
) -> sa.Select[*tuple[Any, ...]]:
    if json_rows:
        # Each row as its JSON text, written by the database (serialize.job_json_sql).
        columns: tuple[Any, ...] = (
            Job.id,
            serialize.job_json_sql(sa.bindparam("b_base", type_=sa.String())).label("json"),
        )
    else:
        columns = _ROW_COLUMNS
    query = sa.select(*columns).where(*_conditions(status, actor, action, q, parent))
    if after:
        past: sa.BindParameter[int] = sa.bindparam("b_past")
        query = query.where(Job.id > past if oldest else Job.id < past)
    if guarded:
        # Checked once for the statement (its subqueries are not correlated to the rows).
        query = query.where(identity_holds())
    order = Job.id.asc() if oldest else Job.id.desc()
    query = query.order_by(order).limit(sa.bindparam("b_limit"))
    return query.offset(sa.bindparam("b_offset")) if offset else query


@functools.cache
def _count_statement(
    status: bool, actor: bool, action: bool, q: bool, parent: bool
) -> sa.Select[int]:
    conditions = _conditions(status, actor, action, q, parent)
    return sa.select(sa.func.count()).select_from(Job).where(*conditions)


def list_jobs(
    conn: sa.Connection,
    *,
    base_url: str,
    size: int,
    cursor: str | None = None,
    start: int = 0,
    sort: Sort = "newest",
    status: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    q: str | None = None,
    parent: str | None = None,
    want_total: bool = False,
    guard: dict[str, Any] | None = None,
) -> Page:
    """A page of jobs in the order ``sort``, after ``cursor`` (which must have been made
    for that order); with ``guard`` (the ``b_guard_*`` parameters of
    :func:`~nick_jobs.users.model.identity_holds`, PostgreSQL only), rows only while the
    caller's identity holds, checked in the page's own statement.

    ``start`` skips that many jobs first (plone.restapi's ``b_start``), up to
    :data:`MAX_OFFSET`: the database still reads every job it skips, where a cursor
    starts at its place in the index. The next page of either is given by a cursor."""
    if start and cursor:
        raise api_error(
            Error.BAD_REQUEST, "Give b_start or cursor, not both: the cursor already says where."
        )
    if start > MAX_OFFSET:
        raise api_error(
            Error.BAD_REQUEST,
            f"b_start goes up to {MAX_OFFSET}; page further with the cursor that the Link "
            "header's next URL carries, which costs the same at any depth.",
        )
    filters = (bool(status), bool(actor), bool(action), bool(q), bool(parent))
    params: dict[str, Any] = {
        "b_status": status,
        "b_actor": actor,
        "b_action": action,
        "b_q": _like_escape(q) if q else None,
        "b_parent": parent,
    }
    params = {k: v for k, v in params.items() if v}
    # One row more than the page tells whether a next page exists without a COUNT.
    page_params = {**params, "b_limit": size + 1}
    if cursor:
        page_params["b_past"] = decode_list_cursor(cursor, sort)
    if start:
        page_params["b_offset"] = start
    json_rows = conn.dialect.name == "postgresql"
    if json_rows:
        page_params["b_base"] = base_url
    guarded = guard is not None and json_rows
    if guard is not None and guarded:
        page_params.update(guard)
    oldest = sort == "oldest"
    statement = _page_statement(json_rows, *filters, bool(cursor), guarded, oldest, bool(start))
    rows = list(conn.execute(statement, page_params).all())
    has_next = len(rows) > size
    rows = rows[:size]
    next_cursor = encode_list_cursor(rows[-1].id, sort) if has_next else None
    total = None
    if want_total:
        total = conn.execute(_count_statement(*filters), params).scalar_one()
    elif not cursor and not has_next and (rows or not start):
        # The rest of the result is on this page: the count is free.
        total = start + len(rows)
    return Page(rows, next_cursor, total, json_rows=json_rows, guard_held=guarded and bool(rows))
