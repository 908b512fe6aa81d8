"""``nick_jobs_client`` against a live server: ``pserve`` in a subprocess, over real HTTP."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from nick_jobs.db import get_engine, migrations
from nick_jobs.settings import ENVIRONMENT_OVERRIDES
from nick_jobs.users.accounts import add_user
from nick_jobs_client import Client, ClientError, ServerUnavailable
from tests.conftest import ROOT, stop_process
from tests.netutil import free_port, wait_listening

PSERVE = Path(sys.executable).with_name("pserve")
USERS = {
    "admin": ("admin-password", ["Administrator"]),
    "alice": ("alice-password", []),
    # Only for the logout tests, so that a logout ends no token another test holds.
    "carol": ("carol-password", []),
}
FINAL = ("completed", "failed", "aborted")


@dataclass
class LiveServer:
    url: str
    ini: Path
    process: subprocess.Popen

    def client(self, login: str | None = "admin", **options) -> Client:
        client = Client(self.url, **options)
        if login:
            client.login(login, USERS[login][0])
        return client


def server_env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT_OVERRIDES}
    # The checkout on the path too: a server may include the tests' own actions.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@contextlib.contextmanager
def live_server(directory: Path, **settings: str) -> Iterator[LiveServer]:
    """A nick-jobs server on a free port: temporary SQLite, stub:// broker, worker threads."""
    database = directory / "jobs.sqlite"
    engine = get_engine(f"sqlite:///{database}")
    migrations.upgrade(engine)
    with Session(engine) as session, session.begin():
        for login, (password, roles) in USERS.items():
            add_user(session, login, password, fullname=login.title(), roles=roles)
    engine.dispose()
    port = free_port()
    values = {
        "nick_jobs.environment": "testing",
        "sqlalchemy.url": f"sqlite:///{database}",
        "nick_jobs.broker_url": "stub://",
        "nick_jobs.embedded_worker_threads": "2",
        "nick_jobs.worker_timeout_ms": "50",
        "nick_jobs.jwt_secret": "client-tests-" + "x" * 40,
        "nick_jobs.auto_migrate": "false",
        "nick_jobs.bootstrap_admin": "false",
        "nick_jobs.login_rate_limit": "1000",
        # A test may leave a long job running: the server stops within 2 s, not after the
        # 20 s a production drain gives running work.
        "nick_jobs.shutdown_grace": "2",
        **settings,
    }
    ini = directory / "server.ini"
    lines = ["[app:main]", "use = egg:nick-jobs", *(f"{k} = {v}" for k, v in values.items())]
    lines += ["", "[server:main]", "use = egg:waitress#main", f"listen = 127.0.0.1:{port}"]
    # Each open event stream holds a waitress thread: more than the default 4, so that
    # plain requests still find one while a test holds streams open.
    lines += ["threads = 16", "channel_request_lookahead = 1", ""]
    ini.write_text("\n".join(lines))
    log = (directory / "server.log").open("w+")
    process = subprocess.Popen(
        [str(PSERVE), str(ini)], cwd=ROOT, env=server_env(), stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_listening(port, process, directory / "server.log", "pserve", timeout=30)
        yield LiveServer(url, ini, process)
    finally:
        stop_process(process)
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("client")) as live:
        yield live


@pytest.fixture
def admin(server) -> Client:
    return server.client("admin")


def long_job(client: Client, title: str = "Long") -> dict:
    return client.submit_job("dummy", {"sleep": 300, "steps": 3000}, title=title)


# --- authentication --------------------------------------------------------------------


def test_login_keeps_the_token_and_it_authorizes_requests(server):
    client = Client(server.url)
    token = client.login("admin", "admin-password")
    assert client.token == token
    assert token.count(".") == 2
    assert [a["name"] for a in client.job_actions()] == ["dummy", "prune"]


def test_wrong_password_raises_401_with_the_server_body(server):
    with pytest.raises(ClientError) as info:
        Client(server.url).login("admin", "wrong")
    assert info.value.status == 401
    assert info.value.type == "Invalid credentials"
    assert str(info.value) == "Wrong login and/or password."
    assert info.value.body == {
        "error": {"type": "Invalid credentials", "message": "Wrong login and/or password."}
    }
    assert not isinstance(info.value, ServerUnavailable)


