"""What nick-jobs takes in and writes out, held to one strict reading everywhere.

* A URL whose path or query string is not UTF-8 (``/@jobs/%ff``, ``?q=%ff``) or whose
  query string holds a NUL is answered here, before anything decodes it: 404 for the
  path (it names nothing), 400 for the query string. The tweens, the security policy
  and the views below each decode them on their own, and would each fail with a 500.
* Each nick-jobs view declares the query parameters it takes (``api_view(query=...)``)
  and whether it takes a sub-path: an unknown parameter is a 400 naming it, an unknown
  sub-path (``/@jobs/stream/stream``) a 404, the same for every endpoint. Host views,
  which declare neither, are left as they are.
* The JSON renderer of nick-jobs' views writes strict JSON: never ``NaN`` or
  ``Infinity``, which JSON has no words for.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from pyramid.config import Configurator
from pyramid.registry import Registry
from pyramid.renderers import JSON
from pyramid.request import Request
from pyramid.response import Response
from pyramid.tweens import INGRESS

from nick_jobs.web.errors import Error, api_error

#: The renderer of nick-jobs' views (``api_view`` sets it).
RENDERER = "nick_jobs_json"
#: View options read by :func:`request_checks` (``api_view(query=..., subpath=...)``).
QUERY_OPTION = "nick_jobs_query"
SUBPATH_OPTION = "nick_jobs_subpath"


# --- URLs ----------------------------------------------------------------------------------


def url_problem(environ: dict[str, Any]) -> tuple[int, str] | None:
    """Why the request's URL can't be read (a status and a message), or None.

    WSGI hands the path and the query string over as bytes in latin-1 strings; what the
    application reads is their UTF-8. A plain ASCII URL without ``%`` costs two scans.
    """
    path = environ.get("PATH_INFO", "")
    if not path.isascii():
        try:
            path.encode("latin-1").decode("utf-8")
        except UnicodeError:
            return 404, "The path is not valid UTF-8; it names no resource."
    query = environ.get("QUERY_STRING", "")
    if query and ("%" in query or not query.isascii()):
        # As webob reads it: each %XX one latin-1 character, the bytes then UTF-8.
        pairs = parse_qsl(query, keep_blank_values=True, encoding="latin-1")
        try:
            for part in itertools.chain.from_iterable(pairs):
                if "\x00" in part:
                    return 400, "The query string holds a NUL character."
                part.encode("latin-1").decode("utf-8")
        except UnicodeError:
            return 400, "The query string is not valid UTF-8."
    return None


def malformed_url_tween_factory(
    handler: Callable[[Request], Response], registry: Registry
) -> Callable[[Request], Response]:
    def malformed_url_tween(request: Request) -> Response:
        problem = url_problem(request.environ)
        if problem is None:
            return handler(request)
        status, message = problem
        return api_error(Error.NOT_FOUND if status == 404 else Error.BAD_REQUEST, message)

    return malformed_url_tween


# --- query parameters and sub-paths, per view ------------------------------------------------


def unknown_parameters(request: Request, accepted: frozenset[str]) -> list[str]:
    """The names in the query string that ``accepted`` does not hold, in their order."""
    if not request.environ.get("QUERY_STRING"):
        return []
    return list(dict.fromkeys(name for name in request.GET if name not in accepted))


def check_query(request: Request, accepted: Iterable[str]) -> None:
    """Refuse a query parameter not in ``accepted`` with the validation error's 400."""
    unknown = unknown_parameters(request, frozenset(accepted))
    if unknown:
        raise api_error(
            Error.VALIDATION,
            "Unknown query parameter: " + ", ".join(unknown) + ".",
            fields={name: ["Unknown field."] for name in unknown},
        )


# A view as the view derivers wrap it: called with the context and the request.
_View = Callable[[Any, Request], Response]


def request_checks(view: _View, info: Any) -> _View:
    """View deriver: the view's declared query parameters and sub-path, checked after its
    permission (a client without access learns nothing from a 400)."""
    accepted = info.options.get(QUERY_OPTION)
    takes_subpath = info.options.get(SUBPATH_OPTION)
    if accepted is None and takes_subpath is None:
        return view  # not a nick-jobs view: the host's own
    accepted = frozenset(accepted or ())

    def checked_view(context: Any, request: Request) -> Response:
        if request.subpath and not takes_subpath:
            raise api_error(Error.NOT_FOUND, "The resource you requested does not exist.")
        if request.environ.get("QUERY_STRING"):
            check_query(request, accepted)
        return view(context, request)

    return checked_view


request_checks.options = (QUERY_OPTION, SUBPATH_OPTION)  # type: ignore[attr-defined]


# --- strict JSON out -------------------------------------------------------------------------


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float as None (JSON ``null``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def dumps(value: Any, **kw: Any) -> str:
    """``json.dumps`` that never writes ``NaN`` or ``Infinity``.

    Input with them is refused (:mod:`nick_jobs.web.body`), so only a value stored before
    that can hold one: it is written as ``null`` rather than failing the whole response.
    """
    kw["allow_nan"] = False
    try:
        return json.dumps(value, **kw)
    except ValueError:
        return json.dumps(finite(value), **kw)


def includeme(config: Configurator) -> None:
    # Above every other tween of nick-jobs: from the drain tween down, they read the path.
    config.add_tween(
        "nick_jobs.web.strict.malformed_url_tween_factory",
        under=INGRESS,
        over="nick_jobs.ops.shutdown.drain_tween_factory",
    )
    config.add_view_deriver(request_checks, name="nick_jobs_request_checks")
    config.add_renderer(RENDERER, JSON(serializer=dumps))
