"""``@login``, ``@login-renew`` and ``@logout``, wire-compatible with Nick."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
from typing import Any

import marshmallow
import sqlalchemy as sa
from pyramid.config import Configurator
from pyramid.httpexceptions import (
    HTTPBadRequest,
    HTTPException,
    HTTPNoContent,
    HTTPUnsupportedMediaType,
)
from pyramid.request import Request
from pyramid.security import NO_PERMISSION_REQUIRED
from sqlalchemy.dialects import postgresql, sqlite

from nick_jobs.db.meta import table, utcnow
from nick_jobs.jobs.schemas import LoginSchema
from nick_jobs.settings import Settings, registry_settings
from nick_jobs.users import tokens
from nick_jobs.users.accounts import authenticate
from nick_jobs.users.model import RevokedToken
from nick_jobs.users.ratelimit import LoginLimits
from nick_jobs.web import security
from nick_jobs.web.body import json_body
from nick_jobs.web.errors import Error, api_error
from nick_jobs.web.resources import Root
from nick_jobs.web.views import api_view


def _too_many(retry_after: float) -> HTTPException:
    error = api_error(Error.TOO_MANY_REQUESTS, "Too many login attempts; try again later.")
    error.headers["Retry-After"] = str(math.ceil(retry_after))
    return error


@api_view(context=Root, name="@login", request_method="POST", permission=NO_PERMISSION_REQUIRED)
def login_view(context: Root, request: Request) -> dict[str, str]:
    try:
        credentials = LoginSchema().load(json_body(request))
    # As in Nick, a body that isn't a JSON object carries no credentials either.
    except (marshmallow.ValidationError, HTTPBadRequest, HTTPUnsupportedMediaType):
        raise api_error(
            Error.MISSING_CREDENTIALS, "Login and password must be provided in body."
        ) from None
    # remote_addr, not client_addr: webob's client_addr believes any X-Forwarded-For the
    # client sends. Behind a trusted proxy the server (waitress) sets REMOTE_ADDR itself.
    limits: LoginLimits = request.registry["nick_jobs.login_limits"]
    attempt = limits.start(request.remote_addr or "?", credentials["login"])
    if attempt.retry_after is not None:
        # Refused before the password is checked: a limited guess learns nothing.
        raise _too_many(attempt.retry_after)
    try:
        user = authenticate(request.dbsession, credentials["login"], credentials["password"])
    except Exception:
        attempt.uncount()  # no answer (the database is away, say): not a failed guess
        raise
    if user is None:
        raise api_error(Error.INVALID_CREDENTIALS, "Wrong login and/or password.")
    attempt.uncount()
    settings = registry_settings(request.registry)
    return {"token": tokens.issue(settings, user.login, user.fullname)}


@api_view(
    context=Root, name="@login-renew", request_method="POST", permission=NO_PERMISSION_REQUIRED
)
def renew_view(context: Root, request: Request) -> dict[str, str]:
    # Not limited: a valid token is never refused, and an invalid one guesses nothing
    # (a signature can't be guessed one request at a time).
    identity = security.current_identity(request)
    if identity is None:
        raise api_error(Error.INVALID_SESSION, "User is not logged in.")
    settings = registry_settings(request.registry)
    return {"token": tokens.issue(settings, identity.login, identity.fullname)}


@api_view(context=Root, name="@logout", request_method="POST", permission=NO_PERMISSION_REQUIRED)
def logout_view(context: Root, request: Request) -> HTTPNoContent:
    settings = registry_settings(request.registry)
    identity = security.current_identity(request)
    claims = None
    if identity is not None:
        with contextlib.suppress(tokens.InvalidToken):  # expired since it was checked
            claims = tokens.decode(settings, identity.token)
    else:
        claims = _respelled(request, settings)
    if claims is None:
        # As in Nick: logging out without a valid session is a harmless no-op.
        return HTTPNoContent()
    dialect: str = request.dbsession.get_bind().dialect.name
    revoked: dict[str, Any] = {
        # The token's identity (its jti), not its text: no other spelling of it brings the
        # session back, and another token of the same user and second is not touched.
        "token_hash": claims.fingerprint,
        # Kept as long as the token is accepted at all, which is past exp by the leeway.
        "expires": claims.exp + dt.timedelta(seconds=settings.jwt_leeway_s),
    }
    insert = _insert_once(dialect, revoked)
    if insert is None:
        request.dbsession.merge(RevokedToken(**revoked))
    else:
        request.dbsession.execute(insert)
    # Revocations are only needed until the token would expire anyway.
    request.dbsession.execute(table(RevokedToken).delete().where(RevokedToken.expires < utcnow()))
    return HTTPNoContent()


def _insert_once(dialect: str, revoked: dict[str, Any]) -> sa.Insert | None:
    """The revocation's INSERT that does nothing when the token is revoked already, on
    the databases that have one (ON CONFLICT DO NOTHING): two logouts racing with one
    token are not a conflict."""
    if dialect == "postgresql":
        return postgresql.insert(RevokedToken).values(revoked).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(RevokedToken).values(revoked).on_conflict_do_nothing()
    return None


def _respelled(request: Request, settings: Settings) -> tokens.TokenClaims | None:
    """The claims of a valid token the request sent in another spelling (padded, say):
    a client that logs out with it expects that token ended, though the spelling opened
    nothing."""
    sent = security.bearer_token(request, settings.max_authorization_header)
    canonical = None if sent is None else tokens.canonical_spelling(sent)
    if canonical is None or canonical == sent:
        return None
    try:
        return tokens.decode(settings, canonical)
    except tokens.InvalidToken:
        return None


def includeme(config: Configurator) -> None:
    settings = registry_settings(config.registry)
    config.registry["nick_jobs.login_limits"] = LoginLimits(
        settings.login_rate_limit,
        settings.login_account_rate_limit,
        settings.login_address_rate_limit,
        settings.login_rate_window_s,
    )
    config.scan(__name__)