def test_renew_then_logout_revokes_the_token(server):
    client = server.client("carol")
    renewed = client.renew()
    assert client.token == renewed
    assert client.job_actions() == []
    stale = Client(server.url, renewed)
    client.logout()
    assert client.token is None
    with pytest.raises(ClientError) as info:
        stale.job_actions()
    assert info.value.status == 401


def test_no_token_is_a_401(server):
    with pytest.raises(ClientError) as info:
        Client(server.url).list_jobs()
    assert info.value.status == 401
    assert info.value.type == "Unauthorized"


# --- jobs ------------------------------------------------------------------------------


def test_submit_get_and_wait_for_completion(admin):
    job = admin.submit_job(
        "dummy", {"steps": 2, "result": {"answer": 42}}, title="The answer", description="d"
    )
    assert job["status"] == "created"
    assert job["params"] == {"steps": 2, "result": {"answer": 42}, "action": "dummy"}
    assert (job["title"], job["description"]) == ("The answer", "d")
    done = admin.wait_for_job(job["uuid"], timeout=15)
    assert done["status"] == "completed"
    assert done["result"] == {"answer": 42}
    assert admin.get_job(job["uuid"]) == done


def test_idempotency_key_returns_the_first_job(admin):
    first = admin.submit_job("dummy", idempotency_key="client-key-1")
    again = admin.submit_job("dummy", {"steps": 3}, idempotency_key="client-key-1")
    assert again["uuid"] == first["uuid"]
    assert again["params"] == {"action": "dummy"}


def test_submit_jobs_creates_them_all_in_order_or_none(admin):
    bodies = [
        {"params": {"action": "dummy", "result": {"n": n}}, "title": f"Bulk {n}"} for n in (1, 2)
    ]
    jobs = admin.submit_jobs(bodies, idempotency_key="client-bulk-1")
    assert [job["title"] for job in jobs] == ["Bulk 1", "Bulk 2"]
    assert [admin.wait_for_job(job["uuid"], timeout=15)["result"] for job in jobs] == [
        {"n": 1},
        {"n": 2},
    ]
    again = admin.submit_jobs(bodies, idempotency_key="client-bulk-1")
    assert [job["uuid"] for job in again] == [job["uuid"] for job in jobs]
    before = admin.count_jobs()
    with pytest.raises(ClientError) as info:
        admin.submit_jobs([*bodies, {"params": {"action": "dummy", "steps": -1}}])
    assert info.value.status == 400
    assert list(info.value.error["fields"]) == ["2"]
    assert "2.params.steps: Must be" in str(info.value)
    assert admin.count_jobs() == before


def test_complete_jobs_completes_a_batch_with_an_outcome_for_each(admin):
    schema = {"type": "object", "required": ["indexed"]}
    body = {"title": "Batch", "permission": "Add Jobs", "result": schema, "lease": 60}
    admin.request("PUT", "/@job-actions/client-batch", json_body=body)
    try:
        _complete_a_batch(admin)
    finally:
        # The module's server is shared: its list of actions is what other tests expect.
        admin.request("DELETE", "/@job-actions/client-batch")


def _complete_a_batch(admin: Client) -> None:
    submitted = admin.submit_jobs(
        [{"params": {"action": "client-batch", "n": n}} for n in range(3)]
    )
    claimed = admin.claim_jobs(["client-batch"], limit=3)
    assert [job["uuid"] for job in claimed] == [job["uuid"] for job in submitted]
    first, second, third = claimed
    outcomes = admin.complete_jobs(
        [
            # The claim's whole lease, or its id.
            {"uuid": first["uuid"], "lease": first["lease"], "result": {"indexed": 1}},
            {"uuid": second["uuid"], "lease": "not the lease", "result": {"indexed": 2}},
            {"uuid": third["uuid"], "lease": third["lease"]["id"], "result": {"other": 3}},
        ]
    )
    assert outcomes[0] == {"uuid": first["uuid"], "completed": True}
    assert outcomes[1]["uuid"] == second["uuid"]
    assert (outcomes[1]["error"]["type"], outcomes[1]["error"]["status"]) == (
        "Lease refused",
        "running",
    )
    assert outcomes[2]["error"]["type"] == "Validation error"
    assert outcomes[2]["error"]["fields"] == {
        "result": {"indexed": ["Missing data for required field."]}
    }
    done = admin.get_job(first["uuid"])
    assert (done["status"], done["result"]) == ("completed", {"indexed": 1})
    assert [admin.get_job(job["uuid"])["status"] for job in (second, third)] == [
        "running",
        "running",
    ]
    with pytest.raises(ClientError) as info:
        admin.complete_jobs([{"uuid": second["uuid"]}])
    assert info.value.status == 400
    assert info.value.error["fields"] == {"0": {"lease": ["Missing data for required field."]}}
    # The two still held end here: no job of the action is left running or waiting.
    for job in (second, third):
        admin.abort_job(job["uuid"])


