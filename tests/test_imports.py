"""The modules that import one another at start-up each import on their own, in a fresh
interpreter: an import cycle that the usual import order hides would break whoever
imports that module first (a handler's module importing ``nick_jobs.worker.runner``, say)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

# The worker's side and what it imports back: runner → reporting → transitions → metrics.
MODULES = [
    "nick_jobs.jobs.actions",
    "nick_jobs.worker.broker",
    "nick_jobs.jobs.builtin_actions",
    "nick_jobs.ops.metrics",
    "nick_jobs.worker.queue",
    "nick_jobs.worker.reporting",
    "nick_jobs.worker.runner",
    "nick_jobs.scheduling.scheduler",
    "nick_jobs.worker.sweeper",
    "nick_jobs.jobs.lifecycle",
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
