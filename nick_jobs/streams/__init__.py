"""Server-Sent Event streams of jobs: the change hub, stream limits and tickets.

Views live in :mod:`nick_jobs.web.views.streams`; this package owns how events are found
(:mod:`.hub`), framed (:mod:`.sse`), capped (:mod:`.limits`) and authorised without a
header (:mod:`.tickets`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyramid.config import Configurator


def includeme(config: Configurator) -> None:
    from nick_jobs.settings import registry_settings
    from nick_jobs.streams.hub import StreamHub
    from nick_jobs.streams.limits import StreamLimits

    settings = registry_settings(config.registry)
    registry = config.registry
    registry["nick_jobs.stream_limits"] = StreamLimits(
        settings.streams.max_per_process, settings.streams.max_per_user
    )
    # The hub polls through the read pool (autocommit), one short query at a time: an
    # open stream holds no database connection.
    registry["nick_jobs.stream_hub"] = StreamHub(
        lambda: registry["nick_jobs.read_engine"], settings.streams
    )
