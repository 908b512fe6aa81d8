"""The chaos test's action (``nick_jobs.includes = ... tests.chaos_actions``).

``counted`` is a ``dummy`` that keeps count of how it ended:

* in Redis, outside any transaction, each time a handler reaches its end (``HINCRBY``):
  a handler killed or rescued after that point and run again shows up as 2;
* in the table ``chaos_completions``, in the job's own transaction, which commits with
  the transition to ``completed`` or not at all: two rows for one job would mean the job
  was completed twice.
"""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa
from marshmallow import Schema, fields

from nick_jobs.web.permissions import Permission

TABLE = "chaos_completions"
CREATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} "
    "(id SERIAL PRIMARY KEY, job_uuid VARCHAR(36) NOT NULL, attempt INTEGER NOT NULL)"
)
MAX_RETRIES = 5

_clients: dict[str, Any] = {}
_lock = threading.Lock()


class CountedParams(Schema):
    sleep = fields.Float(load_default=0.0)
    redis = fields.String(required=True)
    key = fields.String(required=True)


def _redis(url: str):
    import redis

    with _lock:
        if url not in _clients:
            _clients[url] = redis.Redis.from_url(url)
        return _clients[url]


def counted(params: dict[str, Any], ctx) -> dict[str, Any]:
    if params["sleep"]:
        ctx.sleep(params["sleep"])
    _redis(params["redis"]).hincrby(params["key"], ctx.uuid, 1)
    ctx.dbsession.execute(
        sa.text(f"INSERT INTO {TABLE} (job_uuid, attempt) VALUES (:uuid, :attempt)"),  # noqa: S608
        {"uuid": ctx.uuid, "attempt": ctx.attempt},
    )
    return {"attempt": ctx.attempt}


def includeme(config) -> None:
    config.add_job_action(
        "counted",
        counted,
        title="Counted",
        schema=CountedParams,
        permission=Permission.ADD_JOBS.value,
        max_retries=MAX_RETRIES,
    )
