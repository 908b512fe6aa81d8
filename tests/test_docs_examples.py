"""docs/examples: every request/response pair in the documentation is a test.

``docs/examples/<group>/<name>.req`` is a request as it goes over the wire (request line,
headers, a blank line, the body) and ``<name>.res`` is the response the API gives to it
(status line, headers, a blank line, the body). Each pair is replayed here against a
fresh app on its own SQLite file. These must match exactly:

* the status line;
* every header the ``.res`` names;
* the JSON body, by deep equality. A ``.res`` without a body asserts an empty one.

What would change from run to run is fixed:

* ``{token:<login>}`` in a ``.req`` stands for a valid token of that user. It is
  replaced with one issued now.
* The state machine's clock reads :data:`NOW`, and a job created by a request gets the
  uuid :data:`NEW_UUID`. These are the values Nick's own example tests use.
* Tokens the API issues (``@login``, ``@login-renew``) are issued at :data:`NOW`, with
  the ``jti`` :data:`EXAMPLE_JTI`.

Before each request the database holds the users of :data:`USERS` and the jobs of
:func:`standard_jobs`. The jobs are made through ``nick_jobs.jobs.lifecycle``, as a worker
would have left them. The :data:`SETUP` table adds what a single example needs on top.
No worker runs (``nick_jobs.embedded_worker_threads = 0``), so nothing changes between
the setup and the request.

The Markdown pages quote some examples inline, after a ``<!-- example: <file> -->``
marker. :func:`test_inline_copies_match` keeps those copies equal to the files.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
import webtest
from sqlalchemy.orm import Session

from nick_jobs import main
from nick_jobs.db import get_engine, migrations
from nick_jobs.db.after_commit import transaction
from nick_jobs.jobs import lifecycle, remote_actions
from nick_jobs.jobs.actions import get_registry
from nick_jobs.jobs.builtin_actions import dummy_action, prune_action
from nick_jobs.jobs.model import JobLog
from nick_jobs.scheduling import scheduled_jobs
from nick_jobs.scheduling.scheduler import Scheduler
from nick_jobs.users import tokens
from nick_jobs.users.model import User
from nick_jobs.users.passwords import hash_password
from nick_jobs.web.views import streams as stream_views
from tests.conftest import attempt_of, base_settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"

HOST = "localhost:8080"
NOW = dt.datetime(2022, 4, 8, 16, 0, 0, tzinfo=dt.UTC)
NEW_UUID = "a95388f2-e4b3-4292-98aa-62656cbd5b9c"

# The jobs every example starts with, oldest first.
PRUNE_UUID = "a2fe7e07-d54b-435b-9cb0-e12f1f80a589"  # completed
FAILED_UUID = "9b720568-0efd-4f82-8c84-61590a64520b"  # failed
RUNNING_UUID = "b61b93e5-2c69-4dfb-854f-01349107482b"  # running
# Made by the setup of jobs/add_repeated, with an Idempotency-Key.
REPEATED_UUID = "a33f04f3-02cb-4032-b080-487714f09285"

# login -> (password, full name, roles)
USERS = {
    "admin": ("admin", "Admin", ["Administrator"]),
    "jane": ("jane-password", "Jane Doe", []),
}

TOKEN = re.compile(r"\{token:([A-Za-z0-9_.-]+)\}")
INLINE = re.compile(r"<!-- example: (\S+) -->\n```[a-z]*\n(.*?)```", re.DOTALL)
_original_issue = tokens.issue
# The jti of the tokens the API issues in the examples (a random one otherwise).
EXAMPLE_JTI = "6jQW0s2Jb9m4kTqLh1cXvA"
_hashes: dict[str, str] = {}


def example_names() -> list[str]:
    return sorted(
        p.relative_to(EXAMPLES).with_suffix("").as_posix() for p in EXAMPLES.rglob("*.req")
    )


# --- reading the files -----------------------------------------------------------------


@dataclass
class Message:
    """A request or response as written in an example file."""

    first_line: str
    headers: list[tuple[str, str]]
    body: str

    def header(self, name: str, default: str | None = None) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), default)

    def is_json(self) -> bool:
        return any(
            (self.header(name) or "").split(";")[0].strip() == "application/json"
            for name in ("Content-Type", "Accept")
        )


def parse(text: str) -> Message:
    head, _, body = text.partition("\n\n")
    first_line, *header_lines = head.rstrip("\n").split("\n")
    headers = []
    for line in header_lines:
        name, sep, value = line.partition(":")
        assert sep, f"not a header line: {line!r}"
        headers.append((name.strip(), value.strip()))
    return Message(first_line, headers, body)


# --- the fixed clock and uuids ---------------------------------------------------------


class Clock:
    """Stands in for ``transitions.utcnow``: it reads whatever time it was last set to."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now

    def at(self, hhmmss: str) -> None:
        """Set the time of day on :data:`NOW`'s date, e.g. ``"15:30:00.080"``."""
        time = dt.time.fromisoformat(hhmmss)
        self.now = dt.datetime.combine(NOW.date(), time, tzinfo=dt.UTC)


