"""Users: create, list, remove, and check a login's password."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .models import User, utcnow
from .passwords import DUMMY_HASH, hash_password, verify_password


def add_user(
    dbsession: Session,
    login: str,
    password: str,
    fullname: str = "",
    roles: list[str] | None = None,
) -> User:
    if not login or len(login) > 100:
        raise ValueError("a login takes 1 to 100 characters")
    if not password:
        raise ValueError("a password can't be empty")
    if dbsession.get(User, login) is not None:
        raise ValueError(f"user {login!r} already exists")
    now = utcnow()
    user = User(
        login=login,
        fullname=fullname or login,
        password_hash=hash_password(password),
        roles=list(roles or []),
        created=now,
        tokens_after=now,
    )
    dbsession.add(user)
    dbsession.flush()
    return user


def list_users(dbsession: Session) -> list[User]:
    return list(dbsession.execute(sa.select(User).order_by(User.login)).scalars())


def remove_user(dbsession: Session, login: str) -> bool:
    return dbsession.execute(sa.delete(User).where(User.login == login)).rowcount == 1


def authenticate(dbsession: Session, login: str, password: str) -> User | None:
    """The user if the password matches, else None, in the same time either way."""
    user = dbsession.get(User, login)
    # Verify against a dummy hash for unknown logins: no timing difference tells which
    # logins exist.
    ok = verify_password(password, user.password_hash if user else DUMMY_HASH)
    return user if ok and user is not None else None
