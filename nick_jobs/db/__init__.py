"""The database: engines, the per-request session (``request.dbsession``) and read
connection (``request.dbconn``), and which requests run in a transaction."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa
import zope.sqlalchemy
from pyramid.request import RequestLocalCache
from pyramid.tweens import EXCVIEW
from sqlalchemy.orm import Session, sessionmaker

from nick_jobs.db.meta import json_loads
from nick_jobs.settings import ConfigurationError, registry_settings

if TYPE_CHECKING:
    from pyramid.config import Configurator
    from pyramid.registry import Registry
    from pyramid.request import Request
    from pyramid.response import Response

__all__ = [
    "get_engine",
    "get_session_factory",
    "get_tm_session",
    "lost_connection",
]


def lost_connection(exc: BaseException) -> bool:
    """Whether ``exc`` says the database was unreachable (restarting, network cut, pool
    exhausted) rather than that it refused the statement: the same write, tried again
    once it answers, can go through."""
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)):
        return True
    return isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while a worker thread writes; NORMAL sync is durable in WAL
    # mode across application crashes. busy_timeout queues writers instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_savepoint(conn: sa.Connection, _name: str) -> None:
    """Begin the transaction a ``SAVEPOINT`` is to be nested in, if the driver has not.

    The sqlite3 module begins a transaction only before its first write, and a
    ``SAVEPOINT`` outside one begins a transaction that its ``RELEASE`` then commits: a
    nested block (a submit with an Idempotency-Key) committed its job even when the
    request's transaction rolled back.
    """
    # Only ever registered on SQLite engines: the driver's connection is sqlite3's.
    dbapi = cast(sqlite3.Connection, conn.connection.dbapi_connection)
    if not dbapi.in_transaction:
        conn.exec_driver_sql("BEGIN")


POOL_SIZE = 10
# Seconds to connect to PostgreSQL before giving up (libpq takes whole seconds, 2 at least).
CONNECT_TIMEOUT_S = 3
# A pooled connection idle for longer than this is pinged before it is handed out.
PING_AFTER_IDLE_S = 1.0
_CHECKED_IN = "nick_jobs.checked_in"


def ping_when_idle(engine: sa.Engine, idle_s: float = PING_AFTER_IDLE_S) -> None:
    """Pessimistic disconnect handling that costs nothing under load.

    SQLAlchemy's ``pool_pre_ping`` sends a round trip on every checkout; on a busy API
    that is one more round trip, and about a fifth of the CPU of a ``GET``, per request,
    for connections that were in use a moment before. This pings only a connection that
    sat in the pool for ``idle_s``: a dead one is replaced before a request sees it
    (the pool retries the checkout on :class:`~sqlalchemy.exc.DisconnectionError`). A
    connection that dies while busy fails its statement, and SQLAlchemy then recycles
    every connection older than the failure, as with ``pool_pre_ping``.
    """

    def checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_CHECKED_IN] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in = record.info.get(_CHECKED_IN)
        if checked_in is None or time.monotonic() - checked_in < idle_s:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise sa.exc.DisconnectionError(f"idle connection is gone: {exc}") from exc

    sa.event.listen(engine, "checkin", checkin)
    sa.event.listen(engine, "checkout", checkout)


def get_engine(url: str, **kwargs: Any) -> sa.Engine:
    """Create the engine for ``url`` with the settings each backend needs."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, **kwargs)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        sa.event.listen(engine, "savepoint", _sqlite_savepoint)
        return engine
    kwargs.setdefault("pool_size", POOL_SIZE)
    kwargs.setdefault("max_overflow", 20)
    # A dead database must answer quickly (503), not hang a request thread.
    kwargs.setdefault("pool_timeout", 5)
    if url.startswith("postgresql"):
        # A server that takes the connection and never answers (a host gone): the request
        # is a 503 within CONNECT_TIMEOUT_S, well inside a client's 5 s.
        kwargs.setdefault("connect_args", {"connect_timeout": CONNECT_TIMEOUT_S})
        # psycopg parses jsonb values with it.
        kwargs.setdefault("json_deserializer", json_loads)
    try:
        engine = sa.create_engine(url, **kwargs)
    except ModuleNotFoundError as exc:
        # The driver is loaded here. PostgreSQL's, psycopg, comes with an extra: the bare
        # install runs SQLite alone.
        if not url.startswith("postgresql") or exc.name not in ("psycopg", "psycopg2"):
            raise
        message = "a postgresql URL (sqlalchemy.url) needs the psycopg driver: "
        if exc.name == "psycopg2":
            # SQLAlchemy's default driver for a bare postgresql:// URL.
            message += "write postgresql+psycopg://... and "
        raise ConfigurationError(f"{message}pip install 'nick-jobs[postgresql]'") from exc
    if not kwargs.get("pool_pre_ping"):
        ping_when_idle(engine)
    return engine


