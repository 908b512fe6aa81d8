"""Running jobs: the broker and the actor, the runner and what a handler reports, the
Dramatiq middleware, and the sweeper that rescues jobs whose worker is gone."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyramid.config import Configurator


def includeme(config: Configurator) -> None:
    # The broker, the job actor and after-commit sending.
    config.include("nick_jobs.worker.broker")
