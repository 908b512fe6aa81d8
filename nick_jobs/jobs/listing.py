"""Listing jobs newest first with an opaque keyset cursor.

Keyset paging (``WHERE id < :last ORDER BY id DESC``) costs the same at any depth,
where OFFSET grows with it: at a million rows the difference is 0.06 ms against 99 ms.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from nick_jobs.jobs import serialize
from nick_jobs.jobs.model import Job
from nick_jobs.users.model import identity_holds
from nick_jobs.web.errors import Error, api_error

# A page's rows, on a database that doesn't write their JSON: the id (for the cursor) and
# the columns the serialiser reads, by name.
_ROW_COLUMNS = (Job.id, *(Job.__table__.c[name] for name in serialize.COLUMNS))


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{last_id}".encode()).decode().rstrip("=")


# What encode_cursor writes: a row id, which a BIGINT holds (a larger one was a 500 when
# bound: SQLite can't take it, PostgreSQL refuses it).
_CURSOR_ID = re.compile(r"[0-9]{1,19}")
_MAX_ID = 2**63 - 1


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, _, value = text.partition(":")
        if version != "v1" or not _CURSOR_ID.fullmatch(value) or int(value) > _MAX_ID:
            raise ValueError(text)
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise api_error(
            Error.INVALID_CURSOR, "The cursor is not one this server gave out."
        ) from None


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
) -> sa.Select:
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
        query = query.where(Job.id < sa.bindparam("b_before"))
    if guarded:
        # Checked once for the statement (its subqueries are not correlated to the rows).
        query = query.where(identity_holds())
    return query.order_by(Job.id.desc()).limit(sa.bindparam("b_limit"))


@functools.cache
def _count_statement(status: bool, actor: bool, action: bool, q: bool, parent: bool) -> sa.Select:
    conditions = _conditions(status, actor, action, q, parent)
    return sa.select(sa.func.count()).select_from(Job).where(*conditions)


def list_jobs(
    conn: sa.Connection,
    *,
    base_url: str,
    size: int,
    cursor: str | None = None,
    status: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    q: str | None = None,
    parent: str | None = None,
    want_total: bool = False,
    guard: dict[str, Any] | None = None,
) -> Page:
    """A page of jobs; with ``guard`` (the ``b_guard_*`` parameters of
    :func:`~nick_jobs.users.model.identity_holds`, PostgreSQL only), rows only while the
    caller's identity holds, checked in the page's own statement."""
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
        page_params["b_before"] = decode_cursor(cursor)
    json_rows = conn.dialect.name == "postgresql"
    if json_rows:
        page_params["b_base"] = base_url
    guarded = guard is not None and json_rows
    if guarded:
        page_params.update(guard)
    statement = _page_statement(json_rows, *filters, bool(cursor), guarded)
    rows = conn.execute(statement, page_params).all()
    has_next = len(rows) > size
    rows = rows[:size]
    next_cursor = encode_cursor(rows[-1].id) if has_next else None
    total = None
    if want_total:
        total = conn.execute(_count_statement(*filters), params).scalar_one()
    elif not cursor and not has_next:
        total = len(rows)  # the whole result is on this page: the count is free
    return Page(rows, next_cursor, total, json_rows=json_rows, guard_held=guarded and bool(rows))
