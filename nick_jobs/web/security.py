"""Bearer-JWT security policy: who is calling, and what the ACLs let them do."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pyramid.authorization import ACLHelper, Authenticated, Everyone
from pyramid.httpexceptions import HTTPUnauthorized
from pyramid.interfaces import ISecurityPolicy
from pyramid.request import RequestLocalCache
from pyramid.tweens import EXCVIEW
from pyramid_tm import is_tm_active
from zope.interface import implementer

from nick_jobs.jobs.model import Job
from nick_jobs.jobs.serialize import job_json_sql
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
# The same, with the job a request names (any actor's, or NULLs when there is none):
# ``GET /@jobs/{uuid}`` then costs one round trip, not two. The job's columns come first,
# so the row serves as the job's row.
_jobs = Job.__table__
_IDENTITY_AND_JOB_FROM = User.__table__.outerjoin(_jobs, _jobs.c.uuid == sa.bindparam("b_uuid"))
_IDENTITY_AND_JOB = (
    sa.select(_jobs, *_IDENTITY_COLUMNS)
    .select_from(_IDENTITY_AND_JOB_FROM)
    .where(User.login == sa.bindparam("b_login"))
)
# For GET /@jobs/{uuid}: the job's JSON text as the view answers it, written by PostgreSQL
# (as a page of jobs is), and of its columns only what traversal and the ACL read. The
# view sends the text as it is; nothing is decoded to be encoded again.
_IDENTITY_AND_JOB_JSON = (
    sa.select(
        _jobs.c.uuid,
        _jobs.c.actor,
        *_IDENTITY_COLUMNS,
        job_json_sql(sa.bindparam("b_base", type_=sa.String())).label("job_json"),
    )
    .select_from(_IDENTITY_AND_JOB_FROM)
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
        self.known = KnownIdentities()

    def load_identity(self, request) -> Identity | None:
        return self._load(request, job_uuid=None)[0]

    def identity_and_job(
        self, request, job_uuid: str, json_base: str | None = None
    ) -> tuple[Identity | None, sa.Row | None]:
        """The caller's identity and job ``job_uuid`` whoever's it is (None if there is
        none), in one query when the identity is not known yet. With ``json_base`` (the
        jobs' container URL), on PostgreSQL the row holds the job's ``uuid``, ``actor``
        and its JSON as ``job_json``, and no other column."""
        identity = self.identity_cache.get(request)
        if identity is not RequestLocalCache.NO_VALUE:
            return identity, None if identity is None else _job(request, job_uuid)
        identity, row = self._load(request, job_uuid, json_base)
        self.identity_cache.set(request, identity)
        return identity, row

    def _load(
        self, request, job_uuid: str | None, json_base: str | None = None
    ) -> tuple[Identity | None, sa.Row | None]:
        token = bearer_token(request, self.settings.max_authorization_header)
        if token is None:
            return self.load_ticket_identity(request, job_uuid)
        try:
            claims = tokens.decode(self.settings, token)
        except tokens.InvalidToken as exc:
            request.environ[AUTH_ERROR_KEY] = str(exc)
            return None, None
        fingerprint = claims.fingerprint
        if job_uuid is None:
            known = self.known.get(fingerprint)
            if known is not None and known.login == claims.sub and known.issued == claims.issued:
                request.environ[PROVISIONAL_KEY] = fingerprint
                return known, None
        return self.lookup(
            request, claims.sub, fingerprint, token, job_uuid, json_base, issued=claims.issued
        )

    def load_ticket_identity(
        self, request, job_uuid: str | None = None
    ) -> tuple[Identity | None, sa.Row | None]:
        """A stream ticket in the URL (for EventSource), only on the stream it names."""
        if request.method != "GET" or not request.path.endswith("/stream"):
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
        return self.lookup(request, login, token_hash, "", job_uuid, issued=issued)

    def lookup(
        self,
        request,
        login: str,
        token_hash: str,
        token: str,
        job_uuid: str | None = None,
        json_base: str | None = None,
        *,
        issued: dt.datetime | None,
    ) -> tuple[Identity | None, sa.Row | None]:
        """The identity of ``login``'s token (fingerprint ``token_hash``, issued at
        ``issued``), if the user exists, the token is not revoked and was issued no
        earlier than the user's ``tokens_after``; with ``job_uuid``, also that job."""
        params = {"b_login": login, "b_token_hash": token_hash}
        conn = request.dbconn
        if job_uuid is None:
            row = conn.execute(_IDENTITY, params).one_or_none()
        else:
            params["b_uuid"] = job_uuid
            statement = _IDENTITY_AND_JOB
            if json_base is not None and conn.dialect.name == "postgresql":
                params["b_base"] = json_base
                statement = _IDENTITY_AND_JOB_JSON
            row = conn.execute(statement, params).one_or_none()
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
        return identity, row if job_uuid is not None and row.uuid is not None else None

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


def _refusal(row: sa.Row | None, issued: dt.datetime | None) -> str | None:
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


_JOB = sa.select(_jobs).where(_jobs.c.uuid == sa.bindparam("b_uuid"))


def _job(request, job_uuid: str) -> sa.Row | None:
    return request.dbconn.execute(_JOB, {"b_uuid": job_uuid}).one_or_none()


def identity_and_job(
    request, job_uuid: str, json_base: str | None = None
) -> tuple[str | None, sa.Row | None]:
    """The caller's user id and job ``job_uuid`` (any actor's, None if there is none).

    Under nick-jobs' policy both come from one query (with ``json_base``, the container's
    URL, its row may carry the job's JSON as ``job_json``); under a host application's
    own policy, from its identity and a query of the job.
    """
    policy = request.registry.queryUtility(ISecurityPolicy)
    if isinstance(policy, JWTSecurityPolicy):
        identity, job = policy.identity_and_job(request, job_uuid, json_base)
        return (identity.login if identity else None), job
    userid = request.authenticated_userid
    return userid, None if userid is None else _job(request, job_uuid)


def guard(request) -> dict[str, Any] | None:
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


def confirmed(request) -> None:
    """The request's statement carried :func:`guard` and it held."""
    request.environ.pop(PROVISIONAL_KEY, None)


def current_identity(request) -> Identity | None:
    """The request's identity as the database has it now (None: the user or the token
    is gone); a provisional one is checked first, and replaced by what was found."""
    held = request.identity
    fingerprint = request.environ.pop(PROVISIONAL_KEY, None)
    if fingerprint is None:
        return held
    policy = request.registry.getUtility(ISecurityPolicy)
    current, _ = policy.lookup(request, held.login, fingerprint, held.token, issued=held.issued)
    policy.identity_cache.set(request, current)
    return current


def confirm(request) -> None:
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


def identity_changed():
    """The error for a request allowed with a name or roles its user no longer has."""
    error = api_error(
        Error.IDENTITY_CHANGED,
        "Your account changed while this request ran; nothing was done. Send it again.",
    )
    error.headers["Retry-After"] = "0"
    return error


def confirm_identity_tween_factory(handler, registry):
    """Confirm a provisional identity before the response leaves.

    Under the transaction manager: a request whose identity no longer holds commits
    nothing, and gets the error instead of its response.
    """

    def confirm_identity(request):
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


def includeme(config) -> None:
    config.set_security_policy(JWTSecurityPolicy(config.registry["nick_jobs.settings"]))
    config.add_tween(
        "nick_jobs.web.security.confirm_identity_tween_factory",
        under="nick_jobs.db.release_read_connection_tween_factory",
        over=EXCVIEW,
    )
