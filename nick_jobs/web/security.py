"""Bearer-JWT security policy: who is calling, and what the ACLs let them do."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pyramid.authorization import ACLAllowed, ACLDenied, ACLHelper, Authenticated, Everyone
from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPException, HTTPUnauthorized
from pyramid.interfaces import ISecurityPolicy
from pyramid.registry import Registry
from pyramid.request import Request, RequestLocalCache
from pyramid.response import Response
from pyramid.tweens import EXCVIEW
from pyramid_tm import is_tm_active
from zope.interface import implementer

from nick_jobs.db.meta import table
from nick_jobs.settings import Settings, registry_settings
from nick_jobs.streams import tickets
from nick_jobs.users import tokens
from nick_jobs.users.model import RevokedToken, User
from nick_jobs.web.errors import UNAUTHORIZED_MESSAGE, Error, api_error
from nick_jobs.web.permissions import role_principal, user_principal

log = logging.getLogger(__name__)

AUTH_ERROR_KEY = "nick_jobs.auth_error"
# Set while the request's identity is the one its token had a moment ago, not yet checked
# against the database: the token's fingerprint.
PROVISIONAL_KEY = "nick_jobs.provisional_identity"


# One query answers "does the user still exist", "was this token revoked" and "since when
# are the user's tokens valid"; built once, as it runs on every authenticated request.
_REVOKED = sa.exists().where(RevokedToken.token_hash == sa.bindparam("b_token_hash"))
_IDENTITY_COLUMNS = (
    User.login.label("identity_login"),
    User.fullname.label("identity_fullname"),
    User.roles.label("identity_roles"),
    _REVOKED.label("identity_revoked"),
    # Compared in Python, not in SQL: SQLite compares timestamps as text.
    User.tokens_after.label("identity_tokens_after"),
)
_IDENTITY = sa.select(*_IDENTITY_COLUMNS).where(User.login == sa.bindparam("b_login"))
_RIDER_FOUND = "identity_rider_found"


class Rider:
    """A query of at most one row that a request needs along with its caller's identity
    (the job its URL names, for traversal): read in the identity's own query when that
    runs, so the request costs one round trip, not two; on its own when the identity is
    known already. What it selects is its maker's, but for names the identity's query
    has: ``identity_*`` columns, ``b_login`` and ``b_token_hash`` parameters. Made once
    (at import), as its statements are built then.
    """

    def __init__(self, query: sa.Select[*tuple[Any, ...]]) -> None:
        self.alone = query
        # A left join: the identity's row comes back whether the rider finds one or not,
        # and a constant of the rider's tells which.
        found = query.add_columns(sa.true().label(_RIDER_FOUND)).subquery()
        self.with_identity = (
            sa.select(found, *_IDENTITY_COLUMNS)
            .select_from(table(User).outerjoin(found, sa.true()))
            .where(User.login == sa.bindparam("b_login"))
        )


@dataclass(frozen=True)
class Identity:
    login: str
    fullname: str
    roles: tuple[str, ...]
    token: str
    # The token's (or a stream ticket's token's) fingerprint and issue time: what
    # revocation and the user's ``tokens_after`` are checked against.
    fingerprint: str = ""
    issued: dt.datetime | None = None

    @property
    def principals(self) -> list[str]:
        return [
            Everyone,
            Authenticated,
            user_principal(self.login),
            *(role_principal(r) for r in self.roles),
        ]


class KnownIdentities:
    """The identities this process found for bearer tokens, by the token's fingerprint.

    A request whose token is known starts with that identity *provisionally*, without the
    query that checks it up front: that check then rides on the request's own statement
    where one can carry it (a job's insert is written only if
    :func:`~nick_jobs.users.model.identity_holds`), or runs in :func:`confirm` before the
    response leaves and before the request's transaction commits. A user removed, a token
    revoked, or roles changed, by any process, still take effect at the next request.
    """

    MAX = 10_000

    def __init__(self) -> None:
        self._known: dict[str, Identity] = {}

    def get(self, fingerprint: str) -> Identity | None:
        return self._known.get(fingerprint)

    def put(self, fingerprint: str, identity: Identity) -> None:
        if fingerprint not in self._known and len(self._known) >= self.MAX:
            # Oldest first; another thread may have taken it already.
            with contextlib.suppress(StopIteration, KeyError, RuntimeError):
                self._known.pop(next(iter(self._known)))
        self._known[fingerprint] = identity

    def forget(self, fingerprint: str) -> None:
        self._known.pop(fingerprint, None)

    def __len__(self) -> int:
        return len(self._known)


def bearer_token(request: Request, max_length: int) -> str | None:
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
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.acl = ACLHelper()
        self.identity_cache: RequestLocalCache[Identity | None] = RequestLocalCache(
            self.load_identity
        )
        self.known = KnownIdentities()

    def load_identity(self, request: Request) -> Identity | None:
        return self._load(request)[0]

    def identity_and(
        self, request: Request, rider: Rider, params: dict[str, Any]
    ) -> tuple[Identity | None, sa.Row[Any] | None]:
        """The caller's identity and the row of ``rider`` (run with ``params``; None if
        it finds none, or there is no identity), in one query when the identity is not
        known yet."""
        identity = self.identity_cache.get(request)
        if identity is not RequestLocalCache.NO_VALUE:
            if identity is None:
                return None, None
            return identity, request.dbconn.execute(rider.alone, params).one_or_none()
        identity, row = self._load(request, rider, params)
        self.identity_cache.set(request, identity)
        return identity, row

    def _load(
        self, request: Request, rider: Rider | None = None, params: dict[str, Any] | None = None
    ) -> tuple[Identity | None, sa.Row[Any] | None]:
        token = bearer_token(request, self.settings.max_authorization_header)
        if token is None:
            return self.load_ticket_identity(request, rider, params)
        try:
            claims = tokens.decode(self.settings, token)
        except tokens.InvalidToken as exc:
            request.environ[AUTH_ERROR_KEY] = str(exc)
            return None, None
        fingerprint = claims.fingerprint
        if rider is None:
            known = self.known.get(fingerprint)
            if known is not None and known.login == claims.sub and known.issued == claims.issued:
                request.environ[PROVISIONAL_KEY] = fingerprint
                return known, None
        return self.lookup(
            request, claims.sub, fingerprint, token, rider, params, issued=claims.issued
        )

    def load_ticket_identity(
        self, request: Request, rider: Rider | None = None, params: dict[str, Any] | None = None
    ) -> tuple[Identity | None, sa.Row[Any] | None]:
        """A stream ticket in the URL (for EventSource), only on the stream it names."""
        if not tickets.opens(request.method, request.path, request.GET):
            return None, None
        ticket = request.GET.get("ticket")
        if not ticket:
            return None, None
        try:
            login, token_hash, issued = tickets.decode(self.settings, ticket, request.path)
        except tokens.InvalidToken as exc:
            request.environ[AUTH_ERROR_KEY] = str(exc)
            return None, None
        # The bearer token the ticket was asked with: logging out ends its tickets too, and
        # so does a change of the user's password or roles after it was issued.
        return self.lookup(request, login, token_hash, "", rider, params, issued=issued)

    def lookup(
        self,
        request: Request,
        login: str,
        token_hash: str,
        token: str,
        rider: Rider | None = None,
        params: dict[str, Any] | None = None,
        *,
        issued: dt.datetime | None,
    ) -> tuple[Identity | None, sa.Row[Any] | None]:
        """The identity of ``login``'s token (fingerprint ``token_hash``, issued at
        ``issued``), if the user exists, the token is not revoked and was issued no
        earlier than the user's ``tokens_after``; with ``rider``, also its row."""
        identity_params = {"b_login": login, "b_token_hash": token_hash}
        if rider is None:
            statement = _IDENTITY
        else:
            statement = rider.with_identity
            identity_params.update(params or {})
        row = request.dbconn.execute(statement, identity_params).one_or_none()
        refused = _refusal(row, issued)
        if refused is not None:
            request.environ[AUTH_ERROR_KEY] = refused
            self.known.forget(token_hash)
            return None, None
        identity = Identity(
            login=row.identity_login,
            fullname=row.identity_fullname,
            roles=tuple(row.identity_roles or ()),
            token=token,
            fingerprint=token_hash,
            issued=issued,
        )
        if token:  # a bearer token's (a stream ticket carries none)
            self.known.put(token_hash, identity)
        found = rider is not None and getattr(row, _RIDER_FOUND) is not None
        return identity, row if found else None

    def identity(self, request: Request) -> Identity | None:
        return self.identity_cache.get_or_create(request)

    def authenticated_userid(self, request: Request) -> str | None:
        identity = self.identity(request)
        return identity.login if identity else None

    def permits(self, request: Request, context: object, permission: str) -> ACLAllowed | ACLDenied:
        identity = self.identity(request)
        principals = identity.principals if identity else [Everyone]
        return self.acl.permits(context, principals, permission)

    def remember(self, request: Request, userid: str, **kw: Any) -> list[tuple[str, str]]:
        return []

    def forget(self, request: Request, **kw: Any) -> list[tuple[str, str]]:
        header = 'Bearer realm="nick-jobs"'
        if request.environ.get(AUTH_ERROR_KEY):
            header += ', error="invalid_token"'
        return [("WWW-Authenticate", header)]


