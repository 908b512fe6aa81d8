"""``pshell production.ini``: a Python shell with the application at hand.

The ini's ``[pshell]`` section names :func:`setup`, which Pyramid's ``pshell`` calls with
the environment it made (``app``, ``registry``, ``request``, ``root``). It adds:

* ``tm``, the request's transaction manager, begun: ``tm.commit()`` stores what was
  changed (and sends the messages of jobs submitted), ``tm.abort()`` drops it;
* ``dbsession``, the request's session in that transaction;
* ``settings``, the parsed settings; ``lifecycle`` and ``Job``, the job lifecycle and
  its table; ``sa``, SQLAlchemy;
* ``submit(params, actor=..., title=...)``, a job submitted as ``POST /@jobs`` would,
  checked against its action, and sent once ``tm.commit()`` has committed it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from transaction.interfaces import NoTransaction

from nick_jobs.jobs import lifecycle, submission
from nick_jobs.jobs.actions import get_registry
from nick_jobs.jobs.model import Job
from nick_jobs.settings import registry_settings


def setup(env: dict[str, Any]) -> Iterator[None]:
    request, registry = env["request"], env["registry"]
    request.tm.begin()
    send = registry["nick_jobs.queue"].send

    def submit(params: dict[str, Any], actor: str = "admin", **fields: Any) -> dict[str, Any]:
        """Submit a job, e.g. ``submit({"action": "dummy", "steps": 3})``; returns it."""
        prepared = submission.prepare(get_registry(registry), {"params": params, **fields})
        job, _ = submission.submit(request.dbsession, prepared, actor, send=send)
        return job

    env.update(
        tm=request.tm,
        dbsession=request.dbsession,
        settings=registry_settings(registry),
        lifecycle=lifecycle,
        Job=Job,
        sa=sa,
        submit=submit,
    )
    yield
    # Whatever was left uncommitted when the shell ends is not stored.
    with contextlib.suppress(NoTransaction):
        request.tm.abort()
