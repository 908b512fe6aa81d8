"""What ``pserve`` runs with the shipped ini files: waitress, through nick-jobs' server
factory (which lets NICK_JOBS_LISTEN and NICK_JOBS_THREADS win), one process; and the
systemd template that runs several ``pserve`` processes on ports of their own
(deploy/systemd/nick-jobs@.service). Several processes on one port: tests/ops/test_gunicorn.py.
"""

from __future__ import annotations

import configparser
import http.client
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from waitress import create_server

from nick_jobs.db import get_engine, migrations
from nick_jobs.settings import parse
from nick_jobs.users import tokens
from tests.conftest import ROOT, base_settings, reset_database, stop_process, write_ini
from tests.netutil import free_port

BIN = Path(sys.executable).parent
TEMPLATE = ROOT / "deploy" / "systemd" / "nick-jobs@.service"


def server_sections(name: str) -> dict[str, dict[str, str]]:
    parser = configparser.RawConfigParser()
    parser.read(ROOT / name)
    return {s: dict(parser[s]) for s in parser.sections() if s.startswith("server:")}


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


@pytest.mark.parametrize("name", ["production.ini", "development.ini"])
def test_the_shipped_ini_files_serve_with_waitress_and_its_own_settings(name: str) -> None:
    settings = server_sections(name)["server:main"]
    assert settings.pop("use") == "egg:nick-jobs#main"
    # waitress refuses a setting it does not know: every one left is waitress's own.
    settings["listen"] = "127.0.0.1:0"
    server = create_server(app, **settings)
    server.close()


def wait_answers(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"pserve exited with {proc.returncode}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if sock.recv(100).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"nothing answered on {port} in {timeout} s"
        time.sleep(0.05)


def test_the_systemd_template_runs_pserve_on_the_instance_port(tmp_path: Path) -> None:
    # The template's own command, with production.ini's server sections as shipped and an
    # app on SQLite: only the paths and the instance (the port) are this test's.
    unit = configparser.RawConfigParser(strict=False)
    unit.read(TEMPLATE)
    command = unit["Service"]["ExecStart"]
    port = free_port()
    args = [
        arg.replace("/srv/nick-jobs/.venv/bin/", f"{BIN}/").replace("%i", str(port))
        for arg in shlex.split(command)
    ]
    assert "production.ini" in args, command
    database = tmp_path / "jobs.sqlite"
    engine = get_engine(f"sqlite:///{database}")
    migrations.upgrade(engine)
    reset_database(engine)
    engine.dispose()
    settings = base_settings(
        **{
            "sqlalchemy.url": f"sqlite:///{database}",
            "nick_jobs.broker_url": "stub://",
            "nick_jobs.embedded_worker_threads": "0",
            "nick_jobs.graceful_shutdown": "true",
            "nick_jobs.shutdown_grace": "2",
        }
    )
    ini = write_ini(tmp_path / "production.ini", settings)
    with ini.open("a") as fh:
        for section, values in server_sections("production.ini").items():
            fh.write(f"\n[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()))
    log = tmp_path / "pserve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            args, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=out
        )
    try:
        wait_answers(port, proc)
        # [server:main]'s settings hold: its trusted proxy (this host) says the public
        # scheme and host of the URLs the API writes.
        token = tokens.issue(parse(settings), "admin", "Admin")
        body = json.dumps({"params": {"action": "dummy"}})
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request(
            "POST",
            "/@jobs",
            body,
            {
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "jobs.example.org",
            },
        )
        response = conn.getresponse()
        job = json.loads(response.read())
        conn.close()
        assert response.status == 201, job
        assert job["@id"] == f"https://jobs.example.org/@jobs/{job['uuid']}"
        # SIGTERM (what systemctl stop sends) drains it and pserve exits 0.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log.read_text()
    finally:
        stop_process(proc)
