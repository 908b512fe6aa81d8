"""Fixtures of the command-line tests: each module starts its own ``server`` (a live
nick-jobs server, module-scoped); these log in to it and run the console script."""

from __future__ import annotations

from pathlib import Path

import pytest

from nick_jobs_client import Client
from tests.cli.test_client_cli import run_cli
from tests.client.test_client import USERS


@pytest.fixture(scope="module")
def config_home(tmp_path_factory, server) -> Path:
    """A config directory where ``nick-jobs login`` stored an admin token."""
    home = tmp_path_factory.mktemp("config")
    proc = run_cli(server, home, "login", "admin", stdin=USERS["admin"][0] + "\n")
    assert proc.returncode == 0, proc.stderr
    return home


@pytest.fixture
def cli(server, config_home):
    """``cli(*args)``: run ``nick-jobs`` as the logged-in admin."""
    return lambda *args, **kw: run_cli(server, config_home, *args, **kw)


@pytest.fixture(scope="module")
def api(server) -> Client:
    return server.client("admin")
