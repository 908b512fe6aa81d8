"""``NICK_JOBS_LISTEN`` and ``NICK_JOBS_THREADS`` over the ini's ``[server:main]``
(nick_jobs/ops/serve.py): a real ``pserve`` listens where the variable says, on the ini's
address when it is unset, and refuses a bad value with one line before the app starts;
gunicorn with deploy/gunicorn.conf.py takes the same variables."""

from __future__ import annotations

import configparser
import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import waitress

from nick_jobs.ops.serve import server_settings
from nick_jobs.settings import ConfigurationError
from tests.conftest import ROOT, base_settings, stop_process, write_ini
from tests.netutil import free_port

PSERVE = Path(sys.executable).with_name("pserve")
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py")]


def environ(**variables: str) -> dict[str, str]:
    """This process's environment without any NICK_JOBS_* of its own, plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NICK_JOBS_")}
    return {**env, "PYTHONPATH": str(ROOT), **variables}


def server_ini(directory: Path, port: int) -> Path:
    """An app on SQLite under ``directory`` (migrated when it starts) served by
    ``egg:nick-jobs#main`` on ``127.0.0.1:port``, logging at INFO."""
    settings = base_settings(
        **{
            "sqlalchemy.url": f"sqlite:///{directory / 'jobs.sqlite'}",
            "nick_jobs.broker_url": "stub://",
            "nick_jobs.embedded_worker_threads": "0",
            "nick_jobs.auto_migrate": "true",
        }
    )
    ini = write_ini(directory / "api.ini", settings)
    ini.write_text(ini.read_text().replace("level = WARN", "level = INFO"))
    with ini.open("a") as fh:
        fh.write(
            f"\n[server:main]\nuse = egg:nick-jobs#main\nlisten = 127.0.0.1:{port}\nthreads = 8\n"
        )
    return ini


