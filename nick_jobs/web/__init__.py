"""The HTTP side: resources and their ACLs, the security policy, permissions, the error
catalogue and exception views, strict input, the URLs the API writes, cross-origin
requests, and the views."""

from __future__ import annotations

from pyramid.config import Configurator


def includeme(config: Configurator) -> None:
    # Bearer JWTs and ACLs.
    config.include("nick_jobs.web.security")
    # Root → @jobs → job.
    config.include("nick_jobs.web.resources")
    # JSON error bodies for everything that can go wrong.
    config.include("nick_jobs.web.errors")
    # Malformed URLs, unknown query parameters and sub-paths refused; strict JSON out.
    config.include("nick_jobs.web.strict")
    # A Host that can't be written into a URL gets 400 (unless nick_jobs.public_url is set).
    config.include("nick_jobs.web.urls")
    # Pages of the origins in nick_jobs.cors_origins may call the API (none by default).
    config.include("nick_jobs.web.cors")
    config.include("nick_jobs.web.views")
