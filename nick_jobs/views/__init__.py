"""HTTP views. Each is thin: parse, call the module that owns the concept, serialise."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pyramid.view import view_config

from ..strict import QUERY_OPTION, RENDERER, SUBPATH_OPTION


class api_view(view_config):
    """``view_config`` for the JSON API that refuses a view without ``permission=``.

    Forgetting a permission would make a view public; this turns that mistake into an
    error at start-up. ``query`` names the query parameters the view takes (any other is
    a 400) and ``subpath=True`` lets it take a path below its name (otherwise a 404):
    both checked by :func:`nick_jobs.strict.request_checks`.
    """

    def __init__(
        self, *, query: Iterable[str] = (), subpath: bool = False, **settings: Any
    ) -> None:
        if "permission" not in settings:
            raise TypeError("every nick-jobs view must declare its permission=")
        settings.setdefault("renderer", RENDERER)
        settings[QUERY_OPTION] = frozenset(query)
        settings[SUBPATH_OPTION] = subpath
        super().__init__(**settings)
