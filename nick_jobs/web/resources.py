"""The traversal tree: root → ``@jobs`` container → one job, each with its ACL.

A host application can hang :class:`JobContainer` under its own root: its
``__getitem__("@jobs")`` returns ``JobContainer(request, parent=self)``; every job view is
registered on these resource types, not on URLs.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from typing import Any, TypeAlias

import sqlalchemy as sa
from pyramid.authorization import ALL_PERMISSIONS, Allow, AllPermissionsList, Authenticated
from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPForbidden
from pyramid.request import Request

from nick_jobs.db.meta import table
from nick_jobs.jobs.actions import get_registry
from nick_jobs.jobs.model import Job
from nick_jobs.jobs.remote_actions import NAME, Action, Actions
from nick_jobs.jobs.serialize import job_json_sql
from nick_jobs.scheduling.model import SLUG, ScheduledJob
from nick_jobs.settings import registry_settings
from nick_jobs.web import urls
from nick_jobs.web.permissions import (
    ADMINISTRATOR_ROLE,
    WORKER_ROLE,
    Permission,
    role_principal,
    user_principal,
)
from nick_jobs.web.security import Rider, identity_and

# An ACL's entry: allow or deny, a principal, and the permissions it grants or denies.
Ace: TypeAlias = tuple[str, str, AllPermissionsList | tuple[str, ...]]

_ADMIN: Ace = (Allow, role_principal(ADMINISTRATOR_ROLE), ALL_PERMISSIONS)
_USERS: Ace = (Allow, Authenticated, (Permission.VIEW_JOBS, Permission.ADD_JOBS))
_WORKERS: Ace = (Allow, role_principal(WORKER_ROLE), (Permission.RUN_JOBS,))


class Root:
    __name__ = ""
    __parent__ = None

    def __init__(self, request: Request) -> None:
        self.request = request

    def __acl__(self) -> list[Ace]:
        return [_ADMIN, _USERS]

    def __getitem__(self, key: str) -> JobContainer | ScheduledJobContainer | ActionContainer:
        if key == "@jobs":
            return JobContainer(self.request, parent=self)
        if key == "@scheduled-jobs":
            return ScheduledJobContainer(self.request, parent=self)
        if key == "@job-actions":
            return ActionContainer(self.request, parent=self)
        raise KeyError(key)


# The job a URL names, any actor's, read with the caller's identity in one query
# (security.Rider): its whole row, for the views that read it.
_JOB_ROW = Rider(sa.select(table(Job)).where(Job.uuid == sa.bindparam("b_uuid")))
# For GET /@jobs/{uuid} on PostgreSQL: the job's JSON text as the view answers it, written
# by the database (as a page of jobs is), and of its columns only what traversal and the
# ACL read. The view sends the text as it is; nothing is decoded to be encoded again.
_JOB_JSON = Rider(
    sa.select(
        Job.uuid,
        Job.actor,
        job_json_sql(sa.bindparam("b_base", type_=sa.String())).label("job_json"),
    ).where(Job.uuid == sa.bindparam("b_uuid"))
)


# The container's URL under the root above, by what it is made of; a few entries at most
# (one per name the API is called by), bounded for clients that send any Host.
_OWN_ROOT_URLS: dict[tuple[str | None, ...], str] = {}
_OWN_ROOT_URLS_MAX = 256


def jobs_acl() -> list[Ace]:
    """The job container's ACL: who may list, submit and run jobs."""
    return [_ADMIN, _USERS, _WORKERS]


class AclOnly:
    """A context that is nothing but an ACL, to ask what it permits without a request
    (the scheduler asks whether a schedule's owner may still submit its action)."""

    __parent__ = None

    def __init__(self, acl: list[Ace]) -> None:
        self.__acl__ = acl