def get_session_factory(engine: sa.Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: objects read in a request stay usable after pyramid_tm
    # commits, without a second SELECT.
    return sessionmaker(bind=engine, expire_on_commit=False)


def get_tm_session(
    session_factory: sessionmaker[Session], transaction_manager: Any, request: Any = None
) -> Session:
    """A session joined to ``transaction_manager``: it commits or aborts with it.

    Joined "changed" from the start: state transitions are Core statements, which the
    ORM's change tracking can't see, and a session joined "active" would roll them back.
    """
    session = session_factory(info={"request": request})
    zope.sqlalchemy.register(
        session, initial_state="changed", transaction_manager=transaction_manager
    )
    return session


def includeme(config: Configurator) -> None:
    settings = registry_settings(config.registry)
    # An explicit manager per request: touching a session outside a request's
    # transaction is an error instead of a silent implicit transaction.
    config.add_settings(
        {
            "tm.manager_hook": "pyramid_tm.explicit_manager",
            # Annotating would resolve the identity (a query) on every request, even @login.
            "tm.annotate_user": "false",
        }
    )
    if not config.get_settings().get("tm.activate_hook"):  # a host's own comes first
        config.add_settings({"tm.activate_hook": TM_ACTIVATE_HOOK})
    config.include("pyramid_tm")
    engine = config.registry.get("nick_jobs.engine") or get_engine(settings.database_url)
    config.registry["nick_jobs.engine"] = engine
    # A pool of its own whose connections are autocommit from the start, so handing one
    # to a request costs no isolation-level switch and no BEGIN/COMMIT.
    # Nothing to roll back when one goes back to the pool, either. Last in, first out:
    # a request takes the connection given back a moment ago, which needs no ping
    # (ping_when_idle) and has its statements prepared already; the others stay idle.
    kwargs: dict[str, Any] = {"isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None}
    if not settings.database_url.startswith("sqlite"):
        kwargs["pool_use_lifo"] = True
    read_engine = get_engine(settings.database_url, **kwargs)
    config.registry["nick_jobs.read_engine"] = read_engine
    session_factory = get_session_factory(engine)
    config.registry["dbsession_factory"] = session_factory

    def dbsession(request: Request) -> Session:
        return get_tm_session(session_factory, request.tm, request=request)

    config.add_request_method(dbsession, reify=True)

    # A property, not reified: once the connection went back (below), a later use
    # checks out another one instead of finding a closed one.
    config.add_request_method(read_connection, "dbconn", property=True)
    config.add_tween(
        "nick_jobs.db.release_read_connection_tween_factory",
        under="pyramid_tm.tm_tween_factory",
        over=EXCVIEW,
    )


def _open_read_connection(request: Request) -> sa.Connection:
    engine: sa.Engine = request.registry["nick_jobs.read_engine"]
    conn = engine.connect()
    # A request that never reaches the release tween (one made outside the router)
    # still gives it back when it is finished.
    request.add_finished_callback(release_read_connection)
    return conn


_READ_CONNECTIONS = RequestLocalCache(_open_read_connection)


def read_connection(request: Request) -> sa.Connection:
    """The request's autocommit connection for its reads (identity, lookups, listings),
    checked out of the read engine's pool when first asked for (``request.dbconn``).

    Reads don't need the request's transaction: this skips the session, its
    transaction-manager hooks and the BEGIN/COMMIT round trips on the paths that only
    read, such as GET /@jobs/{uuid}.
    """
    conn = _READ_CONNECTIONS.get_or_create(request)
    if conn.invalidated:
        # A statement lost it (the database restarted): what the request still reads (an
        # error's identity check) goes on another one, or fails as unavailable (503),
        # not as a connection SQLAlchemy wants rolled back first (500).
        release_read_connection(request)
        conn = _READ_CONNECTIONS.get_or_create(request)
    return conn


# Without a transaction: the GET (or HEAD) of /@jobs and /@jobs/{uuid}, whose views read
# with request.dbconn alone, and POST /@jobs without an Idempotency-Key on PostgreSQL,
# which stores the job in one statement on it (nick_jobs.jobs.submission).
TM_ACTIVATE_HOOK = "nick_jobs.db.needs_transaction"
_READ_ONLY = re.compile(r"/@jobs(/[0-9a-fA-F-]{36})?\Z")
_SUBMIT = "/@jobs"
_CLAIM = "/@jobs/@claim"


def needs_transaction(request: Request) -> bool:
    """pyramid_tm's activation hook: whether the request runs in a transaction.

    Every request does but these, on nick-jobs' own root:

    * the ``GET`` of a page of jobs or of one job, whose views read on the autocommit
      connection and write nothing: beginning and committing an empty transaction was
      about a sixth of a job's ``GET`` outside the database;
    * a submit (``POST /@jobs``) without an ``Idempotency-Key`` on PostgreSQL: the job
      and its history row are one autocommitted statement, and with no transaction
      nothing else can join one and roll back under the job. That skips the session,
      its BEGIN and COMMIT round trips and the two-phase commit: about a third of a
      submit's CPU. A host application whose code writes beside a submit gives its own
      hook, and the submit then joins its transaction.

    Their ``request.dbsession`` raises ``NoTransaction`` rather than write outside one.
    """
    method = request.method
    if method in ("GET", "HEAD"):
        return not _READ_ONLY.match(request.path_info)
    if method == "POST" and request.path_info == _CLAIM:
        # A claim opens a transaction of its own for each look, none while it waits.
        return False
    if method == "POST" and request.path_info == _SUBMIT:
        if "Idempotency-Key" in request.headers:
            return True  # its lookup and insert commit together
        read_engine: sa.Engine = request.registry["nick_jobs.read_engine"]
        return read_engine.dialect.name != "postgresql"
    return True


def release_read_connection_tween_factory(
    handler: Callable[[Request], Response], registry: Registry
) -> Callable[[Request], Response]:
    """Give the request's read connection back once its response is made.

    The response (an error view's too) is complete here, and what still runs for the
    request is the commit and its after-commit hooks, the broker send among them. A
    first send on a thread can take a while (one RabbitMQ connection per thread), and a
    read connection held meanwhile starved the pool: a burst of submits on fresh threads
    got 503s after waiting 5 s for a connection.
    """

    def release_read_connection_tween(request: Request) -> Response:
        response = handler(request)
        release_read_connection(request)
        return response

    return release_read_connection_tween


def release_read_connection(request: Request) -> None:
    """Give the request's read connection back to the pool, if it has one (once)."""
    conn = _READ_CONNECTIONS.clear(request)
    if conn is not RequestLocalCache.NO_VALUE:
        conn.close()
