"""Jobs: the model, its states and lifecycle, the actions that run them, what clients
send (schemas), and what they read (serialize, listing)."""

from __future__ import annotations

from pyramid.config import Configurator


def includeme(config: Configurator) -> None:
    # The action registry and the config.add_job_action directive.
    config.include("nick_jobs.jobs.actions")
