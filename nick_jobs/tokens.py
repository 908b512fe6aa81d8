"""Issuing and checking the bearer JWTs, wire-compatible with Nick's."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import time
from dataclasses import dataclass
from typing import Any

import jwt

from .settings import Settings


@dataclass(frozen=True)
class TokenClaims:
    sub: str
    exp: dt.datetime
    claims: dict[str, Any]
    # The token's fingerprint, taken once with the checks (every request needs it).
    fingerprint: str = ""


class InvalidToken(Exception):
    """The token can't be trusted; ``str(exc)`` says why (for logs, never for clients)."""


def issue(settings: Settings, login: str, fullname: str, now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    payload = {
        "sub": login,
        "fullname": fullname,
        "iat": int(now.timestamp()),
        "exp": int(now.timestamp()) + settings.jwt_lifetime_s,
    }
    return jwt.encode(payload, settings.jwt_secret, algorithm=settings.jwt_algorithms[0])


# Tokens whose signature and claims were checked, by (token, secret, algorithms). A client
# sends the same token with every request, and PyJWT's checks cost about as much CPU as the
# rest of authenticating a request; only the expiry can change the verdict afterwards.
_VERIFIED: dict[tuple[str, str, tuple[str, ...]], TokenClaims] = {}
VERIFIED_MAX = 10_000


def decode(settings: Settings, token: str) -> TokenClaims:
    """Verify signature, algorithm and expiry; raise :class:`InvalidToken` otherwise."""
    key = (token, settings.jwt_secret, settings.jwt_algorithms)
    known = _VERIFIED.get(key)
    if known is not None:
        # PyJWT's own rule: expired once exp <= now - leeway.
        if known.exp.timestamp() <= time.time() - settings.jwt_leeway_s:
            _VERIFIED.pop(key, None)
            raise InvalidToken("ExpiredSignatureError: Signature has expired")
        return known
    claims = _verify(settings, token)
    if len(_VERIFIED) >= VERIFIED_MAX:
        # Oldest first; another thread may have taken it already.
        with contextlib.suppress(StopIteration, KeyError, RuntimeError):
            _VERIFIED.pop(next(iter(_VERIFIED)))
    _VERIFIED[key] = claims
    return claims


def _verify(settings: Settings, token: str) -> TokenClaims:
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret,
            # Pinned: the token's own "alg" header never chooses how it is checked.
            algorithms=list(settings.jwt_algorithms),
            leeway=settings.jwt_leeway_s,
            # PyJWT accepts a token without "exp" unless told to require it.
            options={"require": ["exp", "sub"]},
        )
    except jwt.InvalidTokenError as exc:
        raise InvalidToken(f"{type(exc).__name__}: {exc}") from None
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise InvalidToken("sub must be a non-empty string")
    try:
        # PyJWT only checked that int(exp) works: a signed exp can still be out of range.
        exp = dt.datetime.fromtimestamp(int(claims["exp"]), dt.UTC)
    except (OverflowError, ValueError, OSError):
        raise InvalidToken("exp is out of range") from None
    return TokenClaims(sub=sub, exp=exp, claims=claims, fingerprint=fingerprint(token))


def fingerprint(token: str) -> str:
    """What the revocation list stores: the token's SHA-256, never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()
