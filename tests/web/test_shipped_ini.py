"""The ini files the checkout ships (development.ini, production.ini): which pages of
other origins they let call the API (``nick_jobs.cors_origins``), and that the dashboard
is on in both."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
from pyramid.paster import get_appsettings

from nick_jobs.settings import Settings, parse
from tests.conftest import ROOT

DEVELOPMENT = ROOT / "development.ini"
PRODUCTION = ROOT / "production.ini"
# production.ini leaves the secret to the deployment, and refuses to start without one.
A_SECRET = "s" * 64


def shipped(path: Path) -> Settings:
    """The ``[app:main]`` settings of ``path``, as the application parses them."""
    settings = dict(get_appsettings(str(path), name="main"))
    if not settings.get("nick_jobs.jwt_secret"):
        settings["nick_jobs.jwt_secret"] = A_SECRET
    return parse(settings)


def listen_origin(path: Path) -> str:
    """The origin of the page pserve serves from ``[server:main] listen``."""
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(path, encoding="utf-8")
    (address,) = ini["server:main"]["listen"].split()
    return f"http://{address}"


def test_production_lets_no_other_origin_call_the_api() -> None:
    assert shipped(PRODUCTION).cors_origins == set()


def test_development_lets_a_local_frontend_and_the_dashboards_own_origin_call_it() -> None:
    origins = shipped(DEVELOPMENT).cors_origins
    own = listen_origin(DEVELOPMENT)
    assert own == "http://localhost:8080"
    assert {
        "http://localhost:3000",
        "http://127.0.0.1:3000",
        own,
        own.replace("localhost", "127.0.0.1"),
    } <= origins
    assert "*" not in origins


@pytest.mark.parametrize("path", [DEVELOPMENT, PRODUCTION], ids=lambda p: p.name)
def test_the_dashboard_is_on(path: Path) -> None:
    settings = shipped(path)
    assert settings.dashboard is True
    assert settings.dashboard_path == "/dashboard"


def test_the_dashboard_is_on_when_no_ini_says_otherwise() -> None:
    # development.ini does not name the setting: its default is what it gets.
    assert "nick_jobs.dashboard" not in get_appsettings(str(DEVELOPMENT), name="main")
    bare = {"sqlalchemy.url": "sqlite://", "nick_jobs.jwt_secret": A_SECRET}
    assert parse(bare).dashboard is True
