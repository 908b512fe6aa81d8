"""Service tokens: named, long-lived tokens for machines (a consumer of jobs, Prometheus).

A service token is an ordinary bearer token of a user, with a ``jti`` and a lifetime of
its own (a year by default), and a row in ``service_tokens`` that says what it is for.
The token's text is shown once, when it is made, and kept nowhere; the row holds its
fingerprint. Revoking it stores that fingerprint among the revoked tokens, which every
request checks already: the token stops working at once, on every API node.

It is still its user's token: removing the user, or changing their password or roles,
ends it as it ends their other tokens.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets

import sqlalchemy as sa
from sqlalchemy.orm import Session

from nick_jobs.db.meta import utcnow
from nick_jobs.settings import Settings
from nick_jobs.users import tokens
from nick_jobs.users.model import RevokedToken, ServiceToken, User

DEFAULT_LIFETIME = dt.timedelta(days=365)
_DURATION = re.compile(r"(\d+)([smhdw])\Z")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Ten years: a token meant to outlive that is better renewed now and then.
MAX_LIFETIME = dt.timedelta(days=3660)


def parse_lifetime(text: str) -> dt.timedelta:
    """``30d``, ``12h``, ``52w``...: a whole number and a unit (s, m, h, d, w)."""
    match = _DURATION.match(text.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"a lifetime is a whole number and s, m, h, d or w (365d), not {text!r}")
    lifetime = dt.timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    if lifetime > MAX_LIFETIME:
        raise ValueError(f"a lifetime is at most {MAX_LIFETIME.days} days, not {text!r}")
    return lifetime


def create(
    session: Session,
    settings: Settings,
    login: str,
    name: str,
    lifetime: dt.timedelta = DEFAULT_LIFETIME,
) -> tuple[str, ServiceToken]:
    """A new token for ``login``, named ``name`` (unique among that user's service
    tokens): its text, to show once, and its row."""
    if not name or len(name) > 100:
        raise ValueError("a token's name takes 1 to 100 characters")
    user = session.get(User, login)
    if user is None:
        raise LookupError(f"no user {login!r}")
    if session.execute(
        sa.select(ServiceToken.jti).where(ServiceToken.login == login, ServiceToken.name == name)
    ).first():
        raise ValueError(f"{login!r} has a service token named {name!r} already")
    now = utcnow()
    jti = secrets.token_urlsafe(16)
    seconds = int(lifetime.total_seconds())
    token = tokens.issue(settings, login, user.fullname, now, jti=jti, lifetime_s=seconds)
    row = ServiceToken(
        jti=jti,
        login=login,
        name=name,
        token_hash=tokens.fingerprint(token),
        created=now,
        expires=tokens.decode(settings, token).exp,
        revoked=None,
    )
    session.add(row)
    session.flush()
    return token, row


def list_tokens(session: Session, login: str | None = None) -> list[ServiceToken]:
    query = sa.select(ServiceToken).order_by(ServiceToken.login, ServiceToken.name)
    if login is not None:
        query = query.where(ServiceToken.login == login)
    return list(session.execute(query).scalars())


def revoke(session: Session, settings: Settings, login: str, name: str) -> ServiceToken:
    """End the token at once; :class:`LookupError` if ``login`` has none named ``name``."""
    row = session.execute(
        sa.select(ServiceToken).where(ServiceToken.login == login, ServiceToken.name == name)
    ).scalar_one_or_none()
    if row is None:
        raise LookupError(f"{login!r} has no service token named {name!r}")
    if row.revoked is None:
        row.revoked = utcnow()
        # Kept as long as the token would be accepted at all: past its expiry by the leeway.
        expires = row.expires + dt.timedelta(seconds=settings.jwt_leeway_s)
        session.merge(RevokedToken(token_hash=row.token_hash, expires=expires))
        session.flush()
    return row
