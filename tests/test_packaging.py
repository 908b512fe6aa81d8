"""The package as a new user gets it: ``python -m build``, then the wheel installed bare in
a fresh virtualenv, away from the checkout.

The wheel holds nick_jobs (its migrations and the dashboard's files among its data) and
the client's package, nick_jobs_client, which it carries from clients/python; the source
distribution holds no benchmarks or tests, and the installed commands work:
``nick-jobs --version``, ``nick-jobs --help`` with the client's commands and the server's,
``nick-jobs migrate`` on a SQLite ini, ``nick-jobs users``, and ``pserve`` with the
embedded worker running a ``dummy`` job over HTTP. The bare install
has no PostgreSQL driver and no broker client, and says which extra a setting needs.

Slow (about half a minute): one build, one virtualenv, one ``pip install`` for the module.
"""

from __future__ import annotations

import configparser
import contextlib
import fcntl
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from nick_jobs_client.cli.commands import COMMANDS
from tests.conftest import ROOT, stop_process
from tests.netutil import free_port

pytestmark = pytest.mark.slow


def setup_cfg_version() -> str:
    """The one place the version is written."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg["metadata"]["version"]


VERSION = setup_cfg_version()
DIST_INFO = f"nick_jobs-{VERSION}.dist-info"
SDIST_ROOT = f"nick_jobs-{VERSION}"
STATIC = ROOT / "nick_jobs" / "dashboard" / "static"
CLIENT_PACKAGE = ROOT / "clients" / "python" / "nick_jobs_client"
SERVER_COMMANDS = {"serve", "migrate", "worker", "sweep", "users", "tokens", "scheduler"}
ADMIN_PASSWORD = "packaged-admin-pw"


def clean_environ() -> dict[str, str]:
    """The environment of a user's shell: no NICK_JOBS_* overrides, and nothing that would
    let the checkout (or the test virtualenv) be imported instead of the installed wheel."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSAFEPATH"}
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("NICK_JOBS_")}


def run(*argv: str | Path, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("env", clean_environ())
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, **kwargs
    )


