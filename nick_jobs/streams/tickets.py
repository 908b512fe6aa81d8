"""Short-lived stream tickets, for readers that can't send an ``Authorization`` header.

A browser's ``EventSource`` can only pass credentials in the URL, where they end up in
access logs and proxies. A ticket is what goes there instead of the JWT: signed with the
service's secret, valid for seconds, bound to one user, one stream path and the bearer
token it was asked with (so logging out ends it too). Its audience keeps it from ever
being accepted as a bearer token.
"""

from __future__ import annotations

import datetime as dt
import re

import jwt

from ..settings import Settings
from ..tokens import InvalidToken

AUDIENCE = "nick-jobs:stream"
# The streams a ticket may open: the all-jobs stream and one job's stream.
STREAM_PATH = re.compile(
    r"^(?:/[^?#]*)?/@jobs(?:/[0-9a-fA-F-]{36})?/stream$",
)


def issue(
    settings: Settings, login: str, token_fingerprint: str, path: str, now: dt.datetime
) -> tuple[str, dt.datetime]:
    expires = now + dt.timedelta(seconds=settings.streams.ticket_ttl_s)
    claims = {
        "sub": login,
        "aud": AUDIENCE,
        "path": path,
        "tfp": token_fingerprint,
        "iat": int(now.timestamp()),
        "exp": int(expires.timestamp()),
    }
    ticket = jwt.encode(claims, settings.jwt_secret, algorithm=settings.jwt_algorithms[0])
    return ticket, expires


def decode(settings: Settings, ticket: str, path: str) -> tuple[str, str]:
    """The (login, token fingerprint) a valid ticket for ``path`` carries."""
    try:
        claims = jwt.decode(
            ticket,
            settings.jwt_secret,
            algorithms=list(settings.jwt_algorithms),
            audience=AUDIENCE,
            # No leeway: a ticket lives for seconds on purpose.
            options={"require": ["exp", "sub", "aud", "path", "tfp"]},
        )
    except jwt.InvalidTokenError as exc:
        raise InvalidToken(f"ticket: {type(exc).__name__}: {exc}") from None
    if claims["path"] != path:
        raise InvalidToken("ticket: issued for another stream")
    sub, tfp = claims["sub"], claims["tfp"]
    if not isinstance(sub, str) or not sub or not isinstance(tfp, str):
        raise InvalidToken("ticket: malformed claims")
    return sub, tfp