def test_invalid_params_raise_400_with_the_fields_in_the_message(admin):
    with pytest.raises(ClientError) as info:
        admin.submit_job("dummy", {"steps": -1, "colour": "blue"})
    assert info.value.status == 400
    assert info.value.error["fields"]["params"]["colour"] == ["Unknown field."]
    assert str(info.value).startswith("The request has invalid fields. (")
    assert "params.colour: Unknown field" in str(info.value)


def test_abort_retry_delete(admin):
    uuid = long_job(admin)["uuid"]
    admin.abort_job(uuid)
    assert admin.get_job(uuid)["status"] == "aborted"
    admin.retry_job(uuid)
    running = admin.wait_for_job(uuid, ("running",), timeout=15)
    assert running["attempt"] == 2
    with pytest.raises(ClientError) as info:
        admin.delete_job(uuid)
    assert (info.value.status, info.value.error["status"]) == (409, "running")
    admin.abort_job(uuid)
    admin.delete_job(uuid)
    with pytest.raises(ClientError) as info:
        admin.get_job(uuid)
    assert info.value.status == 404


def test_conflict_carries_the_jobs_status(admin):
    uuid = admin.submit_job("dummy")["uuid"]
    admin.wait_for_job(uuid, ("completed",), timeout=15)
    with pytest.raises(ClientError) as info:
        admin.retry_job(uuid)
    assert info.value.status == 409
    assert str(info.value) == "A completed job can't be retried."
    assert info.value.error["status"] == "completed"


def test_another_users_job_is_not_found(server, admin):
    uuid = admin.submit_job("dummy")["uuid"]
    with pytest.raises(ClientError) as info:
        server.client("alice").get_job(uuid)
    assert info.value.status == 404


def test_a_job_id_with_a_slash_is_refused_before_any_request(admin):
    with pytest.raises(ValueError, match="not a job id"):
        admin.get_job("../@job-actions")


def test_list_follows_pages_filters_and_limits(admin):
    marker = f"paging-{time.monotonic_ns()}"
    uuids = [admin.submit_job("dummy", title=f"{marker} {i}")["uuid"] for i in range(5)]
    newest_first = uuids[::-1]
    page = admin.list_page(q=marker, page_size=2)
    assert [job["uuid"] for job in page.jobs] == newest_first[:2]
    assert page.next_url is not None
    assert "cursor=" in page.next_url
    assert page.total is None
    # page_size 2 makes three requests; every job arrives once, in order.
    assert [j["uuid"] for j in admin.iter_jobs(q=marker, page_size=2)] == newest_first
    assert [j["uuid"] for j in admin.list_jobs(q=marker, limit=3, page_size=2)] == newest_first[:3]
    assert admin.list_jobs(q=marker, limit=0) == []
    assert admin.list_page(q=marker, page_size=1, count=True).total == 5
    assert all(j["actor"] == "admin" for j in admin.list_jobs(q=marker, actor="admin"))
    assert admin.list_jobs(q=marker, actor="alice") == []
    assert admin.list_jobs(q=marker, action="prune") == []
    for uuid in uuids:
        admin.wait_for_job(uuid, FINAL, timeout=15)
    completed = admin.list_jobs(q=marker, status="completed")
    assert [j["uuid"] for j in completed] == newest_first


def test_list_by_parent_gives_a_jobs_restarts(admin):
    old = admin.submit_job("dummy", title=f"parent-{time.monotonic_ns()}")
    admin.wait_for_job(old["uuid"], FINAL, timeout=15)
    new = admin.restart_job(old["uuid"])
    assert [j["uuid"] for j in admin.list_jobs(parent=old["uuid"])] == [new["uuid"]]
    assert admin.list_page(parent=old["uuid"]).jobs == admin.list_jobs(parent=old["uuid"])
    assert admin.list_jobs(parent=new["uuid"]) == []


def test_invalid_filter_is_a_400(admin):
    with pytest.raises(ClientError) as info:
        admin.list_jobs(status="done")
    assert info.value.status == 400
    assert "status" in info.value.error["fields"]


