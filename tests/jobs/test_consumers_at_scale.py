"""Eight real consumer processes drain 5,000 remote jobs through a real API process on
PostgreSQL, one of them killed while it holds a job: every job completes exactly once,
none is lost."""

from __future__ import annotations

import collections
import http.client
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from nick_jobs import main
from nick_jobs.db import get_engine
from nick_jobs.jobs.model import Job
from nick_jobs.users import tokens
from nick_jobs.worker.sweeper import Sweeper
from tests.conftest import ROOT, api_only_settings, pserve, reset_database, stop_process

# Eight consumer processes and an API process at full speed: run alone (make test runs
# the exclusive tests after the others), where their leases and deadlines mean what they say.
pytestmark = pytest.mark.exclusive

JOBS = 5000
CONSUMERS = 8
# Long enough for a consumer stalled by a loaded machine to complete the ten jobs it
# claimed before the sweeper rescues them (a 409 here fails the test): the killed
# consumer's job is rescued a lease after its claim, while the others drain the rest.
LEASE = 15


@pytest.fixture
def server(pg_url, tmp_path):
    engine = get_engine(pg_url)
    reset_database(engine)
    settings = api_only_settings(pg_url)
    with pserve(settings, tmp_path, threads=16) as port:
        yield f"http://127.0.0.1:{port}", settings, engine
    engine.dispose()


def test_eight_consumers_run_every_job_once_though_one_is_killed(server, tmp_path):
    url, settings, engine = server
    # The same settings in this process: for a token, and a sweeper of its own.
    registry = main({}, **settings).registry
    token = tokens.issue(registry["nick_jobs.settings"], "admin", "Admin")
    conn = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=60)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(method: str, path: str, body) -> tuple[int, bytes]:
        conn.request(method, path, json.dumps(body), headers)
        response = conn.getresponse()
        return response.status, response.read()

    definition = {"params": {"type": "object"}, "lease": LEASE, "max_retries": 1}
    assert call("PUT", "/@job-actions/noop", definition)[0] == 201
    for start in range(0, JOBS, 1000):
        bodies = [{"params": {"action": "noop", "n": n}} for n in range(start, start + 1000)]
        assert call("POST", "/@jobs", bodies)[0] == 201

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    files = [tmp_path / f"consumer-{n}.txt" for n in range(CONSUMERS)]
    command = [sys.executable, "-m", "tests.jobs.consumer_process", url, token, "noop"]
    hanging = subprocess.Popen([*command, str(files[0]), "--hang"], env=env, cwd=ROOT)
    # The one that will be killed holds a job before the others start.
    deadline = time.monotonic() + 30
    while not files[0].exists() or "holding" not in files[0].read_text():
        assert time.monotonic() < deadline, "the hanging consumer never took a job"
        assert hanging.poll() is None
        time.sleep(0.05)
    held = files[0].read_text().split()[1]
    others = [subprocess.Popen([*command, str(f)], env=env, cwd=ROOT) for f in files[1:]]
    hanging.send_signal(signal.SIGKILL)
    hanging.wait()

    sweeper = Sweeper(registry)
    started = time.monotonic()
    deadline = started + 120
    while True:
        with engine.connect() as db:
            done = db.execute(
                sa.select(sa.func.count()).select_from(Job).where(Job.status == "completed")
            ).scalar_one()
        if done == JOBS:
            break
        assert time.monotonic() < deadline, f"{done} of {JOBS} completed"
        sweeper.run_once()  # rescues the killed consumer's job once its lease has run out
        time.sleep(0.2)
    for proc in others:
        assert proc.poll() is None  # still claiming: none failed on the way
        stop_process(proc)

    completions = collections.Counter()
    for f in files[1:]:
        for line in f.read_text().splitlines():
            what, uuid, *_ = line.split()
            assert what == "completed", line
            completions[uuid] += 1
    assert len(completions) == JOBS
    assert set(completions.values()) == {1}
    # The killed consumer's job ran again, as its second attempt, and completed.
    with engine.connect() as db:
        attempt, status = db.execute(
            sa.select(Job.attempt, Job.status).where(Job.uuid == held)
        ).one()
    assert (attempt, status) == (2, "completed")