def start(
    ini: Path, log: Path, command: list[str] | None = None, **variables: str
) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen(
            command or [str(PSERVE), str(ini)],
            cwd=ini.parent,
            env=environ(**variables),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_healthy(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    """Return once ``GET /healthz`` on ``port`` answers 200."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"pserve exited with {proc.returncode}:\n{log.read_text()}"
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"nothing answered on {port}:\n{log.read_text()}"
        time.sleep(0.05)


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def test_nick_jobs_listen_moves_pserve_off_the_ini_address(tmp_path: Path) -> None:
    ini_port, env_port = free_port(), free_port()
    assert ini_port != env_port
    ini, log = server_ini(tmp_path, ini_port), tmp_path / "pserve.log"
    proc = start(ini, log, NICK_JOBS_LISTEN=f"127.0.0.1:{env_port}")
    try:
        wait_healthy(env_port, proc, log)
        assert refused(ini_port)
    finally:
        stop_process(proc)


def test_unset_or_empty_the_ini_address_holds(tmp_path: Path) -> None:
    port = free_port()
    ini, log = server_ini(tmp_path, port), tmp_path / "pserve.log"
    # Empty counts as unset, as for every NICK_JOBS_* variable.
    proc = start(ini, log, NICK_JOBS_LISTEN="", NICK_JOBS_THREADS="")
    try:
        wait_healthy(port, proc, log)
        # The app started and migrated its database: what a bad value below must prevent.
        assert (tmp_path / "jobs.sqlite").exists()
    finally:
        stop_process(proc)
    assert f"waitress on 127.0.0.1:{port} with 8 threads\n" in log.read_text()


def test_the_start_logs_the_address_and_threads_the_environment_gives(tmp_path: Path) -> None:
    port = free_port()
    ini, log = server_ini(tmp_path, free_port()), tmp_path / "pserve.log"
    proc = start(ini, log, NICK_JOBS_LISTEN=f"127.0.0.1:{port}", NICK_JOBS_THREADS="3")
    try:
        wait_healthy(port, proc, log)
    finally:
        stop_process(proc)
    assert (
        f"waitress on 127.0.0.1:{port} with 3 threads "
        "(from NICK_JOBS_LISTEN and NICK_JOBS_THREADS)\n"
    ) in log.read_text()


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"NICK_JOBS_LISTEN": "nonsense"},
            "nick-jobs: NICK_JOBS_LISTEN takes host:port addresses separated by spaces "
            "(*:8080, 127.0.0.1:8081, [::1]:8080), not 'nonsense'",
        ),
        (
            {"NICK_JOBS_LISTEN": "127.0.0.1:http"},
            "nick-jobs: NICK_JOBS_LISTEN takes host:port addresses separated by spaces "
            "(*:8080, 127.0.0.1:8081, [::1]:8080), not '127.0.0.1:http'",
        ),
        (
            {"NICK_JOBS_LISTEN": "no-such-host.invalid:8080"},
            "nick-jobs: NICK_JOBS_LISTEN: no address for the host of 'no-such-host.invalid:8080'",
        ),
        (
            {"NICK_JOBS_THREADS": "many"},
            "nick-jobs: NICK_JOBS_THREADS takes a whole number above 0, not 'many'",
        ),
    ],
)
def test_a_bad_value_stops_the_start_with_one_line_naming_the_variable(
    tmp_path: Path, variables: dict[str, str], message: str
) -> None:
    ini = server_ini(tmp_path, free_port())
    result = subprocess.run(
        [str(PSERVE), str(ini)],
        cwd=tmp_path,
        env=environ(**variables),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr == message + "\n"
    # It stopped before loading the app, which would have migrated its database.
    assert not (tmp_path / "jobs.sqlite").exists()


def test_the_variables_replace_wherever_the_section_says_to_listen() -> None:
    section = {"host": "127.0.0.1", "port": "8080", "threads": "8", "channel_timeout": "75"}
    assert server_settings(section, {}) == section
    assert server_settings(
        section, {"NICK_JOBS_LISTEN": "127.0.0.1:8081 [::1]:8081", "NICK_JOBS_THREADS": "16"}
    ) == {"listen": "127.0.0.1:8081 [::1]:8081", "threads": "16", "channel_timeout": "75"}
    with pytest.raises(ConfigurationError, match="NICK_JOBS_LISTEN"):
        server_settings(section, {"NICK_JOBS_LISTEN": ":8080"})
    with pytest.raises(ConfigurationError, match="NICK_JOBS_THREADS"):
        server_settings(section, {"NICK_JOBS_THREADS": "0"})


def app(environ, start_response):  # type: ignore[no-untyped-def]
    start_response("200 OK", [("Content-Length", "0")])
    return [b""]


@pytest.mark.parametrize("name", ["production.ini", "development.ini"])
def test_the_shipped_ini_files_serve_with_this_server_and_waitress_settings(name: str) -> None:
    parser = configparser.RawConfigParser()
    parser.read(ROOT / name)
    section = dict(parser["server:main"])
    assert section.pop("use") == "egg:nick-jobs#main"
    # waitress refuses a setting it does not know: every one left is waitress's own.
    settings = server_settings(section, {"NICK_JOBS_LISTEN": "127.0.0.1:0"})
    waitress.create_server(app, **settings).close()


def test_gunicorn_with_the_deploy_config_listens_where_nick_jobs_listen_says(
    tmp_path: Path,
) -> None:
    port = free_port()
    ini, log = server_ini(tmp_path, free_port()), tmp_path / "gunicorn.log"
    command = [*GUNICORN, "--paste", str(ini), "-w", "1"]
    proc = start(ini, log, command, NICK_JOBS_LISTEN=f"127.0.0.1:{port}")
    try:
        wait_healthy(port, proc, log)
    finally:
        stop_process(proc)
    assert f"Listening at: http://127.0.0.1:{port} " in log.read_text()


def test_gunicorn_refuses_a_bad_value_with_the_same_line(tmp_path: Path) -> None:
    ini = server_ini(tmp_path, free_port())
    result = subprocess.run(
        [*GUNICORN, "--paste", str(ini), "-w", "1"],
        cwd=tmp_path,
        env=environ(NICK_JOBS_LISTEN="nonsense"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        "nick-jobs: NICK_JOBS_LISTEN takes host:port addresses separated by spaces "
        "(*:8080, 127.0.0.1:8081, [::1]:8080), not 'nonsense'\n"
    )
