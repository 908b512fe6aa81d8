"""``nick_jobs_client.Consumer`` against a live server: remote actions' jobs claimed, run,
checked in on and reported over real HTTP, and a consumer process stopped by SIGTERM."""

from __future__ import annotations

import contextlib
import datetime as dt
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from nick_jobs_client import Client, Consumer, JobAborted, JobContext, JobStopped
from tests.client.test_client import LiveServer, live_server
from tests.conftest import ROOT, stop_process
from tests.waiting import until

# The shortest lease the server allows: the consumer checks in about every 1.7 s.
LEASE = 5


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("consumer")) as live:
        yield live


@pytest.fixture
def admin(server) -> Client:
    return server.client("admin")


@pytest.fixture
def action(admin, request) -> str:
    """A remote action of this test's own, so that no other test's consumer takes its
    jobs."""
    name = "t-" + request.node.name.removeprefix("test_")[:90].replace("_", "-")
    define(admin, name)
    return name


def define(admin: Client, name: str, **definition: Any) -> None:
    body = {"title": name, "lease": LEASE, **definition}
    admin.request("PUT", f"/@job-actions/{name}", json_body=body)


@contextlib.contextmanager
def consuming(consumer: Consumer) -> Iterator[threading.Thread]:
    """Run ``consumer`` on a thread; stop it and wait for ``run()`` to return on exit."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            consumer.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        consumer.stop()
        thread.join(timeout=consumer.wait + consumer.grace + 10)
        assert not thread.is_alive(), "run() did not return after stop()"
    assert not errors, errors


def ends(consumer_ends: list[tuple[str, str, str | None]]) -> Callable[..., None]:
    def on_end(job: dict, outcome: str, message: str | None) -> None:
        consumer_ends.append((job["uuid"], outcome, message))

    return on_end


def test_the_handlers_return_value_completes_the_job(server, admin, action):
    seen: list[tuple[dict, int]] = []
    finished: list[tuple[str, str, str | None]] = []

    def double(context: JobContext) -> dict:
        seen.append((context.params, context.attempt))
        return {"doubled": context.params["n"] * 2}

    consumer = Consumer(server.client("admin"), [action], double, wait=1, on_end=ends(finished))
    with consuming(consumer):
        jobs = [admin.submit_job(action, {"n": n}) for n in (1, 2)]
        done = [admin.wait_for_job(job["uuid"], timeout=20) for job in jobs]
    assert [(job["status"], job["result"]) for job in done] == [
        ("completed", {"doubled": 2}),
        ("completed", {"doubled": 4}),
    ]
    assert seen == [({"n": 1}, 1), ({"n": 2}, 1)]
    assert finished == [(job["uuid"], "completed", None) for job in jobs]
    history = admin.job_history(jobs[0]["uuid"])
    assert [(event["event"], event["by"]) for event in history][-2:] == [
        ("started", "admin"),
        ("completed", "admin"),
    ]


def test_checkins_keep_the_lease_of_a_job_that_runs_longer_than_it(server, admin, action):
    finished: list[tuple[str, str, str | None]] = []
    claimed: list[str] = []

    def slow(context: JobContext) -> dict:
        claimed.append(context.job["lease"]["expires"])
        deadline = time.monotonic() + 1.5 * LEASE
        while time.monotonic() < deadline:
            context.check()
            context.wait(0.05)
        return {"slow": True}

    consumer = Consumer(server.client("admin"), [action], slow, wait=1, on_end=ends(finished))
    with consuming(consumer):
        uuid = admin.submit_job(action, {})["uuid"]
        done = admin.wait_for_job(uuid, timeout=30)
    assert (done["status"], done["result"]) == ("completed", {"slow": True})
    assert finished == [(uuid, "completed", None)]
    # It completed after the lease its claim gave had run out.
    first_expiry = dt.datetime.fromisoformat(claimed[0].replace("Z", "+00:00"))
    completed = dt.datetime.fromisoformat(done["finished"].replace("Z", "+00:00"))
    assert completed > first_expiry


class DiskFull(Exception):
    pass


def test_an_exception_fails_the_job_with_its_class_name(server, admin, action):
    def full(context: JobContext) -> dict:
        raise DiskFull("no room left on /data")

    with consuming(Consumer(server.client("admin"), [action], full, wait=1)):
        job = admin.submit_job(action, {})
        failed = admin.wait_for_job(job["uuid"], timeout=20)
    assert failed["status"] == "failed"
    assert failed["error"] == {"type": "DiskFull", "message": "no room left on /data"}
    [line] = admin.job_log(job["uuid"])
    assert line["level"] == "error"
    assert line["message"].startswith("Traceback (most recent call last):")
    assert line["message"].endswith("DiskFull: no room left on /data")


def test_progress_and_log_lines_go_with_the_checkins_while_the_job_runs(server, admin, action):
    seen_by_the_api = threading.Event()

    def report(context: JobContext) -> dict:
        context.progress(40, "batch 2 of 5")
        context.log("batch 2 indexed")
        context.log("slow disk", "warning")
        # The test sees them through the API before the handler goes on: a check-in took
        # them, not the end of the job.
        assert seen_by_the_api.wait(20)
        context.log("done")
        return {}

    with consuming(Consumer(server.client("admin"), [action], report, wait=1)):
        job = admin.submit_job(action, {})
        uuid = job["uuid"]
        until(lambda: admin.get_job(uuid)["progress"], "the progress")
        assert admin.get_job(uuid)["progress"] == {"percent": 40, "message": "batch 2 of 5"}
        lines = until(lambda: len(admin.job_log(uuid)) >= 2 and admin.job_log(uuid), "the log")
        assert admin.get_job(uuid)["status"] == "running"
        seen_by_the_api.set()
        assert admin.wait_for_job(uuid, timeout=20)["status"] == "completed"
    assert [(line["level"], line["message"]) for line in lines] == [
        ("info", "batch 2 indexed"),
        ("warning", "slow disk"),
    ]
    # The line logged after the last check-in went with a check-in before the completion.
    assert [line["message"] for line in admin.job_log(uuid)][-1] == "done"


def test_an_abort_makes_check_raise_and_nothing_is_reported(server, admin, action):
    raised: list[BaseException] = []
    finished: list[tuple[str, str, str | None]] = []

    def loop(context: JobContext) -> dict:
        try:
            while True:
                context.check()
                context.wait(0.05)
        except BaseException as exc:
            raised.append(exc)
            raise

    consumer = Consumer(server.client("admin"), [action], loop, wait=1, on_end=ends(finished))
    with consuming(consumer):
        uuid = admin.submit_job(action, {})["uuid"]
        admin.wait_for_job(uuid, ("running",), timeout=20)
        admin.abort_job(uuid)
        until(lambda: raised, "check() to raise")
        until(lambda: not consumer.running_jobs(), "the handler to return")
    assert [type(exc) for exc in raised] == [JobAborted]
    assert finished == [(uuid, "aborted", "the job was aborted")]
    job = admin.get_job(uuid)
    assert (job["status"], job.get("error")) == ("aborted", None)
    assert [event["event"] for event in admin.job_history(uuid)][-1] == "aborted"


def test_a_stopped_job_keeps_its_checkpoint_and_resumes_from_it(server, admin, action):
    define(admin, action, resumable=True)
    checkpoints: list[Any] = []

    def resumable(context: JobContext) -> dict:
        checkpoints.append(context.checkpoint)
        if context.checkpoint is not None:
            return {"resumed_from": context.checkpoint}
        context.save_checkpoint({"batch": 3})
        while True:
            context.check()  # raises JobStopped once the stop reaches a check-in
            context.wait(0.05)

    with consuming(Consumer(server.client("admin"), [action], resumable, wait=1)):
        uuid = admin.submit_job(action, {})["uuid"]
        admin.wait_for_job(uuid, ("running",), timeout=20)
        admin.stop_job(uuid)
        assert admin.wait_for_job(uuid, ("stopped",), timeout=20)["status"] == "stopped"
        admin.resume_job(uuid)
        done = admin.wait_for_job(uuid, timeout=20)
    assert (done["status"], done["attempt"]) == ("completed", 2)
    assert done["result"] == {"resumed_from": {"batch": 3}}
    assert checkpoints == [None, {"batch": 3}]


def test_a_job_stopped_is_raised_by_check_only_after_a_stop_request(server, admin, action):
    def stops(context: JobContext) -> dict:
        raise JobStopped("no one asked")

    with consuming(Consumer(server.client("admin"), [action], stops, wait=1)):
        uuid = admin.submit_job(action, {})["uuid"]
        failed = admin.wait_for_job(uuid, timeout=20)
    assert failed["error"] == {"type": "JobStopped", "message": "no one asked"}


def test_stop_lets_the_running_jobs_end_within_the_grace(server, admin, action):
    may_end = threading.Event()

    def waits(context: JobContext) -> dict:
        assert may_end.wait(20)
        return {"ended": True}

    consumer = Consumer(server.client("admin"), [action], waits, wait=1, grace=20)
    with consuming(consumer) as thread:
        uuid = admin.submit_job(action, {})["uuid"]
        until(lambda: consumer.running_jobs() == [uuid], "the handler to start")
        consumer.stop()
        # Stopped, run() waits for the job; the job is still this consumer's.
        assert consumer.running_jobs() == [uuid]
        assert thread.is_alive()
        may_end.set()
        thread.join(timeout=20)
        assert not thread.is_alive()
    done = admin.get_job(uuid)
    assert (done["status"], done["result"]) == ("completed", {"ended": True})


class ClaimWatcher(Client):
    """A client that says when a claim has set off (the request itself is the real one)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.claiming = threading.Event()

    def claim_jobs(self, *args: Any, **kwargs: Any) -> list[dict]:
        self.claiming.set()
        return super().claim_jobs(*args, **kwargs)


