"""tests.processes.run: a child that hangs fails the test with its threads' stacks."""

from __future__ import annotations

import sys

import pytest

from tests import processes

HANGS = "import threading, time\ndef wait_forever():\n    time.sleep(600)\nwait_forever()\n"


def test_a_child_that_outlives_its_timeout_fails_with_its_stacks() -> None:
    with pytest.raises(AssertionError) as failed:
        processes.run([sys.executable, "-c", HANGS], timeout=2, text=True)
    said = str(failed.value)
    assert "did not end within 2 s" in said
    assert "Current thread" in said  # faulthandler's dump
    assert "in wait_forever" in said


def test_a_child_that_ends_is_answered_as_subprocess_run_answers() -> None:
    done = processes.run(
        [sys.executable, "-c", "import sys; print(sys.stdin.read().upper())"],
        timeout=60,
        input="shout",
        text=True,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "SHOUT\n", "")