def test_health_uses_the_readiness_check(server):
    health = Client(server.url).health()
    assert health["status"] == "ok"
    assert (health["endpoint"], health["http_status"]) == ("/healthz/ready", 200)
    checks = health["body"]["checks"]
    assert (checks["database"]["status"], checks["broker"]["status"]) == ("ok", "ok")
    # Any other check is one the server does not need to be ready (the scheduler, which a
    # testing server does not run).
    assert all(c["required"] is False for name, c in checks.items() if c["status"] != "ok")


# --- connection errors and retries -----------------------------------------------------


def test_unreachable_server_raises_server_unavailable_after_retries():
    client = Client(f"http://127.0.0.1:{free_port()}", "t", retries=2, backoff=0.01)
    started = time.monotonic()
    with pytest.raises(ServerUnavailable) as info:
        client.list_jobs()
    assert info.value.status is None
    assert "connection refused" in str(info.value)
    assert time.monotonic() - started >= 0.03  # two waits: 0.01 and 0.02


NOT_FOUND = (404, b'{"error": {"type": "Not found", "message": "No such page."}}')
UNAUTHORIZED = (401, b'{"error": {"type": "Unauthorized", "message": "Log in."}}')


class FakeServer:
    """A stand-in server: drops the first ``drops`` connections without an answer, then
    answers each path from ``routes`` (``path -> (status, body)``), else ``default``."""

    def __init__(
        self,
        drops: int = 0,
        default: tuple[int, bytes] = (200, b"[]"),
        routes: dict[str, tuple[int, bytes]] | None = None,
    ) -> None:
        self.requests: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self):
                outer.requests.append((self.command, self.path))
                if len(outer.requests) <= drops:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                status, body = (routes or {}).get(self.path.split("?")[0], default)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _answer

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_idempotent_calls_are_retried_after_a_dropped_connection():
    with FakeServer(drops=2) as fake:
        assert Client(fake.url, "t", backoff=0.01).list_jobs() == []
    assert [r[0] for r in fake.requests] == ["GET", "GET", "GET"]


def test_non_idempotent_calls_are_sent_once():
    with FakeServer(drops=2) as fake:
        client = Client(fake.url, "t", backoff=0.01)
        with pytest.raises(ServerUnavailable):
            client.abort_job("6f0c2b1e-3d4a-4b5c-8d6e-7f8091a2b3c4")
        with pytest.raises(ServerUnavailable):
            client.submit_job("dummy")
    assert [r[0] for r in fake.requests] == ["POST", "POST"]


def test_a_submission_with_an_idempotency_key_is_retried():
    with FakeServer(drops=1, default=(201, b'{"uuid": "u"}')) as fake:
        job = Client(fake.url, "t", backoff=0.01).submit_job("dummy", idempotency_key="k")
    assert job == {"uuid": "u"}
    assert fake.requests == [("POST", "/@jobs"), ("POST", "/@jobs")]


def test_a_503_is_server_unavailable_and_a_non_json_error_keeps_the_status():
    body = b'{"error": {"type": "x", "message": "db"}}'
    with FakeServer(default=(503, body)) as fake, pytest.raises(ServerUnavailable) as info:
        Client(fake.url, "t").get_job("x")
    assert (info.value.status, str(info.value)) == (503, "db")
    with (
        FakeServer(default=(500, b"<html>oops</html>")) as fake,
        pytest.raises(ClientError) as info,
    ):
        Client(fake.url, "t").job_actions()
    assert info.value.status == 500
    assert str(info.value) == "HTTP 500 Internal Server Error"
    assert info.value.body == "<html>oops</html>"


def test_a_base_path_prefixes_every_request_and_next_links_stay_on_the_server():
    with FakeServer() as fake:
        client = Client(fake.url + "/jobs-api/", "t")
        client.list_page(page_size=3)
        client.list_page(url="http://elsewhere.example/jobs-api/@jobs?cursor=c")
    assert fake.requests == [
        ("GET", "/jobs-api/@jobs?b_size=3"),
        ("GET", "/jobs-api/@jobs?cursor=c"),
    ]


