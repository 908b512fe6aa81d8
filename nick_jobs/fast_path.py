"""``GET /@jobs/{uuid}``, the API's most frequent request, taken straight to its view.

The router would run every tween (the transaction manager, the read connection's
release, the identity's confirmation, the exception view), send its request events,
walk the path with its traverser and then look the view up: a quarter of the CPU of a
job's ``GET`` in-process, for a request that needs none of them. This tween, under the
drain and admission tweens, takes a ``GET`` or ``HEAD`` of one job on nick-jobs' own
root past them: it finds the job through the same resources (:class:`~.resources.Root`,
:class:`~.resources.JobContainer`, which run the one query of identity and job), and
calls the view registered for it with Pyramid's own ``render_view_to_response``, which
checks the view's permission as the router would. An error goes to the same exception
views as under the router.

Whatever it can't answer the same way goes through the router as before: a job that is
absent or another user's, a request without an identity. The tween is not used when a
host application changes what the router would do here: its own root factory, routes,
security policy, transaction activation hook, or subscribers to the request's events.
"""

from __future__ import annotations

import re
import sys

from pyramid.events import BeforeTraversal, ContextFound, NewRequest
from pyramid.httpexceptions import HTTPForbidden, HTTPNotFound
from pyramid.interfaces import IRequest, IRootFactory, IRoutesMapper, ISecurityPolicy
from pyramid.view import render_view_to_response
from zope.interface import implementedBy

from .models import TM_ACTIVATE_HOOK, needs_transaction
from .resources import Root
from .security import JWTSecurityPolicy

_JOB_PATH = re.compile(r"/@jobs/([0-9a-fA-F-]{36})\Z")
# What the router sends before the view; a subscriber to any of them (by class, by
# interface, or to every event) would not hear a request this tween answers.
_REQUEST_EVENTS = tuple(
    implementedBy(event) for event in (NewRequest, BeforeTraversal, ContextFound)
)


def applies(registry) -> bool:
    """Whether the router would take a job's ``GET`` exactly where this tween does."""
    if registry.queryUtility(IRootFactory) is not Root:
        return False
    mapper = registry.queryUtility(IRoutesMapper)
    if mapper is not None and mapper.get_routes():
        return False
    if not isinstance(registry.queryUtility(ISecurityPolicy), JWTSecurityPolicy):
        return False
    # The transaction manager begins none for a job's GET only under nick-jobs' own hook.
    hook = registry.settings.get("tm.activate_hook")
    if hook not in (TM_ACTIVATE_HOOK, needs_transaction):
        return False
    for handler in registry.registeredHandlers():
        required = handler.required[0] if handler.required else None
        if required is not None and any(e.isOrExtends(required) for e in _REQUEST_EVENTS):
            return False
    return True


def job_get_tween_factory(handler, registry):
    if not applies(registry):
        return handler

    def job_get(request):
        if request.method not in ("GET", "HEAD"):
            return handler(request)
        match = _JOB_PATH.match(request.path_info)
        if match is None:
            return handler(request)
        try:
            response = _answer(request, match.group(1))
        except Exception:
            response = _error_response(request)
        return handler(request) if response is None else response

    return job_get


def _answer(request, key: str):
    """The job's response, or None where the router is to answer."""
    root = Root(request)
    try:
        context = root["@jobs"][key]
    except (KeyError, HTTPForbidden):
        # Absent, another user's, or no identity: the router's not-found and forbidden
        # views answer (the identity is already known to the request).
        return None
    request.__dict__.update(
        request_iface=IRequest,
        root=root,
        context=context,
        view_name="",
        subpath=(),
        traversed=("@jobs", key),
        virtual_root=root,
        virtual_root_path=(),
    )
    return render_view_to_response(context, request)


def _error_response(request):
    """As the exception view tween answers an error."""
    exc_info = sys.exc_info()
    try:
        return request.invoke_exception_view(exc_info)
    except HTTPNotFound:
        raise exc_info[1] from None


def includeme(config) -> None:
    config.add_tween(
        "nick_jobs.fast_path.job_get_tween_factory",
        under="nick_jobs.admission.admission_tween_factory",
        over="pyramid_tm.tm_tween_factory",
    )
