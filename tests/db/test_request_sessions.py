"""Request sessions join their request's transaction manager (``zope.sqlalchemy.register``):
they commit, roll back or stay doomed with it; sessions made outside a request are their own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
import transaction

from nick_jobs.db import get_engine, get_session_factory, get_tm_session
from nick_jobs.db.meta import utcnow
from nick_jobs.users.model import User
from tests.conftest import reset_database


@pytest.fixture
def factory(backend) -> Iterator[sa.orm.sessionmaker]:
    reset_database(backend.engine)
    engine = get_engine(backend.settings["sqlalchemy.url"])
    yield get_session_factory(engine)
    engine.dispose()


def logins(factory) -> set[str]:
    with factory() as session:
        return set(session.scalars(sa.select(User.login)))


def carol() -> User:
    return User(login="carol", fullname="Carol", password_hash="x", roles=[], created=utcnow())


def test_orm_and_core_writes_commit_with_the_manager(factory) -> None:
    manager = transaction.TransactionManager(explicit=True)
    with manager:
        session = get_tm_session(factory, manager)
        session.add(carol())
    assert "carol" in logins(factory)
    with manager:
        session = get_tm_session(factory, manager)
        # A Core statement alone: the ORM sees no change, yet it commits.
        session.execute(sa.delete(User.__table__).where(User.login == "carol"))
    assert "carol" not in logins(factory)


def test_writes_roll_back_when_the_manager_aborts(factory) -> None:
    manager = transaction.TransactionManager(explicit=True)
    manager.begin()
    session = get_tm_session(factory, manager)
    session.add(carol())
    session.flush()
    manager.abort()
    assert "carol" not in logins(factory)


def test_a_request_session_commits_only_through_its_manager(factory) -> None:
    manager = transaction.TransactionManager(explicit=True)
    manager.begin()
    session = get_tm_session(factory, manager)
    session.add(carol())
    with pytest.raises(AssertionError, match="transaction manager"):
        session.commit()
    manager.abort()
    assert "carol" not in logins(factory)


def test_a_doomed_transaction_commits_nothing(factory) -> None:
    manager = transaction.TransactionManager(explicit=True)
    manager.begin()
    session = get_tm_session(factory, manager)
    session.add(carol())
    session.flush()
    manager.doom()
    with pytest.raises(transaction.interfaces.DoomedTransaction):
        manager.commit()
    manager.abort()
    assert "carol" not in logins(factory)


def test_a_session_without_a_manager_is_its_own(factory) -> None:
    manager = transaction.TransactionManager(explicit=True)
    with manager:
        get_tm_session(factory, manager).execute(sa.select(1))
    # A request's session before it leaves the factory as it was: the next session
    # commits by itself, with no transaction begun.
    with factory() as session:
        session.add(carol())
        session.commit()
    assert "carol" in logins(factory)
