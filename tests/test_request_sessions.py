"""Request sessions join their request's transaction manager (nick_jobs.models.tm), with
their listeners registered once on the factory rather than on every session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
import transaction

from nick_jobs.models import User, get_engine, get_session_factory, get_tm_session, utcnow
from nick_jobs.models import tm as request_tm

from .conftest import reset_database


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


def test_a_session_without_a_manager_is_its_own(factory) -> None:
    with factory() as session:
        session.add(carol())
        session.commit()
    assert "carol" in logins(factory)
    assert request_tm.MANAGER not in factory().info


def test_sessions_add_no_listeners_of_their_own(factory, monkeypatch) -> None:
    listened = []
    real = sa.event.listen
    monkeypatch.setattr(sa.event, "listen", lambda *a, **kw: listened.append(a) or real(*a, **kw))
    manager = transaction.TransactionManager(explicit=True)
    for _ in range(3):
        with manager:
            get_tm_session(factory, manager).execute(sa.select(1))
    assert listened == []
    # The factory's listeners serve every session.
    assert sa.event.contains(factory, "after_begin", request_tm._join)


def test_submits_add_no_listeners_either(app_without_worker, monkeypatch) -> None:
    app = app_without_worker
    # The first submit of the process may install what is installed once.
    first = app.submit({"action": "dummy"})
    listened = []
    real = sa.event.listen
    monkeypatch.setattr(sa.event, "listen", lambda *a, **kw: listened.append(a) or real(*a, **kw))
    jobs = [app.submit({"action": "dummy"}) for _ in range(3)]
    assert listened == []
    # The jobs were made, and their after-commit hooks (the "created" lines) still ran:
    # each is listed and counted.
    listed = {job["uuid"] for job in app.get("/@jobs", headers=app.auth()).json}
    assert listed >= {first["uuid"], *(job["uuid"] for job in jobs)}