class UUIDs:
    """Stands in for the ``uuid`` module in ``transitions``: hands out the uuids it is told."""

    def __init__(self) -> None:
        self.queue: list[str] = []
        self.made = 0

    def uuid4(self) -> uuidlib.UUID:
        if self.queue:
            return uuidlib.UUID(self.queue.pop(0))
        # A request's first new job gets NEW_UUID; a bulk submit's next ones, uuids that
        # are the same on every run.
        self.made += 1
        if self.made == 1:
            return uuidlib.UUID(NEW_UUID)
        return uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"example-job-{self.made}")

    def reset(self) -> None:
        self.queue.clear()
        self.made = 0


# --- the world an example runs in ------------------------------------------------------


@dataclass
class World:
    engine: sa.Engine
    client: webtest.TestApp
    clock: Clock
    uuids: UUIDs
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, login: str) -> str:
        """A valid token of ``login``, the same one for the whole example."""
        if login not in self.tokens:
            settings = self.client.app.registry["nick_jobs.settings"]
            self.tokens[login] = _original_issue(settings, login, USERS[login][1])
        return self.tokens[login]

    def submit(
        self, uuid: str, at: str, params: dict[str, Any], title: str = "", key: str | None = None
    ) -> None:
        """Store a job as ``POST /@jobs`` by admin would, at ``at`` o'clock."""
        action = {"dummy": dummy_action, "prune": prune_action}[params["action"]]
        self.clock.at(at)
        self.uuids.queue.append(uuid)
        with transaction(self.engine) as conn:
            lifecycle.create(
                conn,
                action=action.name,
                params=params,
                actor="admin",
                title=title or action.title,
                description=action.description,
                idempotency_key=key,
            )

    def run(self, uuid: str, at: str) -> None:
        """``created → running``, as a worker picking the job up."""
        self.clock.at(at)
        with transaction(self.engine) as conn:
            assert lifecycle.start(conn, uuid) is not None

    def complete(self, uuid: str, at: str, result: dict[str, Any]) -> None:
        self.clock.at(at)
        with transaction(self.engine) as conn:
            assert lifecycle.complete(conn, attempt_of(uuid, 1), result)

    def fail(self, uuid: str, at: str, message: str) -> None:
        self.clock.at(at)
        with transaction(self.engine) as conn:
            assert lifecycle.fail(conn, attempt_of(uuid, 1), "JobFailed", message)

    def abort(self, uuid: str, at: str) -> None:
        self.clock.at(at)
        with transaction(self.engine) as conn:
            lifecycle.abort(conn, uuid, by="admin")

    def retry(self, uuid: str, at: str) -> None:
        self.clock.at(at)
        with transaction(self.engine) as conn:
            lifecycle.retry(conn, uuid, by="admin")


def add_users(engine: sa.Engine) -> None:
    if not _hashes:
        _hashes.update({login: hash_password(password) for login, (password, *_) in USERS.items()})
    with Session(engine) as session, session.begin():
        for login, (_, fullname, roles) in USERS.items():
            session.add(
                User(
                    login=login,
                    fullname=fullname,
                    password_hash=_hashes[login],
                    roles=roles,
                    created=NOW,
                )
            )