def checked(*argv: str | Path, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    proc = run(*argv, timeout=timeout, **kwargs)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def files_under(folder: Path) -> dict[str, Path]:
    """Every file under ``folder`` by its path relative to it, through symlinks (which
    the distributions must carry as the files they point to)."""
    found = {}
    for dirpath, _dirs, names in os.walk(folder, followlinks=True):
        for name in names:
            path = Path(dirpath, name)
            if "__pycache__" not in path.parts and path.suffix != ".pyc":
                found[path.relative_to(folder).as_posix()] = path
    return found


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """The sdist and the wheel, as ``python -m build`` makes them: the wheel is built from
    the unpacked sdist, so what the sdist leaves out the wheel can't have (and the
    checkout gets no build/ folder)."""
    out = tmp_path_factory.mktemp("dist")
    with one_build_at_a_time():
        checked(sys.executable, "-m", "build", "--outdir", out, ROOT, timeout=300, cwd=ROOT)
    return out


@contextlib.contextmanager
def one_build_at_a_time() -> Iterator[None]:
    """Builds take turns across the test processes (pytest-xdist): two builds of one
    source tree at once share its egg-info and staging folders, and one of them fails."""
    with (Path(tempfile.gettempdir()) / "nick-jobs-tests-build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="module")
def wheel(dist) -> Path:
    (found,) = dist.glob("nick_jobs-*.whl")
    return found


@pytest.fixture(scope="module")
def sdist(dist) -> Path:
    (found,) = dist.glob("nick_jobs-*.tar.gz")
    return found


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel) -> Path:
    """A fresh virtualenv with the wheel installed bare, no extras. Its pip is this one's
    (``pip --python``), which saves bootstrapping a pip into it."""
    home = tmp_path_factory.mktemp("venv") / "env"
    checked(sys.executable, "-m", "venv", "--without-pip", home)
    checked(
        *(sys.executable, "-m", "pip", "--python", home / "bin" / "python", "install"),
        *("--quiet", "--disable-pip-version-check", "--no-input", "--prefer-binary", wheel),
        timeout=300,
    )
    return home / "bin"


@pytest.fixture
def workdir(tmp_path) -> Path:
    """Where the installed commands run: nowhere near the checkout."""
    return tmp_path


# --- the distributions -------------------------------------------------------------------


def test_the_wheel_holds_the_package_and_the_client_with_their_data(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        contents = {name: zf.read(name) for name in names}
    assert {n.split("/")[0] for n in names} == {"nick_jobs", "nick_jobs_client", DIST_INFO}
    assert not [n for n in names if n.startswith(("benchmarks/", "tests/", "alembic/"))]
    assert not [n for n in names if n.startswith("clients/")]
    # Every module of the checkout, the migrations among them (nick_jobs/alembic is the
    # top-level alembic/ folder).
    modules = {f"nick_jobs/{rel}" for rel in files_under(ROOT / "nick_jobs") if rel.endswith(".py")}
    assert modules <= names
    # The client's package, each file with its bytes in clients/python.
    client = files_under(CLIENT_PACKAGE)
    assert "py.typed" in client
    for rel, path in client.items():
        assert contents[f"nick_jobs_client/{rel}"] == path.read_bytes(), rel
    migrations = {
        f"nick_jobs/alembic/versions/{p.name}" for p in ROOT.glob("alembic/versions/*.py")
    }
    assert migrations
    assert migrations | {"nick_jobs/alembic/env.py", "nick_jobs/alembic/script.py.mako"} <= names
    assert "nick_jobs/py.typed" in names
    # licenses/LICENSE with the setuptools of today; dist-info/LICENSE with older ones.
    licenses = [n for n in names if n.startswith(f"{DIST_INFO}/") and n.endswith("/LICENSE")]
    assert [contents[n] for n in licenses] == [(ROOT / "LICENSE").read_bytes()]
    metadata = contents[f"{DIST_INFO}/METADATA"].decode()
    assert f"\nVersion: {VERSION}\n" in metadata
    assert "\nLicense: MIT\n" in metadata
    # It carries the client rather than requiring it: no index need hold nick-jobs-client.
    assert "Requires-Dist: nick-jobs-client" not in metadata
    entry_points = configparser.ConfigParser()
    entry_points.read_string(contents[f"{DIST_INFO}/entry_points.txt"].decode())
    assert entry_points["console_scripts"]["nick-jobs"] == "nick_jobs_client.cli:main"
    assert entry_points["nick_jobs.commands"]["server"] == "nick_jobs.cli.admin:add_server_commands"
    # The bare install has neither the PostgreSQL driver nor a broker client.
    required = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    bare = [line for line in required if "extra ==" not in line]
    assert not [line for line in bare if any(n in line for n in ("psycopg", "redis", "pika"))]
    assert not [line for line in bare if "dramatiq[" in line]
    # The dashboard's files, each with the bytes it has in the checkout: the vendored
    # JavaScript client, a symlink there, is a file of its own here.
    static = files_under(STATIC) if STATIC.is_dir() else {}
    for rel, path in static.items():
        assert contents[f"nick_jobs/dashboard/static/{rel}"] == path.read_bytes(), rel
    if (STATIC / "vendor" / "nick-jobs-client.js").is_symlink():
        assert (
            contents["nick_jobs/dashboard/static/vendor/nick-jobs-client.js"]
            == (ROOT / "clients" / "js" / "index.js").read_bytes()
        )


def test_the_sdist_holds_the_product_without_benchmarks_or_tests(sdist):
    with tarfile.open(sdist) as tar:
        members = {m.name.removeprefix(f"{SDIST_ROOT}/"): m for m in tar.getmembers()}
    assert {n.split("/")[0] for n in members} >= {"nick_jobs", "LICENSE", "CHANGELOG.md"}
    assert not [n for n in members if n.split("/")[0] in ("benchmarks", "tests")]
    # Of clients/, the Python client's package alone, which the wheel carries.
    clients = {n for n in members if n.startswith("clients/") and members[n].isreg()}
    assert clients == {
        f"clients/python/nick_jobs_client/{rel}" for rel in files_under(CLIENT_PACKAGE)
    }
    assert members["nick_jobs/alembic/env.py"].isreg()
    assert members["nick_jobs/py.typed"].isreg()
    for rel in files_under(STATIC) if STATIC.is_dir() else {}:
        assert members[f"nick_jobs/dashboard/static/{rel}"].isreg(), rel


# --- the bare install ----------------------------------------------------------------------


def test_the_installed_package_tells_its_version(venv, workdir):
    proc = checked(venv / "nick-jobs", "--version", cwd=workdir)
    assert proc.stdout == f"nick-jobs {VERSION}\n"
    code = "import nick_jobs; print(nick_jobs.__file__); print(nick_jobs.__version__)"
    where, version = checked(venv / "python", "-c", code, cwd=workdir).stdout.split()
    assert version == VERSION
    assert Path(where).is_relative_to(venv.parent)


def listed_commands(help_text: str) -> set[str]:
    """The commands ``--help`` names in its usage: ``{login,logout,...}``."""
    match = re.search(r"\{([a-z,-]+)\}", help_text)
    assert match, help_text
    return set(match.group(1).split(","))


def test_the_installed_command_has_the_client_commands_and_the_servers(venv, workdir):
    proc = checked(venv / "nick-jobs", "--help", cwd=workdir)
    assert listed_commands(proc.stdout) == set(COMMANDS) | SERVER_COMMANDS
    code = "import nick_jobs_client as c; print(c.__file__); print(c.__version__)"
    where, version = checked(venv / "python", "-c", code, cwd=workdir).stdout.split()
    assert version == VERSION
    assert Path(where).is_relative_to(venv.parent)


def test_the_bare_install_has_no_driver_or_broker_client(venv, workdir):
    optional = ("psycopg", "redis", "pika")
    code = f"import importlib.util as u; print([m for m in {optional!r} if u.find_spec(m)])"
    assert checked(venv / "python", "-c", code, cwd=workdir).stdout == "[]\n"


def write_ini(path: Path, port: int) -> Path:
    path.write_text(
        f"""\
[app:main]
use = egg:nick-jobs
nick_jobs.environment = development
sqlalchemy.url = sqlite:///%(here)s/jobs.sqlite
nick_jobs.broker_url = stub://
nick_jobs.embedded_worker_threads = 2
nick_jobs.jwt_secret = packaging-test-secret-{"x" * 32}
# Only `nick-jobs migrate` and `nick-jobs users` below prepare the database.
nick_jobs.auto_migrate = false
nick_jobs.bootstrap_admin = false

[server:main]
use = egg:waitress#main
listen = 127.0.0.1:{port}
threads = 8

[alembic]
script_location = nick_jobs:alembic

[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARN
handlers = console

[handler_console]
class = StreamHandler
args = (sys.stderr,)
formatter = generic

[formatter_generic]
format = %%(asctime)s %%(levelname)s [%%(name)s] %%(message)s
"""
    )
    return path


@pytest.mark.parametrize(
    ("variable", "url", "command", "extra"),
    [
        (
            "NICK_JOBS_DATABASE_URL",
            "postgresql+psycopg://nick@127.0.0.1/x",
            "migrate",
            "postgresql",
        ),
        ("NICK_JOBS_BROKER_URL", "redis://127.0.0.1:6379/0", "worker", "redis"),
        ("NICK_JOBS_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/", "worker", "rabbitmq"),
    ],
)
def test_a_setting_that_needs_an_extra_says_which(venv, workdir, variable, url, command, extra):
    ini = write_ini(workdir / "try.ini", free_port())
    proc = run(
        venv / "nick-jobs", command, ini, cwd=workdir, env={**clean_environ(), variable: url}
    )
    assert proc.returncode == 2, proc.stderr
    # The last line: what comes before is Pyramid's warning about pkg_resources, which
    # the newest setuptools prints (Pyramid 2.1 imports it).
    message = proc.stderr.splitlines()[-1]
    assert message.startswith("nick-jobs: "), proc.stderr
    assert message.endswith(f"pip install 'nick-jobs[{extra}]'"), proc.stderr
    assert "Traceback" not in proc.stderr


def request_json(url: str, body: dict | None = None, token: str | None = None) -> dict:
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 - http://127.0.0.1
    with urllib.request.urlopen(req, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def wait_until_it_answers(base: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"pserve exited {proc.returncode}:\n{log.read_text()}"
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        assert time.monotonic() < deadline, f"pserve did not answer:\n{log.read_text()}"
        time.sleep(0.1)


def test_the_bare_install_migrates_serves_and_runs_a_job(venv, workdir):
    port = free_port()
    ini = write_ini(workdir / "packaged.ini", port)
    checkout = Config()
    checkout.set_main_option("script_location", str(ROOT / "alembic"))
    head = ScriptDirectory.from_config(checkout).get_current_head()

    migrated = checked(venv / "nick-jobs", "migrate", ini, cwd=workdir)
    assert migrated.stdout.strip() == f"database at revision {head}"
    # The ini names the migrations by package, for the `alembic` command as installed.
    current = checked(venv / "alembic", "-c", ini, "current", cwd=workdir)
    assert current.stdout.split()[0] == head
    checked(
        *(venv / "nick-jobs", "users", "add", ini, "admin"),
        *("--password", ADMIN_PASSWORD, "--role", "Administrator"),
        cwd=workdir,
    )

    log = workdir / "pserve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(venv / "pserve"), str(ini)],
            cwd=workdir,
            env=clean_environ(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_it_answers(base, proc, log, timeout=30)
        token = request_json(f"{base}/@login", {"login": "admin", "password": ADMIN_PASSWORD})[
            "token"
        ]
        params = {"action": "dummy", "steps": 2, "result": {"answer": 42}}
        uuid = request_json(f"{base}/@jobs", {"params": params}, token)["uuid"]
        deadline = time.monotonic() + 30
        while (job := request_json(f"{base}/@jobs/{uuid}", token=token))["status"] != "completed":
            assert job["status"] in ("created", "running"), job
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
        assert job["result"] == {"answer": 42}
        assert job["actor"] == "admin"
    finally:
        stop_process(proc)
