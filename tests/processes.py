"""Running a Python command in a child process for a test.

:func:`run` is :func:`subprocess.run` for commands that are Python programs (``pshell``,
``nick-jobs``, ``python -m ...``), with one difference: a child that outlives its
``timeout`` is asked for its threads' stacks (``PYTHONFAULTHANDLER``, then ``SIGABRT``)
before it is killed, and the failure shows them, so a hang on a loaded machine says
where it hung instead of only that it did.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

#: How long a child has to write its stacks once asked.
DUMP_WAIT_S = 10.0


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = False,
    **popen: Any,
) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run(argv, timeout=timeout, ...)``; a timeout fails the test with the
    child's stacks. ``capture_output=True`` is the default."""
    if not {"stdout", "stderr"} & popen.keys():
        popen.setdefault("capture_output", True)
    if popen.pop("capture_output", False):
        popen["stdout"] = popen["stderr"] = subprocess.PIPE
    if input is not None:
        popen["stdin"] = subprocess.PIPE
    environ = {**(os.environ if env is None else env), "PYTHONFAULTHANDLER": "1"}
    with subprocess.Popen(list(argv), env=environ, **popen) as proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler writes every thread's stack
            try:
                out, err = proc.communicate(timeout=DUMP_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            raise AssertionError(
                f"{' '.join(map(str, argv))} did not end within {timeout:g} s; "
                f"its standard error, with its threads' stacks:\n{err}\n"
                f"its standard output:\n{out}"
            ) from None
    done = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
    if check:
        done.check_returncode()
    return done
