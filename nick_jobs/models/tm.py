"""Request sessions joined to the request's transaction manager (pyramid_tm).

``zope.sqlalchemy.register(session, ...)`` adds seven event listeners to each session it
is given; SQLAlchemy's ``event.listen`` is slow enough that doing so for every request
cost about a tenth of a ``POST /@jobs``'s CPU. The same listeners are registered here
once, on the session factory; each session names its own manager in ``session.info``,
and a session without one (made outside a request) is left alone, as before.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from zope.sqlalchemy.datamanager import (
    STATUS_CHANGED,
    ZopeStatus,
    join_transaction,
    mark_changed,
)

MANAGER = "nick_jobs.transaction_manager"


def _manager(session: Session) -> Any:
    return session.info.get(MANAGER)


def _join(session: Session, *_args: Any) -> None:
    manager = _manager(session)
    if manager is not None:
        # "changed" from the start: state transitions are Core statements, which the
        # ORM's change tracking can't see; without it the transaction would roll back.
        join_transaction(session, STATUS_CHANGED, manager)


def _changed(session: Session) -> None:
    manager = _manager(session)
    if manager is not None:
        mark_changed(session, manager)


def _after_flush(session: Session, _flush_context: Any) -> None:
    _changed(session)


def _after_bulk(context: Any) -> None:
    _changed(context.session)


def _do_orm_execute(state: Any) -> None:
    if state.is_orm_statement and (state.is_update or state.is_insert or state.is_delete):
        _changed(state.session)


def _before_commit(session: Session) -> None:
    manager = _manager(session)
    if manager is None or session.in_nested_transaction():
        return
    # As zope.sqlalchemy: a commit must come from the manager, not the session.
    assert manager.get().status == ZopeStatus.COMMITTING, (
        "Transaction must be committed using the transaction manager"
    )


def join_requests(factory: sessionmaker[Session]) -> None:
    """Make the sessions ``factory`` makes with a manager in their info join it."""
    sa.event.listen(factory, "after_begin", _join)
    sa.event.listen(factory, "after_attach", _join)
    sa.event.listen(factory, "after_flush", _after_flush)
    sa.event.listen(factory, "after_bulk_update", _after_bulk)
    sa.event.listen(factory, "after_bulk_delete", _after_bulk)
    sa.event.listen(factory, "before_commit", _before_commit)
    sa.event.listen(factory, "do_orm_execute", _do_orm_execute)
