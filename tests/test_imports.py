"""The modules that import one another at start-up each import on their own, in a fresh
interpreter: an import cycle that the usual import order hides would break whoever
imports that module first (a handler's module importing ``nick_jobs.runner``, say)."""

from __future__ import annotations

import subprocess
import sys

from .conftest import ROOT

# The worker's side and what it imports back: runner → reporting → transitions → metrics.
MODULES = [
    "nick_jobs.actions",
    "nick_jobs.broker",
    "nick_jobs.builtin_actions",
    "nick_jobs.metrics",
    "nick_jobs.queue",
    "nick_jobs.reporting",
    "nick_jobs.runner",
    "nick_jobs.scheduler",
    "nick_jobs.sweeper",
    "nick_jobs.transitions",
]


def test_each_module_imports_first():
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", f"import {name}"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in MODULES
    }
    failed = {}
    for name, proc in procs.items():
        _, stderr = proc.communicate(timeout=120)
        if proc.returncode:
            failed[name] = stderr.strip().splitlines()[-1]
    assert failed == {}