class JobContainer:
    __name__ = "@jobs"

    def __init__(self, request: Request, parent: object) -> None:
        self.request = request
        self.__parent__ = parent

    def __acl__(self) -> list[Ace]:
        # Repeated here so the container grants the same under a host's own root.
        return jobs_acl()

    def url(self) -> str:
        """The container's URL, without the trailing slash ``resource_url`` adds, on
        :func:`nick_jobs.web.urls.application_url` (which refuses a Host it can't write)."""
        request = self.request
        if type(self.__parent__) is not Root:
            return urls.resource_url(request, self).rstrip("/")
        # Under nick-jobs' own root the URL depends on nothing but what is in the key.
        # Only a URL made from a valid Host is kept: an invalid one never reaches the dict.
        environ = request.environ
        public = registry_settings(request.registry).public_url
        key = (
            public,
            None if public else request.application_url,
            environ.get("HTTP_X_VHM_HOST"),
            environ.get("HTTP_X_VHM_ROOT"),
        )
        url = _OWN_ROOT_URLS.get(key)
        if url is None:
            url = urls.resource_url(request, self).rstrip("/")
            if len(_OWN_ROOT_URLS) >= _OWN_ROOT_URLS_MAX:  # hosts are the client's to name
                _OWN_ROOT_URLS.clear()
            _OWN_ROOT_URLS[key] = url
        return url

    def sees_all(self) -> bool:
        return bool(self.request.has_permission(Permission.MANAGE_SITE, self))

    def runs_jobs(self) -> bool:
        return bool(self.request.has_permission(Permission.RUN_JOBS, self))

    def _job_lookup(self, key: str, job_uuid: str) -> tuple[Rider, dict[str, str]]:
        request = self.request
        # A GET of the job itself is answered with its JSON written by the database.
        if (
            request.method in ("GET", "HEAD")
            and request.path_info.endswith(key)
            # The engine's, not request.dbconn's: no connection is taken before the
            # caller is known.
            and request.registry["nick_jobs.read_engine"].dialect.name == "postgresql"
        ):
            return _JOB_JSON, {"b_uuid": job_uuid, "b_base": self.url()}
        return _JOB_ROW, {"b_uuid": job_uuid}

    def __getitem__(self, key: str) -> JobResource:
        try:
            job_uuid = str(uuidlib.UUID(key))
        except ValueError:
            job_uuid = None
        request = self.request
        if job_uuid is None:
            userid, job = request.authenticated_userid, None
        else:
            userid, job = identity_and(request, *self._job_lookup(key, job_uuid))
        if userid is None:
            # Nothing below @jobs is public: without a valid session the answer is 401
            # (by the forbidden view), never a 404 that skips authentication.
            raise HTTPForbidden()
        # Someone else's job is absent, not forbidden: a 404 that reveals nothing. A
        # consumer reports on jobs whoever submitted them (the views check its lease).
        if job is None or (job.actor != userid and not self.sees_all() and not self.runs_jobs()):
            raise KeyError(key)
        return JobResource(job, parent=self)


class JobResource:
    def __init__(self, job: sa.Row[Any], parent: JobContainer) -> None:
        self.job = job
        self.__name__ = job.uuid
        self.__parent__ = parent

    def __acl__(self) -> list[Ace]:
        return [
            (Allow, user_principal(self.job.actor), (Permission.VIEW_JOB, Permission.MANAGE_JOB))
        ]


# --- root → @scheduled-jobs → one scheduled job


class ScheduledJobContainer:
    __name__ = "@scheduled-jobs"

    def __init__(self, request: Request, parent: Root) -> None:
        self.request = request
        self.__parent__ = parent

    def __acl__(self) -> list[Ace]:
        return [_ADMIN]

    def __getitem__(self, key: str) -> ScheduledJobResource:
        if not self.request.has_permission(Permission.MANAGE_SITE, self):
            # 401 without a session, 403 with one: never a 404 that reveals which exist.
            raise HTTPForbidden()
        row = self.request.dbsession.get(ScheduledJob, key) if SLUG.match(key) else None
        if row is None:
            raise KeyError(key)
        return ScheduledJobResource(row, parent=self)


class ScheduledJobResource:
    def __init__(self, row: ScheduledJob, parent: ScheduledJobContainer) -> None:
        self.row = row
        self.__name__ = row.id
        self.__parent__ = parent

    def __acl__(self) -> list[Ace]:
        return [_ADMIN]


# --- root → @job-actions → one action


class ActionContainer:
    """The actions, Python and remote (:mod:`nick_jobs.jobs.remote_actions`)."""

    __name__ = "@job-actions"

    def __init__(self, request: Request, parent: Root) -> None:
        self.request = request
        self.__parent__ = parent

    def __acl__(self) -> list[Ace]:
        return [_ADMIN, _USERS]

    def actions(self) -> Actions:
        return Actions(get_registry(self.request.registry), self.request.dbconn)

    def __getitem__(self, key: str) -> ActionResource:
        if not _ACTION_NAME.match(key):
            raise KeyError(key)
        # Found or not: PUT makes one under a name that has none.
        return ActionResource(key, self.actions().get(key), parent=self)


_ACTION_NAME = re.compile(NAME)


class ActionResource:
    """One action by name, or none yet (``action`` is None) for a ``PUT`` to make; its
    ACL is the container's, and who may read it is who may submit it (the views)."""

    def __init__(self, name: str, action: Action | None, parent: ActionContainer) -> None:
        self.action = action
        self.__name__ = name
        self.__parent__ = parent


def includeme(config: Configurator) -> None:
    config.registry[urls.ROOT_FACTORY] = Root
    config.set_root_factory(Root)
