"""The admin dashboard, served at ``nick_jobs.dashboard_path`` (docs/dashboard.md).

The dashboard is a set of static files (HTML, CSS and ES modules, no build step) that
talk to the API with the JavaScript client (``clients/js/index.js``, served as
``vendor/nick-jobs-client.js`` through a symlink, never a copy). The server's part is
small:

* ``{path}/`` and every file below it, from ``static/``, by :class:`pyramid.static.static_view`;
* ``{path}`` redirects to ``{path}/``;
* ``{path}/config.json`` tells the page where the API is, relative to the page;
* every one of those responses carries a strict Content-Security-Policy (no inline
  script or style), ``nosniff``, ``no-referrer``, and ``Cache-Control: no-cache``: the
  browser keeps the files but asks again each time (an ``ETag`` and ``Last-Modified``
  make that a ``304``), so a new release is never mixed with old modules.

None of these views needs a permission, on purpose: the files hold no data, and every
piece of data the page shows comes from the API, which checks the bearer token of each
request. A view registered with ``NO_PERMISSION_REQUIRED`` states that choice, as the
health checks do, rather than leaving a permission out by mistake.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyramid.events import NewResponse
from pyramid.httpexceptions import HTTPFound, HTTPNotFound
from pyramid.request import Request
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED
from pyramid.static import static_view

from nick_jobs.settings import registry_settings

if TYPE_CHECKING:
    from pyramid.config import Configurator

STATIC = Path(__file__).resolve().parent / "static"

#: Route names of the dashboard; the headers below are added to their responses only.
FILES_ROUTE = "nick_jobs.dashboard.files"
CONFIG_ROUTE = "nick_jobs.dashboard.config"
REDIRECT_ROUTE = "nick_jobs.dashboard.redirect"
ROUTES = frozenset({FILES_ROUTE, CONFIG_ROUTE, REDIRECT_ROUTE})

#: No inline script or style anywhere: the page's own files, its own API, nothing else.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
    "object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}

#: The files the dashboard serves, by extension; any other file is not served (404).
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml; charset=utf-8",
    ".png": "image/png",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}


def api_root(dashboard_path: str, api_path: str = "/") -> str:
    """The API's root relative to the dashboard's page (``{path}/``): ``../`` per segment
    of ``dashboard_path``, so it holds behind any prefix or proxy the page came through,
    then ``api_path``, where the object holding ``@jobs`` is from the application's root."""
    depth = len([part for part in dashboard_path.split("/") if part])
    inside = api_path.strip("/")
    return "../" * depth + (f"{inside}/" if inside else "")


class DashboardFiles:
    """``static_view`` over ``static/``, with the dashboard's types and validators."""

    def __init__(self, root: Path) -> None:
        # Symlinks are followed (the client module is one); names are checked by
        # static_view, which refuses ``..`` and the like before it opens anything.
        self.files = static_view(str(root), cache_max_age=None, use_subpath=True)

    def __call__(self, context: Any, request: Request) -> Response:
        name = request.subpath[-1] if request.subpath else "index.html"
        content_type = CONTENT_TYPES.get(os.path.splitext(name)[1].lower())
        if content_type is None or name.startswith("."):
            raise HTTPNotFound()
        response = self.files(context, request)
        response.content_type = content_type.split(";")[0]
        if "charset=" in content_type:
            response.charset = "utf-8"
        # Validated on every use: a 304 costs a round trip, a stale module costs a
        # page that no longer matches the API.
        response.cache_control = "no-cache"
        if response.last_modified is not None and response.content_length is not None:
            stamp = int(response.last_modified.timestamp())
            response.etag = f"{stamp:x}-{response.content_length:x}"
        return response


def config_view(context: Any, request: Request) -> Response:
    """Where the API is, relative to the page: the page learns it without a build step."""
    settings = registry_settings(request.registry)
    response = request.response
    response.content_type = "application/json"
    response.cache_control = "no-cache"
    response.json_body = {"apiRoot": api_root(settings.dashboard_path, settings.dashboard_api_path)}
    return response


def redirect_view(context: Any, request: Request) -> HTTPFound:
    """``{path}`` → ``{path}/``, so the page's relative URLs resolve inside the dashboard."""
    location = request.path_url + "/"
    if request.query_string:
        location += "?" + request.query_string
    return HTTPFound(location=location)


def add_security_headers(event: NewResponse) -> None:
    """The dashboard's headers, on each of its responses (a 404 or a 304 included)."""
    route = getattr(event.request, "matched_route", None)
    if route is None or route.name not in ROUTES:
        return
    headers = event.response.headers
    for name, value in SECURITY_HEADERS.items():
        headers[name] = value


def includeme(config: Configurator) -> None:
    settings = registry_settings(config.registry)
    if not settings.dashboard:
        return
    path = settings.dashboard_path.strip("/")
    methods = ("GET", "HEAD")
    # The exact routes first: routes are tried in the order they were added.
    config.add_route(REDIRECT_ROUTE, f"/{path}")
    config.add_route(CONFIG_ROUTE, f"/{path}/config.json")
    config.add_route(FILES_ROUTE, f"/{path}/*subpath")
    # Public by design (see the module's docstring): the files hold no data.
    config.add_view(
        redirect_view,
        route_name=REDIRECT_ROUTE,
        request_method=methods,
        permission=NO_PERMISSION_REQUIRED,
    )
    config.add_view(
        config_view,
        route_name=CONFIG_ROUTE,
        request_method=methods,
        permission=NO_PERMISSION_REQUIRED,
    )
    config.add_view(
        DashboardFiles(STATIC),
        route_name=FILES_ROUTE,
        request_method=methods,
        permission=NO_PERMISSION_REQUIRED,
    )
    config.add_subscriber(add_security_headers, NewResponse)
