"""The client's distribution as a user of the command line alone gets it: ``python -m
build clients/python``, then the wheel installed in a fresh virtualenv with no package
index at all, away from the checkout.

The wheel holds nick_jobs_client alone and requires nothing; the installed ``nick-jobs``
tells its version, has the client commands and none of the server's, and talks to a live
server (the checkout's, run by the test): it logs in, submits a job, follows it to its end
and lists it.

Slow (about ten seconds): one build, one virtualenv, one ``pip install`` for the module.
"""

from __future__ import annotations

import json
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from nick_jobs_client.cli.commands import COMMANDS
from tests.client.test_client import USERS, live_server
from tests.conftest import ROOT
from tests.test_packaging import (
    VERSION,
    checked,
    clean_environ,
    files_under,
    listed_commands,
    one_build_at_a_time,
    run,
)

pytestmark = pytest.mark.slow

CLIENT = ROOT / "clients" / "python"
PACKAGE = CLIENT / "nick_jobs_client"
DIST_INFO = f"nick_jobs_client-{VERSION}.dist-info"
SDIST_ROOT = f"nick_jobs_client-{VERSION}"
SERVER_COMMANDS = {"serve", "migrate", "worker", "sweep", "users", "tokens", "scheduler"}


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """The client's sdist and wheel, the wheel built from the unpacked sdist."""
    out = tmp_path_factory.mktemp("client-dist")
    with one_build_at_a_time():
        checked(sys.executable, "-m", "build", "--outdir", out, CLIENT, timeout=300, cwd=CLIENT)
    return out


@pytest.fixture(scope="module")
def wheel(dist) -> Path:
    (found,) = dist.glob("nick_jobs_client-*.whl")
    return found


@pytest.fixture(scope="module")
def sdist(dist) -> Path:
    (found,) = dist.glob("nick_jobs_client-*.tar.gz")
    return found


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel) -> Path:
    """A fresh virtualenv with the client's wheel installed, and no index to fetch any
    dependency from: the install succeeds only if there is none."""
    home = tmp_path_factory.mktemp("client-venv") / "env"
    checked(sys.executable, "-m", "venv", "--without-pip", home)
    checked(
        *(sys.executable, "-m", "pip", "--python", home / "bin" / "python", "install"),
        *("--quiet", "--disable-pip-version-check", "--no-input", "--no-index", wheel),
        timeout=300,
    )
    return home / "bin"


# --- the distributions -------------------------------------------------------------------


def test_the_client_wheel_holds_its_package_alone_and_requires_nothing(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        contents = {name: zf.read(name) for name in names}
    assert {n.split("/")[0] for n in names} == {"nick_jobs_client", DIST_INFO}
    modules = {f"nick_jobs_client/{rel}" for rel in files_under(PACKAGE) if rel.endswith(".py")}
    assert modules
    assert modules | {"nick_jobs_client/py.typed"} <= names
    licenses = [n for n in names if n.startswith(f"{DIST_INFO}/") and n.endswith("/LICENSE")]
    assert [contents[n] for n in licenses] == [(ROOT / "LICENSE").read_bytes()]
    metadata = contents[f"{DIST_INFO}/METADATA"].decode()
    assert "\nName: nick-jobs-client\n" in metadata
    assert f"\nVersion: {VERSION}\n" in metadata
    assert "Requires-Dist:" not in metadata
    entry_points = contents[f"{DIST_INFO}/entry_points.txt"].decode()
    assert "nick-jobs = nick_jobs_client.cli:main" in entry_points


def test_the_client_sdist_holds_the_package_its_readme_and_license(sdist):
    with tarfile.open(sdist) as tar:
        members = {m.name.removeprefix(f"{SDIST_ROOT}/") for m in tar.getmembers()}
    assert {"README.md", "LICENSE", "pyproject.toml", "nick_jobs_client/py.typed"} <= members
    assert {f"nick_jobs_client/{rel}" for rel in files_under(PACKAGE)} <= members
    assert not [n for n in members if n.split("/")[0] in ("tests", "nick_jobs")]


# --- the command line alone ----------------------------------------------------------------


def test_the_client_alone_is_the_one_distribution_installed(venv, tmp_path):
    code = "import importlib.metadata as m; print(sorted(d.name for d in m.distributions()))"
    assert checked(venv / "python", "-c", code, cwd=tmp_path).stdout == "['nick-jobs-client']\n"
    proc = run(venv / "python", "-c", "import nick_jobs", cwd=tmp_path)
    assert proc.returncode == 1
    assert "ModuleNotFoundError: No module named 'nick_jobs'" in proc.stderr


def test_the_installed_client_tells_its_version(venv, tmp_path):
    assert checked(venv / "nick-jobs", "--version", cwd=tmp_path).stdout == f"nick-jobs {VERSION}\n"
    code = "import nick_jobs_client as c; print(c.__file__); print(c.__version__)"
    where, version = checked(venv / "python", "-c", code, cwd=tmp_path).stdout.split()
    assert version == VERSION
    assert Path(where).is_relative_to(venv.parent)


def test_the_client_alone_has_the_client_commands_and_not_the_servers(venv, tmp_path):
    proc = checked(venv / "nick-jobs", "--help", cwd=tmp_path)
    assert listed_commands(proc.stdout) == set(COMMANDS)
    for command in SERVER_COMMANDS:
        assert f"\n    {command} " not in proc.stdout, command
    refused = run(venv / "nick-jobs", "migrate", "production.ini", cwd=tmp_path)
    assert refused.returncode == 2
    assert "invalid choice: 'migrate'" in refused.stderr
    assert "Traceback" not in refused.stderr
    # The completion script is made from the same parser.
    script = checked(venv / "nick-jobs", "completion", "bash", cwd=tmp_path).stdout
    assert "submit" in script
    assert "migrate" not in script


def test_the_client_alone_logs_in_submits_follows_and_lists(venv, tmp_path):
    env = {**clean_environ(), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    for name in ("NICK_JOBS_URL", "NICK_JOBS_TOKEN", "APPDATA"):
        env.pop(name, None)
    with live_server(tmp_path) as server:
        password = USERS["admin"][0]

        def nick_jobs(*args: str, stdin: str | None = None):
            return checked(venv / "nick-jobs", *args, cwd=tmp_path, env=env, input=stdin)

        nick_jobs("login", server.url, "admin", stdin=password + "\n")
        # The server the login remembered is the one the next commands talk to.
        submitted = nick_jobs("submit", "dummy", "steps=2", "--title", "Packaged", "--stream")
        assert "completed" in submitted.stdout
        (job,) = json.loads(nick_jobs("list", "-o", "json").stdout)
        assert (job["title"], job["status"], job["actor"]) == ("Packaged", "completed", "admin")
