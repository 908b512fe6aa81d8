"""How long a thread of a nick-jobs process may keep the GIL while another waits for it.

CPython lets a thread that wants the GIL wait up to ``sys.getswitchinterval()`` (5 ms
by default) before it makes the holder drop it. Under waitress that wait is paid by the
thread that would serve a request: with 200 event streams open on one process (their
threads all blocked, the process mostly idle), a plain ``GET`` load ran at a quarter of
its rate with a p99 of 60-290 ms; with an interval of 0.5 ms it ran as if no stream were
open (docs/benchmarks.md §6). ``nick_jobs.switch_interval`` sets it for the API and
worker processes; ``0`` leaves the interpreter's own.
"""

from __future__ import annotations

import sys


def apply(interval_s: float) -> None:
    """Set the interpreter's switch interval; ``0`` keeps the one it has."""
    if interval_s > 0:
        sys.setswitchinterval(interval_s)


def on_application_created(event) -> None:
    apply(event.app.registry["nick_jobs.settings"].switch_interval_s)


def includeme(config) -> None:
    from pyramid.events import ApplicationCreated

    config.add_subscriber(on_application_created, ApplicationCreated)
