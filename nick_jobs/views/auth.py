"""``@login``, ``@login-renew`` and ``@logout``, wire-compatible with Nick."""

from __future__ import annotations

import math

import marshmallow
from pyramid.httpexceptions import HTTPBadRequest, HTTPNoContent, HTTPUnsupportedMediaType
from pyramid.security import NO_PERMISSION_REQUIRED
from sqlalchemy.dialects import postgresql, sqlite

from .. import security, tokens
from ..body import json_body
from ..errors import api_error
from ..models import RevokedToken, utcnow
from ..ratelimit import RateLimiter
from ..resources import Root
from ..schemas import LoginSchema
from ..users import authenticate
from . import api_view


def _limit(request) -> None:
    # remote_addr, not client_addr: webob's client_addr believes any X-Forwarded-For the
    # client sends. Behind a trusted proxy the server (waitress) sets REMOTE_ADDR itself.
    retry_after = request.registry["nick_jobs.login_limiter"].hit(request.remote_addr or "?")
    if retry_after is not None:
        error = api_error(429, "Too many requests", "Too many login attempts; try again later.")
        error.headers["Retry-After"] = str(math.ceil(retry_after))
        raise error


@api_view(context=Root, name="@login", request_method="POST", permission=NO_PERMISSION_REQUIRED)
def login_view(context, request):
    _limit(request)
    try:
        credentials = LoginSchema().load(json_body(request))
    # As in Nick, a body that isn't a JSON object carries no credentials either.
    except (marshmallow.ValidationError, HTTPBadRequest, HTTPUnsupportedMediaType):
        raise api_error(
            400, "Missing credentials", "Login and password must be provided in body."
        ) from None
    user = authenticate(request.dbsession, credentials["login"], credentials["password"])
    if user is None:
        raise api_error(401, "Invalid credentials", "Wrong login and/or password.")
    settings = request.registry["nick_jobs.settings"]
    return {"token": tokens.issue(settings, user.login, user.fullname)}


@api_view(
    context=Root, name="@login-renew", request_method="POST", permission=NO_PERMISSION_REQUIRED
)
def renew_view(context, request):
    _limit(request)
    identity = security.current_identity(request)
    if identity is None:
        raise api_error(401, "Invalid session", "User is not logged in.")
    settings = request.registry["nick_jobs.settings"]
    return {"token": tokens.issue(settings, identity.login, identity.fullname)}


@api_view(context=Root, name="@logout", request_method="POST", permission=NO_PERMISSION_REQUIRED)
def logout_view(context, request):
    identity = security.current_identity(request)
    if identity is None:
        # As in Nick: logging out without a valid session is a harmless no-op.
        return HTTPNoContent()
    settings = request.registry["nick_jobs.settings"]
    claims = tokens.decode(settings, identity.token)
    dialect = request.dbsession.get_bind().dialect.name
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}.get(dialect)
    revoked = {"token_hash": tokens.fingerprint(identity.token), "expires": claims.exp}
    if insert is None:
        request.dbsession.merge(RevokedToken(**revoked))
    else:
        # Idempotent: two logouts racing with one token are not a conflict.
        request.dbsession.execute(insert(RevokedToken).values(revoked).on_conflict_do_nothing())
    # Revocations are only needed until the token would expire anyway.
    request.dbsession.execute(
        RevokedToken.__table__.delete().where(RevokedToken.expires < utcnow())
    )
    return HTTPNoContent()


def includeme(config) -> None:
    settings = config.registry["nick_jobs.settings"]
    config.registry["nick_jobs.login_limiter"] = RateLimiter(
        settings.login_rate_limit, settings.login_rate_window_s
    )
    config.scan(__name__)
