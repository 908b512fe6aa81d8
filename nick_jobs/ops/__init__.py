"""Running the service: log lines, the graceful drain on SIGTERM, admission of requests,
Prometheus metrics, what happens at start-up, and the ``pshell`` setup (shell.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyramid.config import Configurator


def includeme(config: Configurator) -> None:
    # nick_jobs.log_format = json: JSON lines on the root logger's handlers.
    config.include("nick_jobs.ops.logging")
    # SIGTERM: stop taking requests, close streams, finish what runs, then stop.
    config.include("nick_jobs.ops.shutdown")
    # At most nick_jobs.max_active_requests requests run their view at once.
    config.include("nick_jobs.ops.admission")
