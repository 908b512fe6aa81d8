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
from collections.abc import Mapping

import jwt

from nick_jobs.settings import Settings
from nick_jobs.users.tokens import InvalidToken

AUDIENCE = "nick-jobs:stream"
_UUID = r"/[0-9a-fA-F-]{36}"
# The streams a ticket may open: the all-jobs stream, one job's stream and one job's
# followed log (``/@jobs/{uuid}/log``, only with ``follow=true``: see :func:`opens`).
STREAM_PATH = re.compile(rf"^(?:/[^?#]*)?/@jobs(?:(?:{_UUID})?/stream|{_UUID}/log)$")


def is_log(path: str) -> bool:
    """Whether ``path`` (one :data:`STREAM_PATH` matches) is a job's log, which is a stream
    only when followed."""
    return path.endswith("/log")


def opens(method: str, path: str, query: Mapping[str, str]) -> bool:
    """Whether a request is one a ticket may open at all: a ``GET`` of a stream, a log
    only with ``follow=true`` (without it the log is a plain JSON page, which no ticket
    opens). Whether the ticket is for that very path is :func:`decode`'s to say."""
    if method != "GET" or not STREAM_PATH.match(path):
        return False
    return not is_log(path) or query.get("follow") == "true"


def issue(
    settings: Settings,
    login: str,
    token_fingerprint: str,
    path: str,
    now: dt.datetime,
    token_issued: dt.datetime | None = None,
) -> tuple[str, dt.datetime]:
    """A ticket for ``path``, bound to the bearer token (``token_fingerprint``, issued at
    ``token_issued``) it is asked with."""
    expires = now + dt.timedelta(seconds=settings.streams.ticket_ttl_s)
    claims = {
        "sub": login,
        "aud": AUDIENCE,
        "path": path,
        "tfp": token_fingerprint,
        "iat": int(now.timestamp()),
        "exp": int(expires.timestamp()),
    }
    if token_issued is not None:
        # The token's issue time, to the microsecond: a password or role changed after it
        # was issued ends the ticket as it ends the token.
        claims["tiat"] = token_issued.timestamp()
    ticket = jwt.encode(claims, settings.jwt_secret, algorithm=settings.jwt_algorithms[0])
    return ticket, expires


def decode(settings: Settings, ticket: str, path: str) -> tuple[str, str, dt.datetime]:
    """The (login, token fingerprint, token issue time) a valid ticket for ``path``
    carries."""
    try:
        claims = jwt.decode(
            ticket,
            settings.jwt_secret,
            algorithms=list(settings.jwt_algorithms),
            audience=AUDIENCE,
            # No leeway: a ticket lives for seconds on purpose.
            options={"require": ["exp", "iat", "sub", "aud", "path", "tfp"]},
        )
    except jwt.InvalidTokenError as exc:
        raise InvalidToken(f"ticket: {type(exc).__name__}: {exc}") from None
    if claims["path"] != path:
        raise InvalidToken("ticket: issued for another stream")
    sub, tfp = claims["sub"], claims["tfp"]
    if not isinstance(sub, str) or not sub or not isinstance(tfp, str):
        raise InvalidToken("ticket: malformed claims")
    # A ticket without "tiat" (issued by an older node during an upgrade) is dated by its
    # own issue time, in whole seconds rounded down: at worst it ends a second early.
    issued = claims.get("tiat", claims["iat"])
    if isinstance(issued, bool) or not isinstance(issued, int | float):
        raise InvalidToken("ticket: malformed claims")
    try:
        return sub, tfp, dt.datetime.fromtimestamp(issued, dt.UTC)
    except (OverflowError, ValueError, OSError):
        raise InvalidToken("ticket: malformed claims") from None
