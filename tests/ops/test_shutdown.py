"""SIGTERM to an API process: stop taking requests, close streams, finish, exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from nick_jobs.db import get_engine, migrations
from nick_jobs.settings import parse
from nick_jobs.users import tokens
from tests.conftest import ROOT, base_settings, reset_database, stop_process, write_ini
from tests.netutil import free_port
from tests.streams.test_streams import EventStream


def test_while_draining_requests_get_a_503_but_liveness_answers(make_app, backend):
    reset_database(backend.engine)
    app = make_app(**{"nick_jobs.embedded_worker_threads": "0"})
    app.app.registry["nick_jobs.drain"].draining = True
    response = app.get("/@jobs", headers=app.auth(), status=503)
    assert response.json == {
        "error": {"type": "Service unavailable", "message": "This server is shutting down."}
    }
    assert response.headers["Retry-After"] == "1"
    # Readiness fails, so load balancers stop sending here; liveness stays up.
    assert app.get("/healthz/ready", status=503).json["error"]["type"] == "Service unavailable"
    assert app.get("/healthz", status=200).text == "ok"


def test_sigterm_closes_streams_with_a_reconnect_and_exits(tmp_path):
    database = tmp_path / "jobs.sqlite"
    port = free_port()
    settings = base_settings(
        **{
            "sqlalchemy.url": f"sqlite:///{database}",
            "nick_jobs.broker_url": "stub://",
            "nick_jobs.graceful_shutdown": "true",
            "nick_jobs.embedded_worker_threads": "1",
            "nick_jobs.shutdown_grace": "3",
        }
    )
    engine = get_engine(settings["sqlalchemy.url"])
    migrations.upgrade(engine)
    reset_database(engine)
    engine.dispose()
    ini = write_ini(tmp_path / "api.ini", settings)
    with ini.open("a") as fh:
        fh.write(f"\n[server:main]\nuse = egg:waitress#main\nlisten = 127.0.0.1:{port}\n")
    api = subprocess.Popen(
        [sys.executable, "-m", "pyramid.scripts.pserve", str(ini)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        # As a shell starts a background process: SIGINT ignored, so SIGTERM alone must
        # be enough to stop it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        token = tokens.issue(parse(settings), "admin", "Admin")
        headers = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 30
        while True:
            try:
                stream = EventStream(
                    ("127.0.0.1", port),
                    "/@jobs?follow=true",
                    headers,
                    method="POST",
                    body={"params": {"action": "echo", "message": "hi", "sleep": 60}},
                )
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "the API did not start"
                assert api.poll() is None, "the API exited"
                time.sleep(0.1)
        assert stream.status == 201
        assert stream.next()["event"] == "status"
        api.send_signal(signal.SIGTERM)
        assert stream.until_close()[-1] == {
            "event": "close",
            "data": {"reason": "shutdown", "reconnect": True},
        }
        assert api.wait(timeout=30) == 0
    finally:
        stop_process(api)


def test_draining_waits_for_requests_in_flight_before_stopping(make_app, backend):
    reset_database(backend.engine)
    app = make_app(**{"nick_jobs.embedded_worker_threads": "0"})
    registry = app.app.registry
    drain = registry["nick_jobs.drain"]
    stopped = threading.Event()
    drain.enter()  # a request still running
    drain.start(registry, grace_s=30, stop_server=stopped.set)
    # New requests are turned away while the old one runs, and the server stays up.
    assert app.get("/@jobs", headers=app.auth(), status=503).headers["Retry-After"] == "1"
    assert not stopped.wait(0.3)
    drain.leave()
    assert stopped.wait(10), "the server is stopped once the last request is done"
    assert drain.inflight == 0


def test_the_drain_leaves_a_sigterm_handler_the_process_has_alone():
    # A `nick-jobs worker` process, for one, handles SIGTERM itself, then builds the app:
    # taken over, its SIGTERM would stop it without the grace and the hand-back of its jobs.
    from nick_jobs.ops.shutdown import Drain, install_signal_handler

    def own(signum, frame) -> None:
        pass

    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, own)
        assert not install_signal_handler({"nick_jobs.drain": Drain()}, 1.0)
        assert signal.getsignal(signal.SIGTERM) is own

        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        assert install_signal_handler({"nick_jobs.drain": Drain()}, 1.0)
        first = signal.getsignal(signal.SIGTERM)
        assert first is not signal.SIG_DFL
        # An app built again in the same process takes the first one's place.
        assert install_signal_handler({"nick_jobs.drain": Drain()}, 1.0)
        assert signal.getsignal(signal.SIGTERM) not in (first, signal.SIG_DFL)
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_begin_drain_drains_and_leaves_stopping_to_the_server(make_app, backend):
    # gunicorn's workers (deploy/gunicorn.conf.py): the server has its own SIGTERM
    # handler and stops once its connections are done; the app only drains.
    from nick_jobs.ops.shutdown import begin_drain, wait_drained

    reset_database(backend.engine)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        # Built with graceful_shutdown on, the app takes SIGTERM in this process over.
        app = make_app(
            **{"nick_jobs.embedded_worker_threads": "0", "nick_jobs.graceful_shutdown": "true"}
        )
        handler = signal.getsignal(signal.SIGTERM)
        registry = app.app.registry
        drain = registry["nick_jobs.drain"]
        assert wait_drained(registry, 0), "no drain has started: nothing to wait for"
        drain.enter()  # a request still running
        assert begin_drain(registry)
        assert begin_drain(registry), "a second call is the same drain"
        assert app.get("/@jobs", headers=app.auth(), status=503).headers["Retry-After"] == "1"
        assert not wait_drained(registry, 0.3)
        drain.leave()
        assert wait_drained(registry, 10)
        assert drain.drained
        # Nothing was signalled: the server's own stop is what ends the process.
        assert signal.getsignal(signal.SIGTERM) is handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_begin_drain_does_nothing_with_graceful_shutdown_off(make_app, backend):
    from nick_jobs.ops.shutdown import begin_drain

    reset_database(backend.engine)
    app = make_app(**{"nick_jobs.embedded_worker_threads": "0"})
    assert not begin_drain(app.app.registry)
    assert not app.app.registry["nick_jobs.drain"].draining
    app.get("/@jobs", headers=app.auth(), status=200)