def standard_jobs(world: World) -> None:
    """Three jobs of the morning of :data:`NOW`: completed, failed and still running."""
    world.submit(PRUNE_UUID, "02:00:00.000", {"action": "prune", "days": 30})
    world.run(PRUNE_UUID, "02:00:00.150")
    world.complete(
        PRUNE_UUID, "02:00:01.732", {"deleted": 12, "cutoff": "2022-03-09T02:00:00.150000+00:00"}
    )
    world.submit(FAILED_UUID, "15:30:00.000", {"action": "dummy", "fail": "disk full"})
    world.run(FAILED_UUID, "15:30:00.080")
    world.fail(FAILED_UUID, "15:30:00.095", "disk full")
    world.submit(
        RUNNING_UUID,
        "15:55:00.000",
        {"action": "dummy", "sleep": 600, "steps": 60},
        title="Ten minutes of nothing",
    )
    world.run(RUNNING_UUID, "15:55:00.062")


def _logged_out(world: World) -> None:
    headers = {"Authorization": f"Bearer {world.token('admin')}"}
    world.client.post("/@logout", headers=headers, status=204)


def _submitted_with_key(world: World) -> None:
    params = {"action": "prune", "days": 7}
    world.submit(REPEATED_UUID, "15:59:58.500", params, key="prune-2022-04-08")


def _scheduled(world: World, declared: bool = False) -> None:
    """A weekly prune that last ran on Sunday; or, declared, the default nightly prune."""
    data = {"id": "prune-weekly", "action": "prune", "params": {"days": 7}}
    data.update(title="Weekly clean-up", description="Deletes jobs finished a week ago.")
    data.update(schedule="30 2 * * 0", timezone="Europe/Amsterdam")
    if declared:
        data = {"id": "prune-nightly", "action": "prune", "schedule": "0 3 * * *"}
    world.clock.at("09:00:00.000")
    with Session(world.engine) as session, session.begin():
        row = scheduled_jobs.create(session, world.client.app.registry, data, actor="admin")
        row.declared, row.last_run = declared, dt.datetime(2022, 4, 3, 0, 30, 0, 412000, dt.UTC)


def _skipped(world: World) -> None:
    """Jane's hourly dummy, made while she was an Administrator; she no longer is one."""
    data = {"id": "dummy-hourly", "action": "dummy", "params": {"steps": 1}}
    data.update(schedule="0 * * * *", title="Hourly heartbeat")
    world.clock.at("09:30:00.000")
    with Session(world.engine) as session, session.begin():
        scheduled_jobs.create(session, world.client.app.registry, data, actor="jane")
    firing = dt.datetime.combine(NOW.date(), dt.time(10, 0, 0, 214000), tzinfo=dt.UTC)
    assert Scheduler(world.client.app.registry).tick(firing) == []


def _logged(world: World) -> None:
    """What the running dummy job logged in its first three steps, as its worker wrote it."""
    lines = [
        ("15:55:10.071", 20, "step 1 of 60 done"),
        ("15:55:20.080", 20, "step 2 of 60 done"),
        ("15:55:30.094", 30, "step 3 took 10.004 s, more than planned"),
        ("15:55:30.094", 20, "step 3 of 60 done"),
    ]
    rows = []
    for at, level, message in lines:
        world.clock.at(at)
        rows.append(
            {"job_uuid": RUNNING_UUID, "attempt": 1, "time": world.clock(), "level": level}
            | {"message": message}
        )
    with transaction(world.engine) as conn:
        conn.execute(JobLog.__table__.insert(), rows)


def _retried_and_completed(world: World) -> None:
    world.retry(FAILED_UUID, "15:45:00.000")
    world.run(FAILED_UUID, "15:45:00.312")
    world.clock.at("15:45:01.840")
    with transaction(world.engine) as conn:
        assert lifecycle.complete(conn, attempt_of(FAILED_UUID, 2), {})


def _restarted(world: World) -> None:
    """The failed dummy job, restarted a quarter of an hour later."""
    world.clock.at("15:46:00.000")
    with transaction(world.engine) as conn:
        lifecycle.restart(conn, FAILED_UUID, by="admin")


