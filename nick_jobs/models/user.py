"""Users who may log in, and tokens revoked before they expire."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from .meta import Base, JSONType, UTCDateTime


class User(Base):
    __tablename__ = "users"

    login: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    fullname: Mapped[str] = mapped_column(sa.String(200), default="")
    password_hash: Mapped[str] = mapped_column(sa.String(300))
    roles: Mapped[list[str]] = mapped_column(JSONType, default=list)
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class RevokedToken(Base):
    """A logged-out token, kept (by its SHA-256) until it would have expired anyway."""

    __tablename__ = "revoked_tokens"

    token_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    expires: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
