"""``nick_jobs.switch_interval``: the GIL switch interval of nick-jobs processes."""

from __future__ import annotations

import sys

import pytest

from nick_jobs import main
from nick_jobs.settings import ConfigurationError, parse

from .conftest import base_settings


def settings(**overrides: str):
    return parse(base_settings(**{"sqlalchemy.url": "sqlite://", **overrides}))


@pytest.fixture
def interpreter_interval():
    """Give the interpreter its own interval back after the test."""
    before = sys.getswitchinterval()
    yield before
    sys.setswitchinterval(before)


def test_the_default_keeps_the_interpreters():
    assert settings().switch_interval_s == 0.0


@pytest.mark.parametrize(("raw", "expected"), [("0.002", 0.002), ("0", 0.0), ("1", 1.0)])
def test_it_takes_seconds_or_zero(raw, expected):
    assert settings(**{"nick_jobs.switch_interval": raw}).switch_interval_s == expected


@pytest.mark.parametrize("bad", ["-0.001", "nan", "1.5", "soon"])
def test_anything_else_is_refused_with_the_setting_named(bad):
    with pytest.raises(ConfigurationError, match=r"nick_jobs\.switch_interval"):
        settings(**{"nick_jobs.switch_interval": bad})


def _build(backend, **overrides: str):
    app = main({}, **{**backend.settings, **overrides})
    app.registry["nick_jobs.queue"].stop_embedded_worker()
    app.registry["nick_jobs.engine"].dispose()
    app.registry["nick_jobs.read_engine"].dispose()
    return app


def test_building_the_app_sets_the_interval(backend, interpreter_interval):
    sys.setswitchinterval(0.005)
    _build(backend, **{"nick_jobs.switch_interval": "0.00025"})
    assert sys.getswitchinterval() == pytest.approx(0.00025)


def test_zero_leaves_the_interpreter_alone(backend, interpreter_interval):
    sys.setswitchinterval(0.004)
    _build(backend, **{"nick_jobs.switch_interval": "0"})
    assert sys.getswitchinterval() == pytest.approx(0.004)


def test_by_default_building_the_app_leaves_the_interpreter_alone(backend, interpreter_interval):
    sys.setswitchinterval(0.003)
    _build(backend)
    assert sys.getswitchinterval() == pytest.approx(0.003)
