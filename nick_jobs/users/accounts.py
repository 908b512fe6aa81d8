"""Users: create, list, change, remove, and check a login's password."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from nick_jobs.db.meta import utcnow
from nick_jobs.users.model import User
from nick_jobs.users.passwords import DUMMY_HASH, hash_password, verify_password

# The actor of declared scheduled jobs: the configuration's own authority, not a user. A
# user of that login would see those jobs as theirs.
SYSTEM_LOGIN = "system"


def add_user(
    dbsession: Session,
    login: str,
    password: str,
    fullname: str = "",
    roles: list[str] | None = None,
) -> User:
    if not login or len(login) > 100:
        raise ValueError("a login takes 1 to 100 characters")
    if login == SYSTEM_LOGIN:
        raise ValueError(f"the login {SYSTEM_LOGIN!r} is reserved for declared scheduled jobs")
    if not password:
        raise ValueError("a password can't be empty")
    if dbsession.get(User, login) is not None:
        raise ValueError(f"user {login!r} already exists")
    password_hash = hash_password(password)
    now = utcnow()
    user = User(
        login=login,
        fullname=fullname or login,
        password_hash=password_hash,
        roles=list(roles or []),
        created=now,
        # Tokens of an earlier user of this login, even from this very second, are not
        # this user's.
        tokens_after=_tokens_now(),
    )
    dbsession.add(user)
    dbsession.flush()
    return user


def list_users(dbsession: Session) -> list[User]:
    return list(dbsession.execute(sa.select(User).order_by(User.login)).scalars())


def update_user(
    dbsession: Session,
    login: str,
    password: str | None = None,
    fullname: str | None = None,
    roles: list[str] | None = None,
) -> tuple[User, bool]:
    """Change what is given of ``login``'s password, full name and roles; return the user
    and whether their tokens were ended.

    A new password, or roles other than the user has, ends every token issued to the user
    before now: whoever held the old password, or the old roles' trust, holds nothing.
    Raises ``LookupError`` for an unknown login, ``ValueError`` for an empty password.
    """
    if password is not None and not password:
        raise ValueError("a password can't be empty")
    # Hashed before the row is locked: scrypt takes a while.
    password_hash = None if password is None else hash_password(password)
    user = dbsession.get(User, login, with_for_update=True)
    if user is None:
        raise LookupError(f"no user {login!r}")
    end_tokens = False
    if password_hash is not None:
        user.password_hash = password_hash
        end_tokens = True
    if fullname is not None:
        user.fullname = fullname or login
    if roles is not None and set(roles) != set(user.roles or []):
        user.roles = list(roles)
        end_tokens = True
    if end_tokens:
        user.tokens_after = _tokens_now()
    dbsession.flush()
    return user, end_tokens


def _tokens_now() -> dt.datetime:
    # To the microsecond, as tokens' iat (nick_jobs.users.tokens.issue): utcnow()'s milliseconds
    # would date the change up to a millisecond early, and accept a token issued just
    # before it.
    return dt.datetime.now(dt.UTC)


def remove_user(dbsession: Session, login: str) -> bool:
    result = cast(
        sa.CursorResult[Any], dbsession.execute(sa.delete(User).where(User.login == login))
    )
    return result.rowcount == 1


def authenticate(dbsession: Session, login: str, password: str) -> User | None:
    """The user if the password matches, else None, in the same time either way."""
    user = dbsession.get(User, login)
    # Verify against a dummy hash for unknown logins: no timing difference tells which
    # logins exist.
    ok = verify_password(password, user.password_hash if user else DUMMY_HASH)
    return user if ok and user is not None else None
