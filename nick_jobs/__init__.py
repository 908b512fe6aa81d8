"""nick-jobs: a ``/@jobs`` service for Nick/Plone-style content APIs.

Use it standalone (``pserve development.ini``) or inside a Pyramid app with
``config.include("nick_jobs")``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# Pyramid is imported where it is used, so `import nick_jobs.client` (and the client
# commands of the console script) don't pay for loading the web framework.
if TYPE_CHECKING:
    from pyramid.config import Configurator
    from pyramid.router import Router

__all__ = ["__version__", "includeme", "main"]


def __getattr__(name: str) -> str:
    # ``__version__`` is read from the installed package's metadata (its one source is
    # setup.cfg), on first use: looking it up costs more than importing this module.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("nick-jobs")
        except PackageNotFoundError:  # imported from a source tree that was never installed
            found = "0+unknown"
        globals()["__version__"] = found
        return found
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def includeme(config: Configurator) -> None:
    from pyramid.events import ApplicationCreated
    from pyramid.settings import aslist

    # Typed settings first: everything below reads them from the registry.
    config.include("nick_jobs.settings")
    # request.dbsession and request.dbconn; pyramid_tm.
    config.include("nick_jobs.db")
    # The action registry and the config.add_job_action directive.
    config.include("nick_jobs.jobs")
    # The broker, the job actor and after-commit sending.
    config.include("nick_jobs.worker")
    # The stream hub, stream limits and tickets.
    config.include("nick_jobs.streams")
    # The scheduler's settings and the config.add_scheduled_job directive.
    config.include("nick_jobs.scheduling")
    # Security policy, resources, error views, strict input, URLs and the views.
    config.include("nick_jobs.web")
    # JSON logs, the SIGTERM drain and admission.
    config.include("nick_jobs.ops")
    # The admin dashboard's pages (nick_jobs.dashboard = false turns it off).
    config.include("nick_jobs.dashboard")
    # Modules of actions (or anything else) named in the ini, after the directives exist.
    for name in aslist(config.get_settings().get("nick_jobs.includes", "")):
        config.include(name)
    # Migrations, the development admin and the embedded worker start with the app.
    from nick_jobs.ops.startup import on_application_created

    config.add_subscriber(on_application_created, ApplicationCreated)


def main(global_config: dict[str, str], **settings: Any) -> Router:
    """The WSGI application ``pserve`` serves (``egg:nick-jobs``)."""
    from pyramid.config import Configurator

    with Configurator(settings=settings) as config:
        config.include(includeme)
        return config.make_wsgi_app()