def test_health_falls_back_to_liveness_then_to_job_actions():
    routes = {"/healthz/ready": NOT_FOUND, "/healthz": (200, b'"ok"')}
    with FakeServer(routes=routes) as fake:
        health = Client(fake.url).health()
    assert (health["endpoint"], health["body"]) == ("/healthz", "ok")

    routes = {"/healthz/ready": NOT_FOUND, "/healthz": NOT_FOUND, "/@job-actions": UNAUTHORIZED}
    with FakeServer(routes=routes) as fake:
        health = Client(fake.url).health()
    assert (health["endpoint"], health["http_status"], health["authenticated"]) == (
        "/@job-actions",
        401,
        False,
    )
    assert [path for _, path in fake.requests] == ["/healthz/ready", "/healthz", "/@job-actions"]

    # A 404 without the API's error shape is not nick-jobs: no "ok" for it.
    routes = {"/@job-actions": (401, b"who?")}
    with FakeServer(default=NOT_FOUND, routes=routes) as fake, pytest.raises(ClientError):
        Client(fake.url).health()


def test_health_not_ready_raises_server_unavailable_with_the_message():
    body = b'{"status": "unavailable", "error": {"type": "x", "message": "Not ready: broker."}}'
    routes = {"/healthz/ready": (503, body)}
    with FakeServer(routes=routes) as fake, pytest.raises(ServerUnavailable) as info:
        Client(fake.url).health()
    assert (info.value.status, str(info.value)) == (503, "Not ready: broker.")


# --- stop, resume, restart, log, history -----------------------------------------------


