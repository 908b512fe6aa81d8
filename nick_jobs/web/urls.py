"""Where every URL nick-jobs writes begins: ``@id``, ``Location``, ``Link``, a ticket's ``url``.

:func:`application_url` is the one source of that base. With ``nick_jobs.public_url`` set
it is that URL, whatever the request says. Without it, it is the request's own
application URL (scheme, ``Host``, ``SCRIPT_NAME``), and the ``Host`` is the client's to
write: the tween below answers ``400`` to one that is not a ``host[:port]``, before a view
runs, so nothing a client sends in it ends up in a header or a body. A proxy's trusted
``X-Forwarded-Host`` reaches nick-jobs as the ``Host`` (waitress and paste's
``PrefixMiddleware`` put it there), and is checked the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPException
from pyramid.registry import Registry
from pyramid.request import Request
from pyramid.response import Response

from nick_jobs.settings import registry_settings
from nick_jobs.web.errors import Error, api_error
from nick_jobs.web.hosts import valid_host

# Where web.resources' includeme registers nick-jobs' own root factory.
ROOT_FACTORY = "nick_jobs.root_factory"


# The names under which nick-jobs' views write URLs; under a host application's own root,
# a request is nick-jobs' when its path goes through one of them.
URL_WRITING_NAMES = frozenset(
    {"@jobs", "@scheduled-jobs", "@job-actions", "@scheduled-job-actions", "@stream-tickets"}
)


def bad_host() -> HTTPException:
    return api_error(
        Error.BAD_REQUEST,
        "The Host header is not a valid host[:port]: the URLs in the answer are made of it.",
    )


def application_url(request: Request) -> str:
    """The URL of nick-jobs' root, without a trailing slash: ``nick_jobs.public_url`` when
    set, otherwise the request's application URL once its ``Host`` is known to be valid."""
    public = registry_settings(request.registry).public_url
    if public:
        return public
    host = request.environ.get("HTTP_HOST")
    if host is not None and not valid_host(host):
        raise bad_host()
    return request.application_url


def resource_url(request: Request, resource: Any, *elements: str) -> str:
    """``request.resource_url(resource, *elements)`` on :func:`application_url`."""
    return request.resource_url(resource, *elements, app_url=application_url(request))


def host_tween_factory(
    handler: Callable[[Request], Response], registry: Registry
) -> Callable[[Request], Response]:
    """Answers ``400`` to a request of nick-jobs whose ``Host`` it could not write into a
    URL. Under nick-jobs' own root every request is nick-jobs'; under a host application's
    root, those through one of :data:`URL_WRITING_NAMES`, so the host's own keep their
    behaviour."""
    if registry_settings(registry).public_url:
        return handler  # the request's Host is never written
    from pyramid.interfaces import IRootFactory

    # nick-jobs' own root, as web.resources' includeme registered it.
    everything = registry.queryUtility(IRootFactory) is registry.get(ROOT_FACTORY)

    def host_tween(request: Request) -> Response:
        # No Host at all (HTTP/1.0) is fine: the URL then uses the server's own name.
        host = request.environ.get("HTTP_HOST")
        if host is None or valid_host(host):
            return handler(request)
        path = request.environ.get("PATH_INFO", "")
        if everything or not URL_WRITING_NAMES.isdisjoint(path.split("/")):
            return bad_host()
        return handler(request)

    return host_tween


def includeme(config: Configurator) -> None:
    # Over admission: a request refused here never waits for a slot.
    config.add_tween(
        "nick_jobs.web.urls.host_tween_factory",
        under="nick_jobs.ops.shutdown.drain_tween_factory",
        over="nick_jobs.ops.admission.admission_tween_factory",
    )
