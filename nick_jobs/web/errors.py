"""One error body everywhere: ``{"error": {"type": ..., "message": ...}}``.

:func:`api_error` builds every error response the service sends; the exception views
below turn whatever Pyramid, marshmallow or the database raise into that same shape, so
no client ever sees an HTML page or a stack trace.
"""

from __future__ import annotations

import logging
from typing import Any

import marshmallow
import psycopg
import sqlalchemy.exc
from pyramid.httpexceptions import (
    HTTPException,
    HTTPForbidden,
    HTTPInternalServerError,
    HTTPMethodNotAllowed,
    HTTPNotFound,
    HTTPServiceUnavailable,
    HTTPUnauthorized,
    status_map,
)
from pyramid.security import forget
from pyramid.view import exception_view_config, forbidden_view_config, notfound_view_config

log = logging.getLogger(__name__)


UNAUTHORIZED_MESSAGE = "You are not authorized to access this resource."


def error_body(type_: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"type": type_, "message": message, **extra}}


def api_error(code: int, type_: str, message: str, **extra: Any) -> HTTPException:
    """An HTTP exception carrying the JSON error body; raise it or return it from a view."""
    exc = status_map[code]()
    exc.content_type = "application/json"
    exc.json_body = error_body(type_, message, **extra)
    return exc


def _is_json_error(response: Any) -> bool:
    return getattr(response, "content_type", None) == "application/json" and bool(
        getattr(response, "body", b"")
    )


@notfound_view_config()
def not_found(exc: HTTPNotFound, request) -> HTTPException:
    if _is_json_error(exc):
        return exc
    # Pyramid reports a view that exists for another method as a predicate mismatch,
    # which subclasses HTTPNotFound; the client deserves a 405 for that.
    if exc.__class__.__name__ == "PredicateMismatch":
        response = api_error(
            405, "Method not allowed", f"{request.method} is not allowed on {request.path}."
        )
        allowed = allowed_methods(request)
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
        return response
    return api_error(404, "Not found", "The resource you requested does not exist.")


def allowed_methods(request) -> tuple[str, ...]:
    """The methods the views for ``request``'s context and view name take (a 405's
    ``Allow``), read once per kind of context and name from the registered views."""
    context, name = getattr(request, "context", None), getattr(request, "view_name", "")
    if context is None:
        return ()
    cache = request.registry.setdefault("nick_jobs.allowed_methods", {})
    key = (type(context), name)
    if key not in cache:
        methods: set[str] = set()
        for item in request.registry.introspector.get_category("views"):
            view = item["introspectable"]
            owner, taken = view["context"], view["request_methods"]
            if view["name"] != name or view["route_name"] is not None or taken is None:
                continue
            if owner is not None and not _is_context_of(owner, context):
                continue
            methods.update((taken,) if isinstance(taken, str) else taken)
        if "GET" in methods:
            methods.add("HEAD")  # Pyramid answers HEAD with the GET view
        cache[key] = tuple(sorted(methods))
    return cache[key]


def _is_context_of(owner: Any, context: Any) -> bool:
    if isinstance(owner, type):
        return isinstance(context, owner)
    provided_by = getattr(owner, "providedBy", None)  # an interface
    return bool(provided_by and provided_by(context))


@forbidden_view_config()
def forbidden(exc: HTTPForbidden, request) -> HTTPException:
    if _is_json_error(exc):
        return exc  # a view's own 403, with its specific message
    if request.authenticated_userid is None:
        response = api_error(401, "Unauthorized", UNAUTHORIZED_MESSAGE)
        response.headers.extend(forget(request))
        return response
    log.info("denied %s %s: %s", request.method, request.path, getattr(exc, "result", None))
    return api_error(403, "Forbidden", "You are not authorized to access this resource.")


@exception_view_config(HTTPUnauthorized)
def unauthorized(exc: HTTPUnauthorized, request) -> HTTPException:
    response = exc if _is_json_error(exc) else api_error(401, "Unauthorized", exc.detail or "")
    response.headers.extend(forget(request))
    return response


@exception_view_config(marshmallow.ValidationError)
def validation_failed(exc: marshmallow.ValidationError, request) -> HTTPException:
    return api_error(
        400, "Validation error", "The request has invalid fields.", fields=exc.normalized_messages()
    )


@exception_view_config(sqlalchemy.exc.OperationalError)
@exception_view_config(sqlalchemy.exc.InterfaceError)
@exception_view_config(sqlalchemy.exc.TimeoutError)
# Raised by the driver itself, unwrapped: on a connection the server closed, before a
# statement is even sent.
@exception_view_config(psycopg.OperationalError)
@exception_view_config(psycopg.InterfaceError)
def database_unavailable(exc: Exception, request) -> HTTPException:
    log.error("database unavailable during %s %s: %s", request.method, request.path, exc)
    response = api_error(
        503, "Service unavailable", "The database is not reachable; try again shortly."
    )
    response.headers["Retry-After"] = "5"
    return response


@exception_view_config(sqlalchemy.exc.DBAPIError)
def database_error(exc: sqlalchemy.exc.DBAPIError, request) -> HTTPException:
    # Whatever class the driver gave it, an error that cost the connection (the server
    # restarting, a network cut) is the database being away; any other is ours.
    if exc.connection_invalidated:
        return database_unavailable(exc, request)
    return unexpected(exc, request)


@exception_view_config(HTTPException)
def http_exception(exc: HTTPException, request) -> HTTPException:
    if _is_json_error(exc):
        return exc
    if isinstance(exc, HTTPMethodNotAllowed):
        return api_error(405, "Method not allowed", f"{request.method} is not allowed here.")
    if exc.code < 400:
        return exc
    if isinstance(exc, HTTPServiceUnavailable):
        return api_error(503, "Service unavailable", exc.detail or exc.explanation)
    return api_error(exc.code, exc.title, exc.detail or exc.explanation)


@exception_view_config(Exception)
def unexpected(exc: Exception, request) -> HTTPException:
    log.exception("unexpected error during %s %s", request.method, request.path)
    return api_error(
        HTTPInternalServerError.code, "Internal server error", "Something went wrong on our side."
    )


def includeme(config) -> None:
    config.scan(__name__)