def poll(check, timeout: float = 15, interval: float = 0.05):
    """``check()`` until it returns something true; that value. Fails at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r} after {timeout} s")
        time.sleep(interval)


def step_number(line: dict) -> int:
    """``step 7 of 3000 done`` → 7."""
    return int(line["message"].split()[1])


def test_stop_then_resume_goes_on_from_the_checkpoint(admin):
    uuid = long_job(admin, "Stop and resume")["uuid"]
    poll(lambda: admin.job_log(uuid))  # it has done a step
    admin.stop_job(uuid)
    stopped = admin.wait_for_job(uuid, ("stopped",), timeout=15)
    assert stopped["attempt"] == 1
    assert stopped["finished"] is not None
    before = admin.job_log(uuid)
    admin.resume_job(uuid)
    poll(lambda: [line for line in admin.job_log(uuid) if line["attempt"] == 2])
    admin.abort_job(uuid)
    lines = admin.job_log(uuid)
    first, second = [[line for line in lines if line["attempt"] == n] for n in (1, 2)]
    assert first == before
    # Attempt 2 started after the last step attempt 1 finished, not from step 1.
    assert [step_number(line) for line in first] == list(range(1, len(first) + 1))
    assert step_number(second[0]) == len(first) + 1
    events = [(e["event"], e["attempt"]) for e in admin.job_history(uuid)]
    assert ("stop requested", 1) in events
    assert ("resumed", 2) in events


def test_stop_and_resume_refusals(admin):
    pruned = admin.submit_job("prune")["uuid"]
    admin.wait_for_job(pruned, ("completed",), timeout=15)
    with pytest.raises(ClientError) as info:
        admin.stop_job(pruned)
    assert (info.value.status, info.value.type) == (409, "Not resumable")
    uuid = long_job(admin)["uuid"]
    admin.wait_for_job(uuid, ("running",), timeout=15)
    with pytest.raises(ClientError) as info:
        admin.resume_job(uuid)
    assert (info.value.status, str(info.value)) == (409, "A running job can't be resumed.")
    admin.abort_job(uuid)
    with pytest.raises(ClientError) as info:
        admin.stop_job(uuid)
    assert (info.value.status, info.value.error["status"]) == (409, "aborted")


def test_restart_makes_a_new_job_with_the_old_one_as_parent(admin):
    old = admin.submit_job("dummy", {"fail": "disk full"}, title="Restart me")
    failed = admin.wait_for_job(old["uuid"], timeout=15)
    new = admin.restart_job(old["uuid"])
    assert new["uuid"] != old["uuid"]
    assert new["parent"] == old["uuid"]
    assert (new["status"], new["attempt"], new["title"]) == ("created", 1, "Restart me")
    assert new["params"] == old["params"]
    assert admin.get_job(old["uuid"]) == failed
    with pytest.raises(ClientError) as info:
        admin.restart_job(long_job(admin)["uuid"])
    assert info.value.status == 409
    assert str(info.value).endswith("job can't be restarted.")


def test_log_follows_pages_and_filters_by_level(admin):
    uuid = admin.submit_job("dummy", {"steps": 5})["uuid"]
    admin.wait_for_job(uuid, ("completed",), timeout=15)
    page = admin.job_log_page(uuid, page_size=2)
    assert [line["message"] for line in page.lines] == ["step 1 of 5 done", "step 2 of 5 done"]
    assert page.next_url is not None
    assert "cursor=" in page.next_url
    lines = list(admin.iter_job_log(uuid, page_size=2))  # three pages
    assert [line["message"] for line in lines] == [f"step {n} of 5 done" for n in range(1, 6)]
    assert {(line["level"], line["attempt"]) for line in lines} == {("info", 1)}
    assert admin.job_log(uuid) == lines
    assert admin.job_log(uuid, level="info") == lines
    assert admin.job_log(uuid, level="warning") == []
    with pytest.raises(ClientError) as info:
        admin.job_log(uuid, level="loud")
    assert info.value.status == 400
    assert "level" in info.value.error["fields"]


def test_history_lists_the_events_in_order(server, admin):
    uuid = admin.submit_job("dummy", {"fail": "disk full"})["uuid"]
    admin.wait_for_job(uuid, ("failed",), timeout=15)
    admin.retry_job(uuid)
    admin.wait_for_job(uuid, ("failed",), timeout=15)
    history = admin.job_history(uuid)
    assert [(e["event"], e["by"], e["attempt"]) for e in history] == [
        ("created", "admin", 1),
        ("started", "worker", 1),
        ("failed", "worker", 1),
        ("retried", "admin", 2),
        ("started", "worker", 2),
        ("failed", "worker", 2),
    ]
    assert history[2]["error"] == {"type": "JobFailed", "message": "disk full"}
    assert history[3]["previous_attempt"]["status"] == "failed"
    with pytest.raises(ClientError) as info:
        server.client("alice").job_history(uuid)
    assert info.value.status == 404


# --- scheduled jobs --------------------------------------------------------------------


def test_scheduled_jobs_create_get_list_update_delete(admin):
    created = admin.create_scheduled_job(
        "client-hourly",
        "dummy",
        "0 * * * *",
        {"steps": 2},
        title="Hourly",
        description="From the client",
        timezone="Europe/Amsterdam",
    )
    assert created["id"] == "client-hourly"
    assert (created["action"], created["params"], created["schedule"]) == (
        "dummy",
        {"steps": 2},
        "0 * * * *",
    )
    assert (created["title"], created["timezone"], created["enabled"]) == (
        "Hourly",
        "Europe/Amsterdam",
        True,
    )
    assert created["next_run"] is not None
    assert admin.get_scheduled_job("client-hourly") == created
    assert created in admin.list_scheduled_jobs()

    changed = admin.update_scheduled_job("client-hourly", enabled=False, params={"steps": 3})
    assert (changed["enabled"], changed["next_run"], changed["params"]) == (
        False,
        None,
        {"steps": 3},
    )
    assert changed["schedule"] == "0 * * * *"  # what was not given stays
    assert admin.get_scheduled_job("client-hourly") == changed

    admin.delete_scheduled_job("client-hourly")
    with pytest.raises(ClientError) as info:
        admin.get_scheduled_job("client-hourly")
    assert info.value.status == 404
    assert all(s["id"] != "client-hourly" for s in admin.list_scheduled_jobs())


def test_scheduled_job_refusals(server, admin):
    admin.create_scheduled_job("client-taken", "dummy", "0 2 * * *")
    with pytest.raises(ClientError) as info:
        admin.create_scheduled_job("client-taken", "dummy", "0 2 * * *")
    assert (info.value.status, info.value.type) == (409, "Conflict")
    with pytest.raises(ClientError) as info:
        admin.create_scheduled_job("client-bad", "dummy", "0 * * *")
    assert info.value.status == 400
    assert "'0 * * *' has 4" in str(info.value)
    with pytest.raises(ClientError) as info:
        admin.update_scheduled_job("client-missing", enabled=True)
    assert info.value.status == 404
    with pytest.raises(ClientError) as info:
        server.client("alice").list_scheduled_jobs()
    assert (info.value.status, info.value.type) == (403, "Forbidden")
    with pytest.raises(ValueError, match="not a scheduled job id"):
        admin.get_scheduled_job("a/b")
    admin.delete_scheduled_job("client-taken")


def test_scheduled_job_actions_list_every_action(admin):
    actions = admin.scheduled_job_actions()
    assert [a["name"] for a in actions] == ["dummy", "prune"]
    assert actions[0]["params"]["type"] == "object"
