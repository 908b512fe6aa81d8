"""HTTP views. Each is thin: parse, call the module that owns the concept, serialise."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pyramid.config import Configurator
from pyramid.view import view_config

from nick_jobs.web.strict import QUERY_OPTION, RENDERER, SUBPATH_OPTION


def api_view(*, query: Iterable[str] = (), subpath: bool = False, **settings: Any) -> view_config:
    """``view_config`` for the JSON API that refuses a view without ``permission=``.

    Forgetting a permission would make a view public; this turns that mistake into an
    error at start-up. ``query`` names the query parameters the view takes (any other is
    a 400) and ``subpath=True`` lets it take a path below its name (otherwise a 404):
    both checked by :func:`nick_jobs.web.strict.request_checks`.

    The ``view_config`` it returns is applied by the decorated function's own module, so
    venusian attaches the view there, as if that module had used ``view_config`` itself.
    """
    if "permission" not in settings:
        raise TypeError("every nick-jobs view must declare its permission=")
    settings.setdefault("renderer", RENDERER)
    settings[QUERY_OPTION] = frozenset(query)
    settings[SUBPATH_OPTION] = subpath
    return view_config(**settings)


def includeme(config: Configurator) -> None:
    config.include("nick_jobs.web.views.auth")
    # GET /@jobs/@stats: a view name of the container, never a job's uuid.
    config.include("nick_jobs.web.views.stats")
    # Reading jobs before changing them: a job's GET is then the first view tried.
    config.include("nick_jobs.web.views.jobs")
    config.include("nick_jobs.web.views.control")
    config.include("nick_jobs.web.views.consumers")
    config.include("nick_jobs.web.views.job_details")
    config.include("nick_jobs.web.views.streams")
    config.include("nick_jobs.web.views.actions")
    config.include("nick_jobs.web.views.scheduled_jobs")
    config.include("nick_jobs.web.views.health")
    config.include("nick_jobs.web.views.metrics")
    config.include("nick_jobs.web.views.openapi")
