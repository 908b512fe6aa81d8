"""Users who may log in, tokens revoked before they expire, and service tokens."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from nick_jobs.db.meta import Base, JSONType, UTCDateTime, table


class User(Base):
    __tablename__ = "users"

    login: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    fullname: Mapped[str] = mapped_column(sa.String(200), default="")
    password_hash: Mapped[str] = mapped_column(sa.String(300))
    roles: Mapped[list[str]] = mapped_column(JSONType, default=list)
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # Tokens issued before this are refused: set at creation and when the password or
    # roles change. NULL (a row written without it) refuses none.
    tokens_after: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RevokedToken(Base):
    """A logged-out token, kept (by its fingerprint, see :func:`nick_jobs.users.tokens.fingerprint`)
    until it would have expired anyway."""

    __tablename__ = "revoked_tokens"

    token_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    expires: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)


class ServiceToken(Base):
    """A named, long-lived token of a machine's user (``nick-jobs tokens``), listed by
    what it is, never by its text, which is shown once when it is created."""

    __tablename__ = "service_tokens"
    __table_args__ = (sa.UniqueConstraint("login", "name", name="uq_service_tokens_login_name"),)

    jti: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    login: Mapped[str] = mapped_column(sa.String(100))
    name: Mapped[str] = mapped_column(sa.String(100))
    # Its fingerprint (nick_jobs.users.tokens.fingerprint), what a revocation stores.
    token_hash: Mapped[str] = mapped_column(sa.String(64))
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    revoked: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


def identity_holds() -> sa.ColumnElement[bool]:
    """True while the user ``b_guard_login`` still exists with the name and roles a request
    was allowed with (``b_guard_fullname``, ``b_guard_roles``), the token they sent
    (fingerprint ``b_guard_token_hash``) is not revoked, and it was issued
    (``b_guard_issued``) no earlier than the user's ``tokens_after``.

    A statement's ``WHERE`` carrying it writes only for a caller who is still who they
    were, checked in the same statement as the write.
    """
    users, revoked = table(User), table(RevokedToken)
    tokens_after = users.c.tokens_after
    user = sa.select(users.c.login).where(
        users.c.login == sa.bindparam("b_guard_login", type_=users.c.login.type),
        users.c.fullname == sa.bindparam("b_guard_fullname", type_=users.c.fullname.type),
        users.c.roles == sa.bindparam("b_guard_roles", type_=users.c.roles.type),
        sa.or_(
            tokens_after.is_(None),
            tokens_after <= sa.bindparam("b_guard_issued", type_=tokens_after.type),
        ),
    )
    token = sa.select(revoked.c.token_hash).where(
        revoked.c.token_hash == sa.bindparam("b_guard_token_hash", type_=revoked.c.token_hash.type)
    )
    return sa.and_(user.exists(), ~token.exists())
