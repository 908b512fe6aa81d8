"""How long a thread of a nick-jobs process may keep the GIL while another waits for it.

CPython lets a thread that wants the GIL wait up to ``sys.getswitchinterval()`` (5 ms
by default) before it makes the holder drop it. ``nick_jobs.switch_interval`` sets it
for the API and worker processes; ``0``, the default, leaves the interpreter's own.

A short interval (0.5 ms) once kept plain requests fast beside 200 open event streams
on stock waitress, whose main loop spun while a request thread sent. With
``egg:nick-jobs#main`` the loop waits, 200 streams leave ``GET`` p99 within its target
at Python's 5 ms, and the short interval cost 15-25 % more CPU per request under
concurrent load, in the API and in the worker (docs/benchmarks.md §6). It remains for a
host application served by stock waitress with many streams open.
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
