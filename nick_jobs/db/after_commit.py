"""What happens once a change is committed, and never if it is not.

A job's change has effects outside the database: the message that makes a worker run
it, a log line, a counter. They must not happen for a change that rolls back, and the
message must not reach a worker before the row it names is visible. So every such
effect is registered with :func:`after_commit` on the ``Session`` or ``Connection`` the
change ran on, and runs once that transaction has committed:

* a ``Session`` (the request's, committed by ``pyramid_tm``; a handler's): SQLAlchemy's
  ``after_commit`` session event, which fires after the ``COMMIT``; a ``SAVEPOINT`` that
  rolls back drops the effects registered inside it;
* a ``Connection`` in a transaction opened by :func:`transaction`: when that block has
  committed; :func:`savepoint` drops what was registered inside a savepoint that rolls
  back;
* a ``Connection`` that autocommits: at once, as its statement has committed.

A ``Connection`` in a transaction opened otherwise is refused: nothing could tell when
that transaction commits.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

import sqlalchemy as sa
from sqlalchemy.orm import Session, SessionTransaction

log = logging.getLogger(__name__)

Hook = Callable[[], None]

# Connection.info key: the hooks of the transaction transaction() opened on it.
_PENDING = "nick_jobs.after_commit"


def after_commit(conn: Session | sa.Connection, hook: Hook) -> None:
    """Call ``hook`` once the transaction ``conn`` runs in has committed; never if it
    rolls back. At once on a connection that autocommits."""
    if isinstance(conn, Session):
        _SessionHooks.of(conn).add(hook)
        return
    pending = conn.info.get(_PENDING)
    if pending is not None:
        pending.append(hook)
        return
    if _autocommits(conn):
        run(hook)
        return
    raise RuntimeError(
        "a job changes on this connection in a transaction that nothing watches: open it "
        "with nick_jobs.db.after_commit.transaction()"
    )


@contextlib.contextmanager
def transaction(bind: sa.Engine | sa.Connection) -> Iterator[sa.Connection]:
    """A transaction on ``bind`` (an engine: a connection of its own) whose
    :func:`after_commit` hooks run once it has committed.

    On a connection that autocommits (the worker's), the transaction is an explicit
    ``BEGIN`` … ``COMMIT``: SQLAlchemy's own would send neither.
    """
    if isinstance(bind, sa.Engine):
        with bind.connect() as conn, transaction(conn) as same:
            yield same
        return
    conn = bind
    # Kept, not asked again at the end: asking an invalidated connection for its info
    # reconnects it, which would hide why it failed behind a second error.
    info = conn.info
    if info.get(_PENDING) is not None:
        raise RuntimeError("a transaction is already open on this connection")
    hooks: list[Hook] = []
    info[_PENDING] = hooks
    try:
        if _autocommits(conn):
            conn.exec_driver_sql("BEGIN")
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")
        else:
            with conn.begin():
                yield conn
    finally:
        info.pop(_PENDING, None)
    for hook in hooks:
        run(hook)


@contextlib.contextmanager
def savepoint(conn: sa.Connection) -> Iterator[sa.Connection]:
    """``conn.begin_nested()`` inside :func:`transaction`: a rollback to the savepoint
    also drops the hooks registered inside it."""
    pending = conn.info.get(_PENDING)
    if pending is None:
        raise RuntimeError("a savepoint needs nick_jobs.db.after_commit.transaction()")
    mark = len(pending)
    try:
        with conn.begin_nested():
            yield conn
    except BaseException:
        del pending[mark:]
        raise


def _autocommits(conn: sa.Connection) -> bool:
    """Whether each statement on ``conn`` commits by itself: set on the connection, or on
    its engine (as the read engine's is), which SQLAlchemy's ``in_transaction`` does not
    tell (it begins one of its own that sends nothing): the driver's connection does."""
    if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return True
    return getattr(conn.connection.driver_connection, "autocommit", False) is True


def run(hook: Hook) -> None:
    """Run one hook of a committed change; a failure is logged, never raised."""
    try:
        hook()
    except Exception:
        # A log line, a counter or a message must never undo a change that is committed.
        log.exception("a hook after a committed change failed")


class _SessionHooks:
    """The hooks of one session, by the transaction (root or savepoint) they belong to."""

    KEY = "nick_jobs.after_commit"
    _installed = False
    _install_lock = threading.Lock()

    def __init__(self, session: Session) -> None:
        self.session = session
        self.pending: dict[SessionTransaction | None, list[Hook]] = {}

    @classmethod
    def of(cls, session: Session) -> _SessionHooks:
        hooks = session.info.get(cls.KEY)
        if hooks is None:
            cls._install()
            hooks = session.info[cls.KEY] = cls(session)
        return hooks

    @classmethod
    def _install(cls) -> None:
        # Listeners on the Session class, once: SQLAlchemy's event.listen on each
        # request's session cost about 0.1 ms of a submit. A session that never had a
        # hook has nothing in its info, and its commits cost a dict lookup.
        if cls._installed:
            return
        with cls._install_lock:
            if not cls._installed:
                sa.event.listen(Session, "after_commit", cls._on_commit)
                sa.event.listen(Session, "after_transaction_end", cls._on_end)
                cls._installed = True

    @classmethod
    def _on_commit(cls, session: Session) -> None:
        hooks = session.info.get(cls.KEY)
        if hooks is not None:
            hooks._committed(session)

    @classmethod
    def _on_end(cls, session: Session, transaction: SessionTransaction) -> None:
        hooks = session.info.get(cls.KEY)
        if hooks is not None:
            hooks._ended(session, transaction)

    @staticmethod
    def _current(session: Session) -> SessionTransaction | None:
        return session.get_nested_transaction() or session.get_transaction()

    def add(self, hook: Hook) -> None:
        self.pending.setdefault(self._current(self.session), []).append(hook)

    def _committed(self, session: Session) -> None:
        transaction = self._current(session)
        hooks = self.pending.pop(transaction, [])
        if transaction is not None and transaction.nested:
            # A released savepoint: its hooks now wait for the transaction around it.
            outer = transaction.parent
            while outer is not None and not (outer.nested or outer.parent is None):
                outer = outer.parent
            if outer is not None:
                self.pending.setdefault(outer, []).extend(hooks)
                return
        for hook in hooks:
            run(hook)

    def _ended(self, session: Session, transaction: SessionTransaction) -> None:
        # Committed hooks were taken by _committed; what is left was rolled back (or the
        # session was closed without a commit).
        self.pending.pop(transaction, None)
