"""Issuing and checking the bearer JWTs, wire-compatible with Nick's."""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt

from nick_jobs.settings import Settings


@dataclass(frozen=True)
class TokenClaims:
    sub: str
    exp: dt.datetime
    claims: dict[str, Any]
    # What identifies the token for revocation (see :func:`fingerprint`), taken once with
    # the checks: every request needs it.
    fingerprint: str = ""
    # When the token was issued, as compared with its user's ``tokens_after``.
    issued: dt.datetime | None = None


class InvalidToken(Exception):
    """The token can't be trusted; ``str(exc)`` says why (for logs, never for clients)."""


def issue(
    settings: Settings,
    login: str,
    fullname: str,
    now: dt.datetime | None = None,
    jti: str | None = None,
    lifetime_s: int | None = None,
) -> str:
    """A new token for ``login``, valid ``lifetime_s`` seconds (by default
    ``nick_jobs.jwt_lifetime``; a service token's is its own).

    Every token carries a random ``jti``: two tokens issued to one user in the same
    second differ, and each is revoked alone (Nick ignores the extra claim).

    ``iat`` keeps the microseconds (an RFC 7519 NumericDate may be fractional; PyJWT and
    Nick's jsonwebtoken take one): a user removed and added again, or given a new password
    or role, refuses the tokens issued before that moment (``users.tokens_after``), while
    one issued a moment later, within the same second, works. Whole seconds could not tell
    them apart. The fraction rather than a claim of its own: ``iat`` is what every JWT
    library reads as the issue time, and a host's token is compared by the same claim. A
    float of today's timestamps reads back as the very microsecond it was written from.
    """
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    seconds = int(now.replace(microsecond=0).timestamp())
    iat: float | int = seconds + now.microsecond / 1_000_000 if now.microsecond else seconds
    payload = {
        "sub": login,
        "fullname": fullname,
        "iat": iat,
        "exp": seconds + (settings.jwt_lifetime_s if lifetime_s is None else lifetime_s),
        "jti": jti or secrets.token_urlsafe(16),
    }
    return jwt.encode(payload, settings.jwt_secret, algorithm=settings.jwt_algorithms[0])


# Tokens whose signature and claims were checked, by (token, secret, algorithms, lifetime).
# A client sends the same token with every request, and PyJWT's checks cost about as much
# CPU as the rest of authenticating a request; only the expiry can change the verdict
# afterwards. Only canonical tokens get here (:func:`_canonical`): no other spelling of a
# token is ever remembered as valid.
_VERIFIED: dict[tuple[str, str, tuple[str, ...], int], TokenClaims] = {}
VERIFIED_MAX = 10_000


def decode(settings: Settings, token: str) -> TokenClaims:
    """Verify encoding, signature, algorithm and expiry; raise :class:`InvalidToken`
    otherwise."""
    key = (token, settings.jwt_secret, settings.jwt_algorithms, settings.jwt_lifetime_s)
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


_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")


def _canonical(token: str) -> None:
    """Refuse any spelling of a token but the one base64url encoding of its bytes.

    PyJWT decodes leniently: padding (``=``), characters outside the alphabet, and the
    unused low bits of a segment's last character are all ignored, so one signed token
    has many spellings. Each would be a different string to the cache and to the hash of
    a token without ``jti``: a token logged out under one spelling would still open the
    API under another. Only the spelling its issuer wrote is accepted.
    """
    segments = token.split(".")
    if len(segments) != 3:
        raise InvalidToken("not a compact JWS: three segments expected")
    for segment in segments:
        if not _SEGMENT.fullmatch(segment) or len(segment) % 4 == 1:
            raise InvalidToken("not canonical base64url")
        try:
            data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        except (binascii.Error, ValueError):
            raise InvalidToken("not canonical base64url") from None
        if base64.urlsafe_b64encode(data).rstrip(b"=").decode() != segment:
            raise InvalidToken("not canonical base64url")


def canonical_spelling(token: str) -> str | None:
    """The one accepted spelling of a token written another way (with padding, blanks or
    unused low bits set), or None if it is not three base64url segments even so.

    Only for ending a token: a logout sent with another spelling of a valid token ends
    that token, though the spelling itself opens nothing.
    """
    segments = "".join(token.split()).split(".")
    if len(segments) != 3:
        return None
    spelled = []
    for segment in segments:
        bare = segment.rstrip("=")
        if not _SEGMENT.fullmatch(bare) or len(bare) % 4 == 1:
            return None
        data = base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4))
        spelled.append(base64.urlsafe_b64encode(data).rstrip(b"=").decode())
    return ".".join(spelled)


def _verify(settings: Settings, token: str) -> TokenClaims:
    _canonical(token)
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
    return TokenClaims(
        sub=sub,
        exp=exp,
        claims=claims,
        fingerprint=_fingerprint(token, claims),
        issued=_issued(settings, claims, exp),
    )


def _issued(settings: Settings, claims: dict[str, Any], exp: dt.datetime) -> dt.datetime:
    iat = claims.get("iat")
    if iat is None:
        # A token without "iat" (plone.restapi signs them so) is dated by its expiry, as
        # if issued with nick-jobs' own lifetime: a host signing with the shared secret
        # is to use the same one.
        return exp - dt.timedelta(seconds=settings.jwt_lifetime_s)
    if isinstance(iat, bool) or not isinstance(iat, int | float):
        raise InvalidToken("iat must be a number")
    try:
        return dt.datetime.fromtimestamp(iat, dt.UTC)
    except (OverflowError, ValueError, OSError):
        raise InvalidToken("iat is out of range") from None


def _fingerprint(token: str, claims: dict[str, Any]) -> str:
    jti = claims.get("jti")
    if isinstance(jti, str) and jti:
        # The token's identity, whatever its spelling; scoped to its user, so that a host
        # reusing a jti across users could at worst end more of one user's tokens.
        return hashlib.sha256(f"jti\0{claims['sub']}\0{jti}".encode()).hexdigest()
    # No jti (a token a host Nick or Plone signed): the token's canonical text, which is
    # the only spelling ever accepted. Also what revoked such tokens before jti existed.
    return hashlib.sha256(token.encode()).hexdigest()


def fingerprint(token: str) -> str:
    """What the revocation list stores for a token: the SHA-256 of its ``jti`` (and
    user), or of the token itself when it has no ``jti``; never the token.

    For a token already verified (its claims are read without checking them again).
    """
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return hashlib.sha256(token.encode()).hexdigest()
    if not isinstance(claims.get("sub"), str):
        return hashlib.sha256(token.encode()).hexdigest()
    return _fingerprint(token, claims)
