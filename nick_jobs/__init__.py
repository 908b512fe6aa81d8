"""nick-jobs: a ``/@jobs`` service for Nick/Plone-style content APIs.

Use it standalone (``pserve development.ini``) or inside a Pyramid app with
``config.include("nick_jobs")``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# Pyramid is imported where it is used, so `import nick_jobs.client` (and the client
# commands of the console script) don't pay for loading the web framework.
if TYPE_CHECKING:
    from pyramid.config import Configurator

__all__ = ["includeme", "main"]


def includeme(config: Configurator) -> None:
    from pyramid.events import ApplicationCreated
    from pyramid.settings import aslist

    # Typed settings first: everything below reads them from the registry.
    config.include(".settings")
    # nick_jobs.log_format = json: JSON lines on the root logger's handlers.
    config.include(".logging")
    # request.dbsession, joined to the request's transaction by pyramid_tm.
    config.include(".models")
    # Bearer JWTs and ACLs.
    config.include(".security")
    # The action registry and the config.add_job_action directive.
    config.include(".actions")
    # The broker, the job actor and after-commit sending.
    config.include(".broker")
    # Root → @jobs → job.
    config.include(".resources")
    # JSON error bodies for everything that can go wrong.
    config.include(".errors")
    # Malformed URLs, unknown query parameters and sub-paths refused; strict JSON out.
    config.include(".strict")
    config.include(".views.auth")
    # Reading jobs before changing them: a job's GET is then the first view tried.
    config.include(".views.jobs")
    config.include(".views.control")
    config.include(".views.job_details")
    # Server-Sent Event streams of jobs, their limits and tickets.
    config.include(".views.streams")
    # SIGTERM: stop taking requests, close streams, finish what runs, then stop.
    config.include(".shutdown")
    # A Host that can't be written into a URL gets 400 (unless nick_jobs.public_url is set).
    config.include(".urls")
    # At most nick_jobs.max_active_requests requests run their view at once.
    config.include(".admission")
    config.include(".views.actions")
    config.include(".views.health")
    config.include(".views.scheduled_jobs")
    config.include(".views.metrics")
    # Modules of actions (or anything else) named in the ini, after the directives exist.
    for name in aslist(config.get_settings().get("nick_jobs.includes", "")):
        config.include(name)
    # Migrations, the development admin and the embedded worker start with the app.
    from .startup import on_application_created

    config.add_subscriber(on_application_created, ApplicationCreated)


def main(global_config, **settings):
    """The WSGI application ``pserve`` serves (``egg:nick-jobs``)."""
    from pyramid.config import Configurator

    with Configurator(settings=settings) as config:
        config.include(includeme)
        return config.make_wsgi_app()
