"""One error body everywhere: ``{"error": {"type": ..., "message": ...}}``.

:func:`api_error` builds every error response the service sends; the exception views
below turn whatever Pyramid, marshmallow or the database raise into that same shape, so
no client ever sees an HTML page or a stack trace.
"""

from __future__ import annotations

import logging
from enum import Enum, unique
from typing import Any

import marshmallow
import sqlalchemy.exc
from pyramid.config import Configurator
from pyramid.httpexceptions import (
    HTTPException,
    HTTPForbidden,
    HTTPMethodNotAllowed,
    HTTPNotFound,
    HTTPUnauthorized,
    status_map,
)
from pyramid.request import Request
from pyramid.security import forget
from pyramid.view import exception_view_config, forbidden_view_config, notfound_view_config

log = logging.getLogger(__name__)


UNAUTHORIZED_MESSAGE = "You are not authorized to access this resource."


@unique
class Error(Enum):
    """Every error the API sends: its HTTP status and the ``type`` clients read.

    The ``type`` strings are part of the API (clients match on them, docs/api.md lists
    them): change one only as a breaking change. Each belongs to one status only.
    """

    BAD_REQUEST = (400, "Bad request")
    INVALID_JSON = (400, "Invalid JSON")
    UNSUPPORTED_CHARSET = (400, "Unsupported charset")
    VALIDATION = (400, "Validation error")
    INVALID_CURSOR = (400, "Invalid cursor")
    INVALID_HEADER = (400, "Invalid header")
    MISSING_CREDENTIALS = (400, "Missing credentials")
    UNAUTHORIZED = (401, "Unauthorized")
    INVALID_CREDENTIALS = (401, "Invalid credentials")
    INVALID_SESSION = (401, "Invalid session")
    FORBIDDEN = (403, "Forbidden")
    NOT_FOUND = (404, "Not found")
    METHOD_NOT_ALLOWED = (405, "Method not allowed")
    CONFLICT = (409, "Conflict")
    INVALID_STATE = (409, "Invalid state")
    NOT_RESUMABLE = (409, "Not resumable")
    LEASE_REFUSED = (409, "Lease refused")
    UNKNOWN_ACTION = (409, "Unknown action")
    DECLARED_SCHEDULED_JOB = (409, "Declared scheduled job")
    REQUEST_TOO_LARGE = (413, "Request too large")
    UNSUPPORTED_MEDIA_TYPE = (415, "Unsupported media type")
    TOO_MANY_REQUESTS = (429, "Too many requests")
    INTERNAL = (500, "Internal server error")
    SERVICE_UNAVAILABLE = (503, "Service unavailable")
    TOO_MANY_STREAMS = (503, "Too many streams")
    IDENTITY_CHANGED = (503, "Identity changed")

    def __init__(self, status: int, type_: str) -> None:
        self.status = status
        self.type = type_

    @classmethod
    def for_status(cls, code: int) -> Error:
        """The generic member for an HTTP error status, for an exception that came with
        no body of ours (a bare ``HTTPBadRequest``, say).

        A status the catalogue has no member for falls back to ``BAD_REQUEST`` (400) for
        a 4xx and ``INTERNAL`` (500) for a 5xx: the client gets a type it knows rather
        than one nobody documented. Pyramid itself raises only 400 (its CSRF checks),
        403 and 404, all in the catalogue; any other comes from code that should name
        its member.
        """
        if code < 400:
            raise ValueError(f"{code} is not an error status")
        generic = _GENERIC_FOR_STATUS.get(code)
        if generic is not None:
            return generic
        return cls.BAD_REQUEST if code < 500 else cls.INTERNAL


_GENERIC_FOR_STATUS: dict[int, Error] = {
    error.status: error
    for error in (
        Error.BAD_REQUEST,
        Error.UNAUTHORIZED,
        Error.FORBIDDEN,
        Error.NOT_FOUND,
        Error.METHOD_NOT_ALLOWED,
        Error.CONFLICT,
        Error.REQUEST_TOO_LARGE,
        Error.UNSUPPORTED_MEDIA_TYPE,
        Error.TOO_MANY_REQUESTS,
        Error.INTERNAL,
        Error.SERVICE_UNAVAILABLE,
    )
}


def error_body(error: Error, message: str, **extra: Any) -> dict[str, Any]:
    """The JSON error object, for a response whose status the caller sets itself."""
    return {"error": {"type": error.type, "message": message, **extra}}


def api_error(error: Error, message: str, **extra: Any) -> HTTPException:
    """An HTTP exception carrying the JSON error body; raise it or return it from a view."""
    exc = status_map[error.status]()
    exc.content_type = "application/json"
    exc.json_body = error_body(error, message, **extra)
    return exc


def _is_json_error(response: Any) -> bool:
    return getattr(response, "content_type", None) == "application/json" and bool(
        getattr(response, "body", b"")
    )


