"""``nick_jobs.max_active_requests``: how many requests run their view at once, and the
read connection given back before the commit (nick_jobs.ops.admission, nick_jobs.db)."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa
from pyramid import testing
from pyramid.response import Response

from nick_jobs.db import (
    read_connection,
    release_read_connection,
    release_read_connection_tween_factory,
)
from nick_jobs.ops.admission import admission_tween_factory
from nick_jobs.settings import ConfigurationError, parse
from tests.conftest import base_settings


def settings(**overrides: str):
    return parse(base_settings(**{"sqlalchemy.url": "sqlite://", **overrides}))


def test_the_defaults():
    s = settings()
    assert (s.max_active_requests, s.request_queue_timeout_s) == (16, 30.0)


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("nick_jobs.max_active_requests", "-1"),
        ("nick_jobs.max_active_requests", "many"),
        ("nick_jobs.request_queue_timeout", "0"),
        ("nick_jobs.request_queue_timeout", "nan"),
    ],
)
def test_nonsense_is_refused_with_the_setting_named(key, bad):
    with pytest.raises(ConfigurationError, match=key.replace(".", r"\.")):
        settings(**{key: bad})


class Blocking:
    """A view that holds its request until released, and says who got in."""

    def __init__(self) -> None:
        self.entered: list[str] = []
        self.inside = threading.Event()
        self.release = threading.Event()

    def __call__(self, request):
        self.entered.append(request.path)
        self.inside.set()
        assert self.release.wait(10)
        return Response("ok")


def tween(view, **overrides: str):
    return admission_tween_factory(view, {"nick_jobs.settings": settings(**overrides)})


def in_thread(handler, path: str) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(target=lambda: out.append(handler(testing.DummyRequest(path=path))))
    thread.start()
    return thread, out


def test_a_request_past_the_bound_waits_for_a_slot():
    view = Blocking()
    handler = tween(view, **{"nick_jobs.max_active_requests": "1"})
    first, _ = in_thread(handler, "/@jobs/first")
    assert view.inside.wait(10)
    second, answers = in_thread(handler, "/@jobs/second")
    # The second request waits outside the view while the first holds the only slot.
    second.join(0.3)
    assert second.is_alive()
    assert view.entered == ["/@jobs/first"]
    view.release.set()
    first.join(10)
    second.join(10)
    assert view.entered == ["/@jobs/first", "/@jobs/second"]
    assert answers[0].status_code == 200


def test_a_request_that_waited_too_long_gets_a_503_with_retry_after():
    view = Blocking()
    handler = tween(
        view,
        **{"nick_jobs.max_active_requests": "1", "nick_jobs.request_queue_timeout": "0.2"},
    )
    first, _ = in_thread(handler, "/@jobs/first")
    assert view.inside.wait(10)
    try:
        answer = handler(testing.DummyRequest(path="/@jobs/second"))
    finally:
        view.release.set()
        first.join(10)
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "1"
    assert answer.json_body["error"]["type"] == "Service unavailable"
    assert view.entered == ["/@jobs/first"]


def test_liveness_is_answered_whatever_runs():
    view = Blocking()
    handler = tween(view, **{"nick_jobs.max_active_requests": "1"})
    first, _ = in_thread(handler, "/@jobs/first")
    assert view.inside.wait(10)
    health, answers = in_thread(handler, "/healthz")
    deadline = time.monotonic() + 10
    while "/healthz" not in view.entered:
        assert time.monotonic() < deadline, "liveness waited behind the running request"
        time.sleep(0.01)
    assert view.entered == ["/@jobs/first", "/healthz"]
    view.release.set()
    first.join(10)
    health.join(10)
    assert answers[0].status_code == 200


def test_zero_means_no_bound():
    def view(request):
        return Response("ok")

    assert tween(view, **{"nick_jobs.max_active_requests": "0"}) is view


def test_the_read_connection_goes_back_once_the_response_is_made():
    engine = sa.create_engine("sqlite://", poolclass=sa.QueuePool)
    try:
        request = testing.DummyRequest(path="/@jobs")
        request.registry = {"nick_jobs.read_engine": engine}
        taken = []

        def view(req):
            taken.append(read_connection(req))
            assert read_connection(req) is taken[0]  # one for the request
            assert engine.pool.checkedout() == 1
            return Response("ok")

        release_read_connection_tween_factory(view, {})(request)
        assert taken[0].closed
        assert engine.pool.checkedout() == 0
        release_read_connection(request)  # the finished callback: nothing left to give
        assert engine.pool.checkedout() == 0
        # Read again after that (an after-commit hook): another one, given back in turn.
        again = read_connection(request)
        assert again is not taken[0]
        assert not again.closed
        release_read_connection(request)
        assert engine.pool.checkedout() == 0
    finally:
        engine.dispose()


def test_a_request_that_read_nothing_opens_no_connection():
    engine = sa.create_engine("sqlite://", poolclass=sa.QueuePool)
    try:
        request = testing.DummyRequest(path="/@jobs")
        request.registry = {"nick_jobs.read_engine": engine}
        connects: list[int] = []
        sa.event.listen(engine, "checkout", lambda *args: connects.append(1))
        release_read_connection_tween_factory(lambda req: Response("ok"), {})(request)
        assert connects == []
    finally:
        engine.dispose()


def test_liveness_is_recognised_under_a_mount_prefix():
    # Mounted at /api, the app's own path is /healthz: that is what is always admitted.
    view = Blocking()
    handler = tween(view, **{"nick_jobs.max_active_requests": "1"})
    first, _ = in_thread(handler, "/@jobs/first")
    assert view.inside.wait(10)
    request = testing.DummyRequest(path="/api/healthz", path_info="/healthz")
    answers: list = []
    health = threading.Thread(target=lambda: answers.append(handler(request)))
    health.start()
    deadline = time.monotonic() + 10
    while "/api/healthz" not in view.entered:
        assert time.monotonic() < deadline, "liveness waited behind the running request"
        time.sleep(0.01)
    view.release.set()
    first.join(10)
    health.join(10)
    assert answers[0].status_code == 200
