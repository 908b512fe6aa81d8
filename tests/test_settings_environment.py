"""Every setting can come from the environment as ``NICK_JOBS_<NAME>``, and every setting
the code reads is listed (``settings.SETTINGS``) and documented (docs/deployment.md)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from nick_jobs.ops.logging import parse_format
from nick_jobs.scheduling.scheduler import parse_settings as scheduler_settings
from nick_jobs.settings import (
    ENVIRONMENT_OVERRIDES,
    SETTINGS,
    apply_environment,
    environment_name,
    parse,
)
from tests.conftest import ROOT, base_settings

PACKAGE = ROOT / "nick_jobs"
KEY = re.compile(r"nick_jobs\.[a-z_]+(?:\.[a-z_]+)?\Z")
# The functions that read one setting by name: settings.get and the parsing helpers.
READERS = {"get", "_int", "_float", "_seconds", "_strict_bool", "_positive", "_non_negative"}


def settings_read_in(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute):
            # settings.get(...) or config.get_settings().get(...), not the registry's get.
            owner = func.value
            if func.attr != "get" or not (
                (isinstance(owner, ast.Name) and "settings" in owner.id)
                or (isinstance(owner, ast.Call) and "get_settings" in ast.unparse(owner))
            ):
                continue
        elif getattr(func, "id", None) not in READERS:
            continue
        for arg in node.args[:2]:
            if (
                isinstance(arg, ast.Constant)
                and isinstance(arg.value, str)
                and KEY.match(arg.value)
            ):
                found.add(arg.value)
    return found


def test_every_setting_the_code_reads_is_listed() -> None:
    read = set().union(*(settings_read_in(p) for p in PACKAGE.rglob("*.py")))
    assert len(read) > 40  # the scan finds the readers at all
    # Registry keys share the prefix but are no settings; nothing read by name is missing.
    assert read - set(SETTINGS) == set()


def test_every_listed_setting_is_read_and_documented() -> None:
    read = set().union(*(settings_read_in(p) for p in PACKAGE.rglob("*.py")))
    assert set(SETTINGS) - read == set()
    table = (ROOT / "docs" / "deployment.md").read_text().split("## All settings", 1)[1]
    for setting in SETTINGS:
        short = setting.removeprefix("nick_jobs.")
        assert f"`{setting}`" in table or f"`{short}`" in table, setting
    assert "`NICK_JOBS_<NAME>`" in table


def test_each_setting_has_its_own_variable() -> None:
    assert len(ENVIRONMENT_OVERRIDES) == len(SETTINGS) + 1
    assert environment_name("nick_jobs.lease") == "NICK_JOBS_LEASE"
    assert environment_name("nick_jobs.scheduler.missed") == "NICK_JOBS_SCHEDULER_MISSED"
    assert ENVIRONMENT_OVERRIDES["NICK_JOBS_DATABASE_URL"] == "sqlalchemy.url"


def settings() -> dict[str, str]:
    return base_settings(**{"sqlalchemy.url": "sqlite://", "nick_jobs.lease": "60"})


def test_the_environment_wins_over_the_ini_file() -> None:
    merged = apply_environment(
        settings(),
        {
            "NICK_JOBS_LEASE": "90",
            "NICK_JOBS_MAX_PAGE_SIZE": "200",
            "NICK_JOBS_DASHBOARD": "false",
            "NICK_JOBS_SCHEDULER_MISSED": "skip",
            "NICK_JOBS_LOG_FORMAT": "json",
            "NICK_JOBS_DATABASE_URL": "sqlite:////tmp/elsewhere.sqlite",
        },
    )
    parsed = parse(merged)
    assert parsed.lease_s == 90
    assert parsed.max_page_size == 200
    assert parsed.dashboard is False
    assert parsed.database_url == "sqlite:////tmp/elsewhere.sqlite"
    assert scheduler_settings(merged, parsed).missed == "skip"
    assert parse_format(merged) == "json"


def test_an_empty_or_unknown_variable_changes_nothing() -> None:
    merged = apply_environment(
        settings(), {"NICK_JOBS_LEASE": "", "NICK_JOBS_LEAS": "5", "NICK_JOBS_BOGUS": "x"}
    )
    assert merged == settings()


def test_a_bad_value_from_the_environment_is_refused_by_name() -> None:
    from nick_jobs.settings import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"nick_jobs\.lease"):
        parse(apply_environment(settings(), {"NICK_JOBS_LEASE": "soon"}))
