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

import functools
import ipaddress
import re
from typing import Any

from .errors import api_error

# RFC 1123: letters, digits and inner hyphens, 63 characters a label at most; and
# underscores, which RFC 1123 leaves out but container service names (``my_api:8080``)
# carry, and which can't change what a URL means.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}\.?\Z")
_PORT = re.compile(r"[0-9]{1,5}\Z")

# The names under which nick-jobs' views write URLs; under a host application's own root,
# a request is nick-jobs' when its path goes through one of them.
URL_WRITING_NAMES = frozenset(
    {"@jobs", "@scheduled-jobs", "@job-actions", "@scheduled-job-actions", "@stream-tickets"}
)


@functools.lru_cache(maxsize=512)
def valid_host(value: str) -> bool:
    """Whether ``value`` is ``host[:port]``: an RFC 1123 host name, an IPv4 address or a
    bracketed IPv6 address, and a port from 1 to 65535."""
    if value.startswith("["):
        end = value.find("]")
        address, rest = value[1:end], value[end + 1 :]
        if end < 0 or "%" in address:  # a zone id is no part of a URL's host
            return False
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            return False
    else:
        name, colon, port = value.partition(":")
        rest = colon + port
        if len(name.rstrip(".")) > 253 or not _HOSTNAME.match(name):
            return False
        # A name whose last label is all digits can only be an IPv4 address (RFC 1123 2.1).
        if name.rstrip(".").rpartition(".")[2].isdigit():
            try:
                ipaddress.IPv4Address(name)
            except ValueError:
                return False
    if not rest:
        return True
    port = rest[1:]
    return rest[0] == ":" and bool(_PORT.match(port)) and 1 <= int(port) <= 65535


def bad_host() -> Any:
    return api_error(
        400,
        "Bad request",
        "The Host header is not a valid host[:port]: the URLs in the answer are made of it.",
    )


def application_url(request) -> str:
    """The URL of nick-jobs' root, without a trailing slash: ``nick_jobs.public_url`` when
    set, otherwise the request's application URL once its ``Host`` is known to be valid."""
    public = request.registry["nick_jobs.settings"].public_url
    if public:
        return public
    host = request.environ.get("HTTP_HOST")
    if host is not None and not valid_host(host):
        raise bad_host()
    return request.application_url


def resource_url(request, resource: Any, *elements: str) -> str:
    """``request.resource_url(resource, *elements)`` on :func:`application_url`."""
    return request.resource_url(resource, *elements, app_url=application_url(request))


def host_tween_factory(handler, registry):
    """Answers ``400`` to a request of nick-jobs whose ``Host`` it could not write into a
    URL. Under nick-jobs' own root every request is nick-jobs'; under a host application's
    root, those through one of :data:`URL_WRITING_NAMES`, so the host's own keep their
    behaviour."""
    if registry["nick_jobs.settings"].public_url:
        return handler  # the request's Host is never written
    from pyramid.interfaces import IRootFactory

    from .resources import Root

    everything = registry.queryUtility(IRootFactory) is Root

    def host_tween(request):
        # No Host at all (HTTP/1.0) is fine: the URL then uses the server's own name.
        host = request.environ.get("HTTP_HOST")
        if host is None or valid_host(host):
            return handler(request)
        path = request.environ.get("PATH_INFO", "")
        if everything or not URL_WRITING_NAMES.isdisjoint(path.split("/")):
            return bad_host()
        return handler(request)

    return host_tween


def includeme(config) -> None:
    # Over admission: a request refused here never waits for a slot.
    config.add_tween(
        "nick_jobs.urls.host_tween_factory",
        under="nick_jobs.shutdown.drain_tween_factory",
        over="nick_jobs.admission.admission_tween_factory",
    )