def _stopped(world: World) -> None:
    """The running dummy job stopped on request after 14 of its 60 steps."""
    world.clock.at("15:57:20.402")
    with transaction(world.engine) as conn:
        assert lifecycle.stopped(conn, attempt_of(RUNNING_UUID, 1), 14)


REINDEX_UUID = "5f0c1d0e-7b7a-4c1e-9d3a-2b7e8f6a1c42"
LEASE_UUID = "0b6d3f4e-1c2a-4e8b-9f7d-6a5c4b3a2f10"  # the claim's lease, as hex
REINDEX = {
    "title": "Reindex a site",
    "permission": "Add Jobs",
    "params": {
        "type": "object",
        "properties": {"site": {"type": "string"}},
        "required": ["site"],
    },
    "lease": 120,
}


def _remote(world: World) -> None:
    """The remote action reindex (docs/remote-workers.md), and one of its jobs, waiting."""
    world.clock.at("09:00:00.000")
    registry = world.client.app.registry
    with Session(world.engine) as session, session.begin():
        definition, _ = remote_actions.load_definition(REINDEX, "reindex")
        remote_actions.put(session, get_registry(registry), "reindex", definition, "admin")
    world.clock.at("15:59:00.000")
    _reindex_job(world, REINDEX_UUID, "news")


def _reindex_job(world: World, uuid: str, site: str) -> None:
    """A waiting reindex job of ``site``, made by admin."""
    world.uuids.queue.append(uuid)
    with transaction(world.engine) as conn:
        lifecycle.create(
            conn,
            action="reindex",
            params={"action": "reindex", "site": site},
            actor="admin",
            title=f"Reindex the {site}",
            description="",
            action_version=1,
        )


def _claimed(world: World) -> None:
    """The reindex job, claimed by admin's consumer half a minute after it was made."""
    _remote(world)
    world.clock.at("15:59:30.000")
    world.uuids.queue.append(LEASE_UUID)
    action = lifecycle.RemoteAction("reindex", lease=120, claim_window=0)
    with transaction(world.engine) as conn:
        assert lifecycle.claim(conn, [action], "admin", {}, 1)


ARCHIVE_UUID = "c3e1a9b2-5d4f-4e8a-b7c6-1f2e3d4c5b6a"
ARCHIVE_LEASE_UUID = "7e2c9a41-3b5d-4f68-a0c1-d2e3f4a5b6c7"


def _claimed_two(world: World) -> None:
    """Two reindex jobs, the news and the archive, claimed together by admin's consumer."""
    _remote(world)
    world.clock.at("15:59:10.000")
    _reindex_job(world, ARCHIVE_UUID, "archive")
    world.clock.at("15:59:30.000")
    world.uuids.queue.extend([LEASE_UUID, ARCHIVE_LEASE_UUID])
    action = lifecycle.RemoteAction("reindex", lease=120, claim_window=0)
    with transaction(world.engine) as conn:
        claimed = lifecycle.claim(conn, [action], "admin", {}, 2)
    assert [job["uuid"] for job in claimed] == [REINDEX_UUID, ARCHIVE_UUID]


_SCHEDULED = ("add_repeated", "delete", "get", "list", "patch", "patch_representation")

# What an example needs beyond the users and the standard jobs.
SETUP: dict[str, Callable[[World], None]] = {
    "authentication/request_after_logout": _logged_out,
    "jobs/add_repeated": _submitted_with_key,
    "jobs/get_aborted": lambda world: world.abort(RUNNING_UUID, "15:58:00.000"),
    "jobs/get_retried": lambda world: world.retry(FAILED_UUID, "15:45:00.000"),
    "jobs/history": _retried_and_completed,
    "jobs/log": _logged,
    "jobs/list_restarts": _restarted,
    "jobs/log_filtered": _logged,
    "jobs/resume": _stopped,
    **{f"scheduled-jobs/{name}": _scheduled for name in _SCHEDULED},
    "scheduled-jobs/delete_declared": lambda world: _scheduled(world, declared=True),
    "scheduled-jobs/get_skipped": _skipped,
    "consumers/claim": _remote,
    "consumers/checkin": _claimed,
    "consumers/complete": _claimed,
    "consumers/complete_wrong_lease": _claimed,
    "consumers/complete_many": _claimed_two,
}