def test_a_job_that_a_waiting_claim_brings_after_the_stop_is_released(server, admin, action):
    finished: list[tuple[str, str, str | None]] = []
    client = ClaimWatcher(server.url, admin.token)
    handled: list[str] = []
    consumer = Consumer(
        client, [action], lambda c: handled.append(c.uuid), wait=5, on_end=ends(finished)
    )
    with consuming(consumer):
        assert client.claiming.wait(20)
        consumer.stop()
        # The claim in flight waits on, and takes the job submitted now.
        uuid = admin.submit_job(action, {})["uuid"]
        until(lambda: finished, "the job to be released")
    assert finished == [(uuid, "released", "the consumer stopped before the job ended")]
    assert handled == []
    job = admin.get_job(uuid)
    assert (job["status"], job["attempt"]) == ("created", 2)


class CountingClient(Client):
    """A client that counts its requests (each is still sent) by method and path."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[str] = []

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        self.sent.append(f"{method} {path}")
        return super().request(method, path, **kwargs)


def test_jobs_that_end_together_are_completed_together(server, admin, action):
    """The completions of jobs that end while another's is on its way go in one batch
    complete; each job still gets its own outcome: a result the action's schema refuses
    fails its job alone, as one that is not JSON does."""
    define(
        admin,
        action,
        result={"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
    )
    n = 20
    together = threading.Barrier(n)

    def numbered(context: JobContext) -> dict:
        together.wait(timeout=30)
        k = context.params["k"]
        return {"n": "many"} if k == 3 else {"n": object()} if k == 7 else {"n": k}

    jobs = admin.submit_jobs([{"params": {"action": action, "k": k}} for k in range(n)])
    client = CountingClient(server.url, admin.token)
    finished: list[tuple[str, str, str | None]] = []
    consumer = Consumer(client, [action], numbered, concurrency=n, wait=1, on_end=ends(finished))
    with consuming(consumer):
        until(lambda: len(finished) == n, f"the {n} jobs to end", 60)
    done = {job["uuid"]: admin.get_job(job["uuid"]) for job in jobs}
    outcomes = [(done[job["uuid"]]["status"], done[job["uuid"]]["result"]) for job in jobs]
    assert outcomes == [
        ("failed", {}) if k in (3, 7) else ("completed", {"n": k}) for k in range(n)
    ]
    assert done[jobs[3]["uuid"]]["error"]["type"] == "InvalidResult"
    assert "result" in done[jobs[3]["uuid"]]["error"]["message"]
    assert done[jobs[7]["uuid"]]["error"]["type"] == "TypeError"
    assert "not JSON" in done[jobs[7]["uuid"]]["error"]["message"]
    completes = [sent for sent in client.sent if sent.endswith("complete")]
    assert set(completes) == {"POST /@jobs/@complete"}
    # 19 jobs sent a completion (7's never could); 3's was refused in its batch.
    assert len(completes) <= 19 // 2


CONSUMER_SCRIPT = textwrap.dedent(
    """
    import sys

    from nick_jobs_client import Client, Consumer

    url, token, action, grace = sys.argv[1:]


    def busy(context):
        # Works on through the stop of the consumer, until the job is released.
        print("running", context.uuid, flush=True)
        while not context.wait(0.05):
            pass
        context.check()


    def on_end(job, outcome, message):
        print(outcome, job["uuid"], flush=True)


    consumer = Consumer(
        Client(url, token), [action], busy, grace=float(grace), wait=1, on_end=on_end
    )
    consumer.run(handle_signals=True)
    print("run returned", flush=True)
    """
)


@contextlib.contextmanager
def consumer_process(
    server: LiveServer, admin: Client, action: str, grace: float, tmp_path
) -> Iterator[subprocess.Popen[str]]:
    """A process running :data:`CONSUMER_SCRIPT`; once it has printed that its handler
    runs, the body goes on."""
    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER_SCRIPT)
    process = subprocess.Popen(
        [sys.executable, str(script), server.url, admin.token, action, str(grace)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        stop_process(process)


def test_sigterm_stops_a_consumer_process_which_releases_the_job_after_the_grace(
    server, admin, action, tmp_path
):
    uuid = admin.submit_job(action, {})["uuid"]
    with consumer_process(server, admin, action, 1, tmp_path) as process:
        assert process.stdout is not None
        assert process.stdout.readline() == f"running {uuid}\n"
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert out == f"released {uuid}\nrun returned\n"
    assert "releasing 1 job(s) still running after the 1 s grace" in err
    job = admin.get_job(uuid)
    assert (job["status"], job["attempt"]) == ("created", 2)


def test_a_second_sigterm_ends_the_grace_at_once(server, admin, action, tmp_path):
    uuid = admin.submit_job(action, {})["uuid"]
    with consumer_process(server, admin, action, 600, tmp_path) as process:
        assert process.stdout is not None
        assert process.stdout.readline() == f"running {uuid}\n"
        process.send_signal(signal.SIGTERM)
        assert process.stderr is not None
        assert process.stderr.readline().startswith("stopping: no more claims;")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert out == f"released {uuid}\nrun returned\n"
    assert admin.get_job(uuid)["status"] == "created"


def test_progress_and_log_lines_reach_the_server_within_seconds(server, admin):
    """Reports go with a check-in within about a second, not a third of the lease later:
    the job's stream and the dashboard follow a remote job as they follow a Python one."""
    name = "t-reports-soon"
    define(admin, name, lease=300)  # check-ins every 100 s, but for reports
    release = threading.Event()

    def slow(context: JobContext) -> dict:
        context.progress(30, "a third of the way")
        context.log("first batch done")
        release.wait(30)
        return {}

    consumer = Consumer(server.client("admin"), [name], slow, wait=1)
    with consuming(consumer):
        job = admin.submit_job(name)
        try:
            running = until(
                lambda: (got := admin.get_job(job["uuid"]))["progress"] and got,
                "the progress reported",
                timeout=10,
            )
            assert running["status"] == "running"
            assert running["progress"] == {"percent": 30, "message": "a third of the way"}
            lines = until(lambda: admin.job_log(job["uuid"]), "the log line", timeout=10)
            assert [line["message"] for line in lines] == ["first batch done"]
        finally:
            release.set()
        admin.wait_for_job(job["uuid"], timeout=20)
