"""The class of the router's requests, with the request methods built in, made once.

Pyramid gives a request what ``config.add_request_method`` registered
(``request.dbsession``, ``request.dbconn``, pyramid_tm's ``request.tm``) by making a new
subclass of the request's class for every request and setting its ``__class__``: about
35 µs, the seventh of a job's ``GET`` in-process, and a class for the garbage collector
each time. Once the application is made, its router builds its requests from one
subclass that already holds them, so there is nothing left to apply.

Everything else that makes requests (``pyramid.scripting.prepare``, ``pshell``,
``invoke_subrequest`` with a ``Request.blank``, tests) still gets the methods from
Pyramid's usual ``apply_request_extensions``. A host application whose request factory
is not a class keeps Pyramid's way.
"""

from __future__ import annotations

from pyramid.interfaces import IRequestExtensions
from pyramid.threadlocal import RequestContext


def extended_class(factory: type, extensions) -> type:
    """``factory`` with the registered request methods and properties as class members."""
    attrs = dict(extensions.methods)
    attrs.update(extensions.descriptors)
    attrs["__module__"] = factory.__module__
    cls = type(factory.__name__, (factory,), attrs)
    # As Pyramid does for its per-request classes: the subclass declares exactly what
    # its parent does, so interface lookups see the same request type.
    for name in ("__implemented__", "__provides__"):
        value = getattr(factory, name, None)
        if value is not None:
            setattr(cls, name, value)
    return cls


def install(router) -> bool:
    """Make ``router`` build its requests from one extended class; False if it can't."""
    extensions = router.registry.queryUtility(IRequestExtensions)
    factory = router.request_factory
    if extensions is None or not isinstance(factory, type):
        return False
    if router.request_extensions is not extensions:  # someone else changed the router
        return False
    cls = extended_class(factory, extensions)
    registry = router.registry

    def request_context(environ) -> RequestContext:
        # Router.request_context, less the per-request extension step.
        request = cls(environ)
        request.registry = registry
        request.invoke_subrequest = router.invoke_subrequest
        return RequestContext(request)

    router.request_context = request_context
    return True


def on_application_created(event) -> None:
    install(event.app)


def includeme(config) -> None:
    from pyramid.events import ApplicationCreated

    config.add_subscriber(on_application_created, ApplicationCreated)
