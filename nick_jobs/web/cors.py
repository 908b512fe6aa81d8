"""Cross-origin requests: pages of the origins in ``nick_jobs.cors_origins`` may call the API.

A browser asks first (a preflight ``OPTIONS`` with ``Access-Control-Request-Method``) before
any request that carries ``Authorization`` or a JSON body, which is every request of this
API but a few anonymous ``GET``\\ s. The answer says which methods and headers the API takes;
then every actual response to that origin, errors included, says the page may read it.

No cookies are involved (the API takes bearer tokens), so nothing here allows credentials.
A request from an origin not in the list is served as if it came from no page at all: it
gets no CORS headers, and the browser keeps its answer from the page. Its preflight alone
is refused with a 403, so a page on such an origin learns why in the console.

With the setting empty (``production.ini``'s default) this module adds nothing: no tween,
no header, and an application that includes nick-jobs answers ``OPTIONS`` as it did.
"""

from __future__ import annotations

from collections.abc import Callable

from pyramid.config import Configurator
from pyramid.registry import Registry
from pyramid.request import Request
from pyramid.response import Response
from pyramid.tweens import INGRESS

from nick_jobs.settings import registry_settings
from nick_jobs.web.errors import Error, api_error

ALLOW_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
# Every request header the API reads, and those clients send that a browser doesn't send
# across origins without asking (Cache-Control: the JS client's streams say no-cache).
ALLOW_HEADERS = (
    "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, Prefer, Accept, Cache-Control"
)
# The response headers a page's code needs: where a new job is, the next page, the total,
# and how long to wait after a 429 or 503.
EXPOSE_HEADERS = "Location, Link, X-Total-Count, Retry-After"
# How long a browser may keep a preflight's answer (Chromium keeps at most 2 hours).
MAX_AGE_S = 3600


def allows(origins: frozenset[str], origin: str) -> bool:
    """Whether a page of ``origin`` (an ``Origin`` header's value) may call the API."""
    # "null" is the origin of sandboxed frames and local files: no origin to trust by name.
    return origin != "null" and ("*" in origins or origin.lower() in origins)


def _vary(response: Response, *names: str) -> None:
    present = {v.strip().lower() for v in (response.headers.get("Vary") or "").split(",")}
    added = [name for name in names if name.lower() not in present]
    if added:
        response.vary = (*(response.vary or ()), *added)


def cors_tween_factory(
    handler: Callable[[Request], Response], registry: Registry
) -> Callable[[Request], Response]:
    origins = registry_settings(registry).cors_origins

    def cors_tween(request: Request) -> Response:
        origin = request.headers.get("Origin")
        if origin is None:
            return handler(request)
        allowed = allows(origins, origin)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if not allowed:
                refused = api_error(
                    Error.FORBIDDEN,
                    f"Pages of {origin} may not call this API: the origin is not in "
                    "nick_jobs.cors_origins.",
                )
                _vary(refused, "Origin")
                return refused
            response = Response(status=204)
            response.headers.update(
                {
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Allow-Methods": ALLOW_METHODS,
                    "Access-Control-Allow-Headers": ALLOW_HEADERS,
                    "Access-Control-Max-Age": str(MAX_AGE_S),
                }.items()
            )
            _vary(response, "Origin", "Access-Control-Request-Method")
            return response
        response = handler(request)
        if allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        # The answer depends on the Origin for every origin once any is allowed: a cache
        # must not hand one origin's answer to another.
        _vary(response, "Origin")
        return response

    return cors_tween


def includeme(config: Configurator) -> None:
    if registry_settings(config.registry).cors_origins:
        # Above every other tween: a preflight costs no admission slot and no database
        # connection, and a 503 from the drain or admission still reaches the page.
        config.add_tween("nick_jobs.web.cors.cors_tween_factory", under=INGRESS)