def _refusal(row: sa.Row[Any] | None, issued: dt.datetime | None) -> str | None:
    """Why the identity query's row refuses the token (None: it doesn't)."""
    if row is None:
        return "unknown user"
    if row.identity_revoked:
        return "revoked token"
    after = row.identity_tokens_after
    if after is not None and (issued is None or issued < after):
        # Issued to an earlier user of the login, or before a new password or role.
        return "token issued before the user's tokens_after"
    return None


def identity_and(
    request: Request, rider: Rider, params: dict[str, Any]
) -> tuple[str | None, sa.Row[Any] | None]:
    """The caller's user id and the row of ``rider`` run with ``params`` (None if it
    finds none, or there is no user).

    Under nick-jobs' policy both come from one query; under a host application's own
    policy, from its identity and the rider's query on its own.
    """
    policy = request.registry.queryUtility(ISecurityPolicy)
    if isinstance(policy, JWTSecurityPolicy):
        identity, row = policy.identity_and(request, rider, params)
        return (identity.login if identity else None), row
    userid = request.authenticated_userid
    if userid is None:
        return None, None
    return userid, request.dbconn.execute(rider.alone, params).one_or_none()


def guard(request: Request) -> dict[str, Any] | None:
    """The ``b_guard_*`` parameters of :func:`~nick_jobs.users.model.identity_holds` for
    the request's provisional identity; None when it has none left to confirm."""
    fingerprint = request.environ.get(PROVISIONAL_KEY)
    if fingerprint is None:
        return None
    identity = request.identity
    return {
        "b_guard_login": identity.login,
        "b_guard_fullname": identity.fullname,
        "b_guard_roles": list(identity.roles),
        "b_guard_token_hash": fingerprint,
        "b_guard_issued": identity.issued,
    }


