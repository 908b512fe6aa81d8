"""Running jobs: the broker and the actor, the runner and what a handler reports, the
Dramatiq middleware, and the sweeper that rescues jobs whose worker is gone."""

from __future__ import annotations


def includeme(config) -> None:
    # The broker, the job actor and after-commit sending.
    config.include("nick_jobs.worker.broker")
