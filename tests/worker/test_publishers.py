"""Messages on RabbitMQ go out through a few publisher threads, each with one connection,
however many request threads submit (nick_jobs.worker.queue.Publishers); without publisher
confirms unless ``nick_jobs.publisher_confirms`` asks for them, a message the broker loses
being sent again by the sweeper."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import threading

import pika
import pytest

from nick_jobs import main
from nick_jobs.db.meta import utcnow
from nick_jobs.settings import ConfigurationError, parse
from nick_jobs.worker.queue import Publishers
from nick_jobs.worker.sweeper import Sweeper
from tests.cli.test_cli import wait_until
from tests.conftest import (
    RABBITMQ_URL,
    Client,
    _purge_rabbitmq,
    base_settings,
    need,
    reset_database,
)
from tests.worker.test_recovery import submit

SUBMITTERS = 12
EACH = 3


def _waiting(queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()


def _all_arrive(queue: str, count: int) -> None:
    """Without confirms a send returns before RabbitMQ has taken the message in."""
    wait_until(lambda: _waiting(queue) == count, 10, f"{count} messages in {queue}")
    assert _waiting(queue) == count


@pytest.fixture
def rabbitmq_app(pg_url):
    """An app on PostgreSQL + RabbitMQ whose queue nobody consumes; ``(**settings)``."""
    need("RabbitMQ", "127.0.0.1", 5672)
    made = []

    def factory(**overrides: str) -> tuple[Client, str]:
        queue = f"nick_jobs_publishers_{secrets.token_hex(4)}"
        settings = base_settings(
            **{"sqlalchemy.url": pg_url, "nick_jobs.broker_url": RABBITMQ_URL},
            **{"nick_jobs.queue": queue, **overrides},
        )
        wsgi = main({}, **settings)
        made.append((wsgi, queue))
        reset_database(wsgi.registry["nick_jobs.engine"])
        return Client(wsgi, extra_environ={"HTTP_HOST": "localhost:8080"}), queue

    yield factory
    for wsgi, queue in made:
        wsgi.registry["nick_jobs.queue"].broker.close()
        if wsgi.registry["nick_jobs.queue"].publishers is not None:
            wsgi.registry["nick_jobs.queue"].publishers.shutdown()
        wsgi.registry["nick_jobs.engine"].dispose()
        wsgi.registry["nick_jobs.read_engine"].dispose()
        _purge_rabbitmq(queue)


def _submit_from_threads(app: Client) -> list[int]:
    headers = app.auth()
    statuses: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(SUBMITTERS)

    def submitter() -> None:
        start.wait()
        for _ in range(EACH):
            res = app.post_json("/@jobs", {"params": {"action": "dummy"}}, headers=headers)
            with lock:
                statuses.append(res.status_int)

    threads = [threading.Thread(target=submitter) for _ in range(SUBMITTERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return statuses


def test_submits_from_many_threads_share_two_connections(rabbitmq_app) -> None:
    app, queue = rabbitmq_app()
    broker = app.app.registry["nick_jobs.queue"].broker
    assert _submit_from_threads(app) == [201] * SUBMITTERS * EACH
    # Every message reaches RabbitMQ ...
    _all_arrive(queue, SUBMITTERS * EACH)
    # ... sent on the publishers' connections only.
    assert 1 <= len(broker.connections) <= 2


def test_without_publishers_each_sending_thread_opens_its_own(rabbitmq_app) -> None:
    app, queue = rabbitmq_app(**{"nick_jobs.publisher_threads": "0"})
    broker = app.app.registry["nick_jobs.queue"].broker
    assert app.app.registry["nick_jobs.queue"].publishers is None
    assert _submit_from_threads(app) == [201] * SUBMITTERS * EACH
    _all_arrive(queue, SUBMITTERS * EACH)
    assert len(broker.connections) == SUBMITTERS


def test_with_publisher_confirms_a_submit_returns_once_rabbitmq_has_its_message(
    rabbitmq_app,
) -> None:
    app, queue = rabbitmq_app(**{"nick_jobs.publisher_confirms": "true"})
    assert app.app.registry["nick_jobs.queue"].broker.confirm_delivery is True
    headers = app.auth()
    for count in range(1, 4):
        app.post_json("/@jobs", {"params": {"action": "dummy"}}, headers=headers, status=201)
        # Asked at once, with no wait: RabbitMQ confirmed the message before the 201.
        assert _waiting(queue) == count


def test_without_confirms_a_message_rabbitmq_lost_is_sent_again_by_the_sweeper(
    rabbitmq_app,
) -> None:
    app, queue = rabbitmq_app()
    registry = app.app.registry
    assert registry["nick_jobs.settings"].publisher_confirms is False
    assert registry["nick_jobs.queue"].broker.confirm_delivery is False
    uuids = {submit(app, "dummy") for _ in range(3)}
    _all_arrive(queue, 3)
    # The broker loses them (what a crash before it wrote them down would do).
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        connection.channel().queue_purge(queue)
    finally:
        connection.close()
    assert _waiting(queue) == 0
    sweeper = Sweeper(registry)
    grace = registry["nick_jobs.settings"].resend_grace_s
    # Within the grace, a message may still be on its way: nothing is sent again.
    assert sweeper.run_once(now=utcnow() + dt.timedelta(seconds=grace / 2)).resent == 0
    assert sweeper.run_once(now=utcnow() + dt.timedelta(seconds=grace + 1)).resent == 3
    _all_arrive(queue, 3)
    assert {app.get(f"/@jobs/{uuid}", headers=app.auth()).json["status"] for uuid in uuids} == {
        "created"
    }


def test_publishers_are_only_for_rabbitmq() -> None:
    from nick_jobs.worker.queue import JobQueue

    for url in ("stub://", "redis://127.0.0.1:6379/0"):
        overrides = {"sqlalchemy.url": "sqlite://", "nick_jobs.broker_url": url}
        settings = parse(base_settings(**overrides))
        assert JobQueue(settings, {}, runner=_Runner()).publishers is None


class _Runner:
    """What JobQueue needs of a runner: a callable, whose ``send`` it sets."""

    __name__ = "run_job"

    def __call__(self, uuid: str) -> None:
        pass


def test_publisher_threads_must_not_be_negative() -> None:
    settings = base_settings(**{"sqlalchemy.url": "sqlite://", "nick_jobs.publisher_threads": "-1"})
    with pytest.raises(ConfigurationError, match="publisher_threads"):
        parse(settings)


def test_publishers_run_the_send_on_their_own_threads_again_after_a_fork() -> None:
    publishers = Publishers(1)
    try:
        sender = publishers.run(threading.current_thread)
        assert sender.name.startswith("nick-jobs-publisher")
        assert publishers.run(threading.current_thread) is sender
        pid = os.fork()
        if pid == 0:  # the child: the parent's thread is gone, a new one sends
            ok = publishers.run(lambda: threading.current_thread().name) is not None
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        publishers.shutdown()
