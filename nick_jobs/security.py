"""Bearer-JWT security policy: who is calling, and what the ACLs let them do."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlalchemy as sa
from pyramid.authorization import ACLHelper, Authenticated, Everyone
from pyramid.interfaces import ISecurityPolicy
from pyramid.request import RequestLocalCache
from zope.interface import implementer

from . import tokens
from .models import RevokedToken, User
from .permissions import role_principal, user_principal
from .streams import tickets

log = logging.getLogger(__name__)

AUTH_ERROR_KEY = "nick_jobs.auth_error"


# One query answers both "does the user still exist" and "was this token revoked";
# built once, as it runs on every authenticated request.
_IDENTITY = sa.select(
    User.login,
    User.fullname,
    User.roles,
    sa.exists().where(RevokedToken.token_hash == sa.bindparam("b_token_hash")).label("revoked"),
).where(User.login == sa.bindparam("b_login"))


@dataclass(frozen=True)
class Identity:
    login: str
    fullname: str
    roles: tuple[str, ...]
    token: str

    @property
    def principals(self) -> list[str]:
        return [
            Everyone,
            Authenticated,
            user_principal(self.login),
            *(role_principal(r) for r in self.roles),
        ]


def bearer_token(request, max_length: int) -> str | None:
    """The token from ``Authorization: Bearer <token>``, or None (reason in the environ)."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    if len(header) > max_length:
        # Checked before decoding: PyJWT would happily spend time on a huge token.
        request.environ[AUTH_ERROR_KEY] = "header too large"
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        request.environ[AUTH_ERROR_KEY] = "not a bearer token"
        return None
    return token.strip()


@implementer(ISecurityPolicy)
class JWTSecurityPolicy:
    def __init__(self, settings) -> None:
        self.settings = settings
        self.acl = ACLHelper()
        self.identity_cache = RequestLocalCache(self.load_identity)

    def load_identity(self, request) -> Identity | None:
        token = bearer_token(request, self.settings.max_authorization_header)
        if token is None:
            return self.load_ticket_identity(request)
        try:
            claims = tokens.decode(self.settings, token)
        except tokens.InvalidToken as exc:
            request.environ[AUTH_ERROR_KEY] = str(exc)
            return None
        return self.lookup(request, claims.sub, tokens.fingerprint(token), token)

    def load_ticket_identity(self, request) -> Identity | None:
        """A stream ticket in the URL (for EventSource), only on the stream it names."""
        if request.method != "GET" or not request.path.endswith("/stream"):
            return None
        ticket = request.GET.get("ticket")
        if not ticket:
            return None
        try:
            login, token_hash = tickets.decode(self.settings, ticket, request.path)
        except tokens.InvalidToken as exc:
            request.environ[AUTH_ERROR_KEY] = str(exc)
            return None
        # The bearer token the ticket was asked with: logging out ends its tickets too.
        return self.lookup(request, login, token_hash, token="")

    def lookup(self, request, login: str, token_hash: str, token: str) -> Identity | None:
        row = request.dbconn.execute(
            _IDENTITY, {"b_login": login, "b_token_hash": token_hash}
        ).one_or_none()
        if row is None:
            request.environ[AUTH_ERROR_KEY] = "unknown user"
            return None
        if row.revoked:
            request.environ[AUTH_ERROR_KEY] = "revoked token"
            return None
        return Identity(
            login=row.login, fullname=row.fullname, roles=tuple(row.roles or ()), token=token
        )

    def identity(self, request) -> Identity | None:
        return self.identity_cache.get_or_create(request)

    def authenticated_userid(self, request) -> str | None:
        identity = self.identity(request)
        return identity.login if identity else None

    def permits(self, request, context, permission):
        identity = self.identity(request)
        principals = identity.principals if identity else [Everyone]
        return self.acl.permits(context, principals, permission)

    def remember(self, request, userid, **kw):
        return []

    def forget(self, request, **kw):
        header = 'Bearer realm="nick-jobs"'
        if request.environ.get(AUTH_ERROR_KEY):
            header += ', error="invalid_token"'
        return [("WWW-Authenticate", header)]


def includeme(config) -> None:
    config.set_security_policy(JWTSecurityPolicy(config.registry["nick_jobs.settings"]))
