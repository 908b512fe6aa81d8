"""HTTP views. Each is thin: parse, call the module that owns the concept, serialise."""

from __future__ import annotations

from typing import Any

from pyramid.view import view_config


class api_view(view_config):
    """``view_config`` for the JSON API that refuses a view without ``permission=``.

    Forgetting a permission would make a view public; this turns that mistake into an
    error at start-up.
    """

    def __init__(self, **settings: Any) -> None:
        if "permission" not in settings:
            raise TypeError("every nick-jobs view must declare its permission=")
        settings.setdefault("renderer", "json")
        super().__init__(**settings)