@notfound_view_config()
def not_found(exc: HTTPNotFound, request: Request) -> HTTPException:
    if _is_json_error(exc):
        return exc
    # Pyramid reports a view that exists for another method as a predicate mismatch,
    # which subclasses HTTPNotFound; the client deserves a 405 for that.
    if exc.__class__.__name__ == "PredicateMismatch":
        response = api_error(
            Error.METHOD_NOT_ALLOWED, f"{request.method} is not allowed on {request.path}."
        )
        allowed = allowed_methods(request)
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
        return response
    return api_error(Error.NOT_FOUND, "The resource you requested does not exist.")


def allowed_methods(request: Request) -> tuple[str, ...]:
    """The methods the views for ``request``'s context and view name take (a 405's
    ``Allow``), read once per kind of context and name from the registered views."""
    context, name = getattr(request, "context", None), getattr(request, "view_name", "")
    if context is None:
        return ()
    cache: dict[tuple[type, str], tuple[str, ...]] = request.registry.setdefault(
        "nick_jobs.allowed_methods", {}
    )
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
def forbidden(exc: HTTPForbidden, request: Request) -> HTTPException:
    if _is_json_error(exc):
        return exc  # a view's own 403, with its specific message
    if request.authenticated_userid is None:
        response = api_error(Error.UNAUTHORIZED, UNAUTHORIZED_MESSAGE)
        response.headers.extend(forget(request))
        return response
    log.info("denied %s %s: %s", request.method, request.path, getattr(exc, "result", None))
    return api_error(Error.FORBIDDEN, "You are not authorized to access this resource.")


def authenticated_login(request: Request) -> str:
    """The caller's login, for a view whose permission only a user holds (nick-jobs' ACLs
    grant none to an anonymous caller) and that records who acted.

    Should a host application's policy grant it to anyone, an anonymous caller is refused
    as one denied the permission (a 401), not recorded as no one.
    """
    login = request.authenticated_userid
    if login is None:
        raise HTTPForbidden()
    return login


@exception_view_config(HTTPUnauthorized)
def unauthorized(exc: HTTPUnauthorized, request: Request) -> HTTPException:
    response = exc if _is_json_error(exc) else api_error(Error.UNAUTHORIZED, exc.detail or "")
    response.headers.extend(forget(request))
    return response


INVALID_FIELDS = "The request has invalid fields."


@exception_view_config(marshmallow.ValidationError)
def validation_failed(exc: marshmallow.ValidationError, request: Request) -> HTTPException:
    # marshmallow leaves normalized_messages unannotated: a dict of field names to
    # their messages (or nested dicts of them).
    fields = exc.normalized_messages()  # type: ignore[no-untyped-call]
    return api_error(Error.VALIDATION, INVALID_FIELDS, fields=fields)


@exception_view_config(sqlalchemy.exc.OperationalError)
@exception_view_config(sqlalchemy.exc.InterfaceError)
@exception_view_config(sqlalchemy.exc.TimeoutError)
def database_unavailable(exc: Exception, request: Request) -> HTTPException:
    log.error("database unavailable during %s %s: %s", request.method, request.path, exc)
    response = api_error(
        Error.SERVICE_UNAVAILABLE, "The database is not reachable; try again shortly."
    )
    response.headers["Retry-After"] = "5"
    return response


@exception_view_config(sqlalchemy.exc.DBAPIError)
def database_error(exc: sqlalchemy.exc.DBAPIError, request: Request) -> HTTPException:
    # Whatever class the driver gave it, an error that cost the connection (the server
    # restarting, a network cut) is the database being away; any other is ours.
    if exc.connection_invalidated:
        return database_unavailable(exc, request)
    return unexpected(exc, request)


@exception_view_config(HTTPException)
def http_exception(exc: HTTPException, request: Request) -> HTTPException:
    if _is_json_error(exc):
        return exc
    if isinstance(exc, HTTPMethodNotAllowed):
        return api_error(Error.METHOD_NOT_ALLOWED, f"{request.method} is not allowed here.")
    if exc.code < 400:
        return exc
    return api_error(Error.for_status(exc.code), exc.detail or exc.explanation)


@exception_view_config(Exception)
def unexpected(exc: Exception, request: Request) -> HTTPException:
    log.exception("unexpected error during %s %s", request.method, request.path)
    return api_error(Error.INTERNAL, "Something went wrong on our side.")


def includeme(config: Configurator) -> None:
    config.scan(__name__)
    # psycopg's own errors, raised unwrapped on a connection the server closed before a
    # statement is even sent. psycopg comes with the postgresql extra; without it there is
    # no PostgreSQL connection to lose.
    try:
        import psycopg
    except ModuleNotFoundError:
        return
    for error in (psycopg.OperationalError, psycopg.InterfaceError):
        config.add_exception_view(database_unavailable, context=error)