def confirmed(request: Request) -> None:
    """The request's statement carried :func:`guard` and it held."""
    request.environ.pop(PROVISIONAL_KEY, None)


def current_identity(request: Request) -> Identity | None:
    """The request's identity as the database has it now (None: the user or the token
    is gone); a provisional one is checked first, and replaced by what was found."""
    held: Identity | None = request.identity
    fingerprint = request.environ.pop(PROVISIONAL_KEY, None)
    # A provisional identity is never None.
    if fingerprint is None or held is None:
        return held
    # Only nick-jobs' own policy makes an identity provisional.
    policy: JWTSecurityPolicy = request.registry.getUtility(ISecurityPolicy)
    current, _ = policy.lookup(request, held.login, fingerprint, held.token, issued=held.issued)
    policy.identity_cache.set(request, current)
    return current


def confirm(request: Request) -> None:
    """Check the request's provisional identity against the database now.

    Raises ``HTTPUnauthorized`` (and the request has no identity from then on) if the
    user or the token is gone; a 503 to send again if the user's name or roles changed
    since the request was allowed with them.
    """
    if PROVISIONAL_KEY not in request.environ:
        return
    held = request.identity
    current = current_identity(request)
    if current is None:
        raise HTTPUnauthorized(UNAUTHORIZED_MESSAGE)
    if current != held:
        raise identity_changed()


def identity_changed() -> HTTPException:
    """The error for a request allowed with a name or roles its user no longer has."""
    error = api_error(
        Error.IDENTITY_CHANGED,
        "Your account changed while this request ran; nothing was done. Send it again.",
    )
    error.headers["Retry-After"] = "0"
    return error


def confirm_identity_tween_factory(
    handler: Callable[[Request], Response], registry: Registry
) -> Callable[[Request], Response]:
    """Confirm a provisional identity before the response leaves.

    Under the transaction manager: a request whose identity no longer holds commits
    nothing, and gets the error instead of its response.
    """

    def confirm_identity(request: Request) -> Response:
        response = handler(request)
        if PROVISIONAL_KEY in request.environ:
            try:
                confirm(request)
            except Exception:
                if is_tm_active(request):
                    request.tm.doom()
                response = request.invoke_exception_view()
        return response

    return confirm_identity


def includeme(config: Configurator) -> None:
    config.set_security_policy(JWTSecurityPolicy(registry_settings(config.registry)))
    config.add_tween(
        "nick_jobs.web.security.confirm_identity_tween_factory",
        under="nick_jobs.db.release_read_connection_tween_factory",
        over=EXCVIEW,
    )
