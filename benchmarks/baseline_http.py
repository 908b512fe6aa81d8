"""Baseline for the HTTP path: a one-view Pyramid app, served by the same waitress settings.

``GET /@jobs/{uuid}`` answers a job-shaped JSON object with Pyramid's JSON renderer and
nothing else: no authentication, no database. It is the floor of any Pyramid view on
this server. ``GET /@rows/{uuid}`` reads the job's row with one raw psycopg query and
answers it the same way, still with no authentication: the floor of any view that reads
one row, for reference (``get_row_floor_ratio``). ``POST /@jobs`` (the submit baseline) parses
the JSON body, inserts the row with raw psycopg 3 (on a pool of at most
:data:`MAX_CONNECTIONS` autocommit connections) and sends the Dramatiq message, as
``baseline_pipeline.py`` does.

Served by ``pserve`` from an ini whose ``[app:main]`` says
``use = call:benchmarks.baseline_http:main`` (see ``harness.Run.baseline_ini``).
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import uuid as uuidlib
from collections.abc import Iterator

import psycopg
from pyramid.config import Configurator

from benchmarks import baseline_pipeline as pipeline

JOB = {
    "uuid": "",
    "title": "Dummy job",
    "description": "",
    "params": {"action": "dummy"},
    "actor": "bench",
    "created": "2026-01-01T00:00:00.000Z",
    "started": "2026-01-01T00:00:00.002Z",
    "finished": "2026-01-01T00:00:00.009Z",
    "status": "completed",
    "result": {},
    "attempt": 1,
}

# At most as many connections as nick-jobs' own pool may open (10 + 20 overflow): one per
# waitress thread would be up to production.ini's 256, past PostgreSQL's max_connections.
MAX_CONNECTIONS = 30


class Connections:
    """A small pool of autocommit connections shared by the request threads."""

    def __init__(self, dsn: str, size: int = MAX_CONNECTIONS) -> None:
        self.dsn = dsn
        self.idle: queue.LifoQueue[psycopg.Connection] = queue.LifoQueue()
        self.slots = threading.BoundedSemaphore(size)

    @contextlib.contextmanager
    def get(self) -> Iterator[psycopg.Connection]:
        with self.slots:
            try:
                conn = self.idle.get_nowait()
            except queue.Empty:
                conn = psycopg.connect(self.dsn, autocommit=True)
            try:
                yield conn
            finally:
                if not conn.closed:  # a broken one is dropped; the next request connects
                    self.idle.put(conn)


def get_job(request):
    uuid = request.matchdict["uuid"]
    return {"@id": request.url, **JOB, "uuid": uuid}


# The columns a job's JSON shows, formatted as the API formats them.
ROW = """
SELECT uuid, title, description, params, actor, status, result, attempt,
       to_char(created AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
       to_char(started AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
       to_char(finished AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
FROM jobs WHERE uuid = %s
"""
ROW_KEYS = (
    "uuid",
    "title",
    "description",
    "params",
    "actor",
    "status",
    "result",
    "attempt",
    "created",
    "started",
    "finished",
)


def make_get_row(connections: Connections):
    def get_row(request):
        with connections.get() as conn:
            row = conn.execute(ROW, (request.matchdict["uuid"],)).fetchone()
        if row is None:
            request.response.status = 404
            return {"error": {"type": "NotFound", "message": "No such job."}}
        return {"@id": request.url, **dict(zip(ROW_KEYS, row, strict=True))}

    return get_row


def make_submit(connections: Connections, actor):
    def submit(request):
        data = json.loads(request.body)
        uuid = str(uuidlib.uuid4())
        created = pipeline.now()
        with connections.get() as conn:
            conn.execute(pipeline.INSERT, (uuid, created))
        actor.send(uuid)
        request.response.status = 201
        return {**JOB, "params": data.get("params", {}), "uuid": uuid, "status": "created"}

    return submit


def main(global_config, **settings):
    pipeline.ARGS.dsn = settings.get("baseline.dsn", "")
    pipeline.ARGS.broker_url = settings.get("baseline.broker_url", "redis://127.0.0.1:6379/0")
    pipeline.ARGS.namespace = settings.get("baseline.namespace", "nick-jobs-baseline")
    pipeline.ARGS.queue = settings.get("baseline.queue", "baseline")
    with Configurator(settings=settings) as config:
        config.add_route("job", "/@jobs/{uuid}", request_method="GET")
        config.add_view(get_job, route_name="job", renderer="json")
        if pipeline.ARGS.dsn:
            connections = Connections(pipeline.ARGS.dsn)
            actor = pipeline.declare(pipeline.make_broker())
            config.add_route("jobs", "/@jobs", request_method="POST")
            config.add_view(make_submit(connections, actor), route_name="jobs", renderer="json")
            config.add_route("row", "/@rows/{uuid}", request_method="GET")
            config.add_view(make_get_row(connections), route_name="row", renderer="json")
        return config.make_wsgi_app()
