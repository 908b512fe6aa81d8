"""The permissions nick-jobs checks, named as Nick names its own."""

from __future__ import annotations

import enum


class Permission(enum.StrEnum):
    # Nick's site-administration permission: sees and controls every job.
    MANAGE_SITE = "Manage Site"
    # Listing and submitting; what a user then sees is narrowed to their own jobs.
    VIEW_JOBS = "View Jobs"
    ADD_JOBS = "Add Jobs"
    # Reading and controlling one job: granted on a job to the user who created it.
    VIEW_JOB = "View Job"
    MANAGE_JOB = "Manage Job"
    # Claiming remote actions' jobs and reporting on them (the consumer API).
    RUN_JOBS = "Run Jobs"


ADMINISTRATOR_ROLE = "Administrator"
# The role of a consumer's user: it may run jobs, whoever submitted them.
WORKER_ROLE = "Worker"


def role_principal(role: str) -> str:
    return f"role:{role}"


def user_principal(login: str) -> str:
    return f"user:{login}"