# --- the tests -------------------------------------------------------------------------


@pytest.fixture
def world(tmp_path, monkeypatch) -> Iterator[World]:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    engine = get_engine(url)
    migrations.upgrade(engine)
    add_users(engine)
    settings = base_settings(
        **{
            "sqlalchemy.url": url,
            "nick_jobs.broker_url": "stub://",
            "nick_jobs.embedded_worker_threads": "0",
            # Only the built-in actions: the docs describe an installation as it ships.
            "nick_jobs.includes": "",
            # Pages of this origin may call the API (docs/api.md#cors).
            "nick_jobs.cors_origins": "https://cms.example.org",
        }
    )
    clock, uuids = Clock(), UUIDs()
    monkeypatch.setattr(lifecycle, "utcnow", clock)
    monkeypatch.setattr(scheduled_jobs, "utcnow", clock)
    monkeypatch.setattr(stream_views, "utcnow", clock)
    monkeypatch.setattr(lifecycle, "uuidlib", SimpleNamespace(uuid4=uuids.uuid4))
    monkeypatch.setattr(
        tokens,
        "issue",
        lambda settings, login, fullname, now=None, jti=None: _original_issue(
            settings, login, fullname, now=NOW, jti=EXAMPLE_JTI
        ),
    )
    wsgi = main({}, **settings)
    client = webtest.TestApp(wsgi)
    world = World(engine, client, clock, uuids)
    standard_jobs(world)
    yield world
    wsgi.registry["nick_jobs.engine"].dispose()
    engine.dispose()


@pytest.mark.parametrize("name", example_names())
def test_example(world: World, name: str) -> None:
    raw = (EXAMPLES / f"{name}.req").read_text()
    assert raw.endswith("\n"), f"{name}.req must end with a newline"
    request = parse(TOKEN.sub(lambda m: world.token(m.group(1)), raw))
    expected = parse((EXAMPLES / f"{name}.res").read_text())
    SETUP.get(name, lambda world: None)(world)
    world.clock.now = NOW
    world.uuids.reset()

    method, target, version = request.first_line.split(" ")
    assert version == "HTTP/1.1"
    params: dict[str, Any] = {"method": method, "headers": dict(request.headers)}
    if request.body.strip():
        params["body"] = request.body.encode()
    response = world.client.request(target, base_url=f"http://{HOST}", expect_errors=True, **params)

    protocol, _, status = expected.first_line.partition(" ")
    assert protocol == "HTTP/1.1"
    assert response.status == status, response.text
    for header, value in expected.headers:
        assert response.headers.get(header) == value, f"{header} of {name}"
    if expected.header("Content-Type", "").startswith("text/event-stream"):
        # A stream that has ended (its job is finished): the events, byte for byte.
        assert response.text == expected.body
    elif expected.body.strip():
        assert expected.is_json(), f"{name}.res has a body but no JSON Content-Type"
        assert response.json == json.loads(expected.body)
    else:
        assert response.body == b""


def test_every_request_has_a_response() -> None:
    requests = {p.with_suffix("") for p in EXAMPLES.rglob("*.req")}
    responses = {p.with_suffix("") for p in EXAMPLES.rglob("*.res")}
    assert requests == responses
    assert requests, "no examples found"


def test_setup_table_names_examples() -> None:
    assert set(SETUP) <= set(example_names())


def test_inline_copies_match() -> None:
    """An example quoted in a page after ``<!-- example: x.req -->`` is quoted verbatim."""
    quoted = 0
    for page in DOCS.glob("*.md"):
        for name, block in INLINE.findall(page.read_text()):
            path = EXAMPLES / name
            assert path.is_file(), f"{page.name} quotes {name}, which does not exist"
            assert block == path.read_text(), f"{page.name}: the copy of {name} differs"
            quoted += 1
    assert quoted, "the pages quote no example"
