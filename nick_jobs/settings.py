"""Typed settings, read once at start-up.

Every value the service reads from the ini file is parsed and checked here, so a
bad deployment fails when it starts, not on the first request that needs it.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pyramid.settings import asbool

from nick_jobs.web.hosts import valid_host

if TYPE_CHECKING:
    from pyramid.config import Configurator

# Every setting nick-jobs reads (docs/deployment.md#all-settings), besides sqlalchemy.url
# and the declared schedules' nick_jobs.schedule.<id>.* (docs/scheduled-jobs.md).
SETTINGS = (
    "nick_jobs.environment",
    "nick_jobs.public_url",
    "nick_jobs.cors_origins",
    "nick_jobs.broker_url",
    "nick_jobs.queue",
    "nick_jobs.broker_namespace",
    "nick_jobs.publisher_threads",
    "nick_jobs.publisher_confirms",
    "nick_jobs.jwt_secret",
    "nick_jobs.jwt_algorithms",
    "nick_jobs.jwt_lifetime",
    "nick_jobs.jwt_leeway",
    "nick_jobs.max_authorization_header",
    "nick_jobs.max_body_bytes",
    "nick_jobs.login_rate_limit",
    "nick_jobs.login_account_rate_limit",
    "nick_jobs.login_address_rate_limit",
    "nick_jobs.login_rate_window",
    "nick_jobs.default_page_size",
    "nick_jobs.max_page_size",
    "nick_jobs.job_time_limit",
    "nick_jobs.stream_max_per_process",
    "nick_jobs.stream_max_per_user",
    "nick_jobs.stream_max_lifetime",
    "nick_jobs.stream_keepalive",
    "nick_jobs.stream_poll_interval",
    "nick_jobs.stream_retry_ms",
    "nick_jobs.stream_ticket_ttl",
    "nick_jobs.stream_max_queued_events",
    "nick_jobs.abort_check_interval",
    "nick_jobs.claim_max_wait",
    "nick_jobs.claim_max_waiting",
    "nick_jobs.claim_poll_interval",
    "nick_jobs.max_active_requests",
    "nick_jobs.request_queue_timeout",
    "nick_jobs.graceful_shutdown",
    "nick_jobs.shutdown_grace",
    "nick_jobs.includes",
    "nick_jobs.auto_migrate",
    "nick_jobs.bootstrap_admin",
    "nick_jobs.embedded_worker_threads",
    "nick_jobs.worker_threads",
    "nick_jobs.worker_timeout_ms",
    "nick_jobs.worker_grace",
    "nick_jobs.heartbeat_interval",
    "nick_jobs.lease",
    "nick_jobs.sweep_interval",
    "nick_jobs.resend_grace",
    "nick_jobs.health_timeout",
    "nick_jobs.metrics_access",
    "nick_jobs.worker_metrics_port",
    "nick_jobs.worker_metrics_host",
    "nick_jobs.log_format",
    "nick_jobs.job_log_copy_rate",
    "nick_jobs.dashboard",
    "nick_jobs.dashboard_path",
    "nick_jobs.dashboard_api_path",
    "nick_jobs.schedules",
    "nick_jobs.prune_schedule",
    "nick_jobs.ready_requires_scheduler",
    "nick_jobs.scheduler.missed",
    "nick_jobs.scheduler.embedded",
    "nick_jobs.scheduler.interval",
    "nick_jobs.scheduler.stale_after",
    "nick_jobs.scheduler.grace",
)


def environment_name(setting: str) -> str:
    """The environment variable that sets ``setting``: ``nick_jobs.lease`` →
    ``NICK_JOBS_LEASE``, ``nick_jobs.scheduler.missed`` → ``NICK_JOBS_SCHEDULER_MISSED``."""
    return setting.replace(".", "_").upper()


# The environment wins over the ini file, so one production.ini serves every host.
ENVIRONMENT_OVERRIDES = {
    "NICK_JOBS_DATABASE_URL": "sqlalchemy.url",
    **{environment_name(setting): setting for setting in SETTINGS},
}

log = logging.getLogger(__name__)

# Settings an earlier version read, and why they are gone: a deployment that still sets
# one starts, and is told.
REMOVED = {
    "nick_jobs.switch_interval": (
        "a plugin leaves the interpreter's GIL switch interval to the process it runs in "
        "(the process's own start-up sets another, if it needs one)"
    ),
    "nick_jobs.worker_processes": (
        "one `nick-jobs worker` is one process; run several under a process manager "
        "(docs/deployment.md#workers)"
    ),
}

# Secrets that ship in examples and must never guard a production service.
WEAK_SECRETS = frozenset({"", "secret", "changeme", "change-me", "development-secret"})
MIN_SECRET_LENGTH = 32


class ConfigurationError(Exception):
    """The settings can't run a service; the message says which one and why."""


def apply_environment(
    settings: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Return a copy of ``settings`` with the ``NICK_JOBS_*`` environment overrides applied."""
    environ = os.environ if environ is None else environ
    merged = dict(settings)
    for variable, key in ENVIRONMENT_OVERRIDES.items():
        value = environ.get(variable)
        if value:
            merged[key] = value
    return merged


def _int(settings: Mapping[str, Any], key: str, default: int) -> int:
    raw = settings.get(key, default)
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{key} must be a whole number, not {raw!r}") from None


def _float(settings: Mapping[str, Any], key: str, default: float) -> float:
    raw = settings.get(key, default)
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{key} must be a number, not {raw!r}") from None


@dataclass(frozen=True)
class StreamSettings:
    """Server-Sent Event streams: each open stream holds one waitress thread.

    Keep ``max_per_process`` below half the ``[server:main] threads`` so plain requests
    always find a free thread (docs/streams.md has the sizing).
    """

    max_per_process: int = 50
    max_per_user: int = 10
    # A stream ends after this long with a close event that asks the client to reconnect,
    # so no connection lives forever (proxies, deploys, a revoked token).
    max_lifetime_s: float = 600.0
    keepalive_s: float = 15.0
    # How often the process looks for changes while at least one stream is open.
    poll_interval_s: float = 0.1
    # The reconnection delay a client is told to use (the SSE ``retry:`` field).
    retry_ms: int = 2000
    ticket_ttl_s: float = 60.0
    # Events buffered for one slow client before its stream is closed (it resumes).
    max_queued_events: int = 10_000


def _stream_settings(settings: Mapping[str, Any]) -> StreamSettings:
    streams = StreamSettings(
        max_per_process=_int(settings, "nick_jobs.stream_max_per_process", 50),
        max_per_user=_int(settings, "nick_jobs.stream_max_per_user", 10),
        max_lifetime_s=_float(settings, "nick_jobs.stream_max_lifetime", 600.0),
        keepalive_s=_float(settings, "nick_jobs.stream_keepalive", 15.0),
        poll_interval_s=_float(settings, "nick_jobs.stream_poll_interval", 0.1),
        retry_ms=_int(settings, "nick_jobs.stream_retry_ms", 2000),
        ticket_ttl_s=_float(settings, "nick_jobs.stream_ticket_ttl", 60.0),
        max_queued_events=_int(settings, "nick_jobs.stream_max_queued_events", 10_000),
    )
    if streams.max_per_process < 0 or streams.max_per_user < 0:
        raise ConfigurationError(
            "nick_jobs.stream_max_per_process and nick_jobs.stream_max_per_user take 0 "
            "(streams off) or more"
        )
    if min(streams.max_lifetime_s, streams.keepalive_s, streams.poll_interval_s) <= 0:
        raise ConfigurationError(
            "nick_jobs.stream_max_lifetime, nick_jobs.stream_keepalive and "
            "nick_jobs.stream_poll_interval must be > 0"
        )
    if streams.ticket_ttl_s <= 0 or streams.retry_ms < 0 or streams.max_queued_events < 1:
        raise ConfigurationError(
            "nick_jobs.stream_ticket_ttl must be > 0, nick_jobs.stream_retry_ms >= 0 and "
            "nick_jobs.stream_max_queued_events >= 1"
        )
    return streams


@dataclass(frozen=True)
class Settings:
    database_url: str
    broker_url: str
    queue_name: str
    broker_namespace: str
    environment: str
    auto_migrate: bool
    embedded_worker_threads: int
    worker_timeout_ms: int
    worker_threads: int
    worker_grace_s: float
    heartbeat_interval_s: float
    lease_s: float
    sweep_interval_s: float
    resend_grace_s: float
    health_timeout_s: float
    jwt_secret: str
    jwt_algorithms: tuple[str, ...]
    jwt_lifetime_s: int
    jwt_leeway_s: int
    max_authorization_header: int
    max_body_bytes: int
    login_rate_limit: int
    login_rate_window_s: float
    login_account_rate_limit: int
    login_address_rate_limit: int
    bootstrap_admin: bool
    default_page_size: int
    max_page_size: int
    job_time_limit_s: float
    streams: StreamSettings = field(default_factory=StreamSettings)
    # SIGTERM drains the API process (nick_jobs.ops.shutdown); a host app may handle it itself.
    graceful_shutdown: bool = True
    shutdown_grace_s: float = 20.0
    # How often a worker process looks for aborts and stop requests of the jobs it runs
    # (one query for all of them): how late an abort may reach a handler.
    abort_check_interval_s: float = 0.5
    # A consumer's claim waits at most this long for a job (its ``wait`` is cut to it),
    # and at most this many wait at once in one API process (more get a 503).
    claim_max_wait_s: float = 30.0
    claim_max_waiting: int = 16
    # How often a waiting claim looks for jobs that rang no bell: a retry's backoff or a
    # claim window that ended, a scheduled job (a submit, hand-back, retry, resume or
    # restart wakes it at once, through any process on PostgreSQL: nick_jobs.web.claim_bell).
    claim_poll_interval_s: float = 1.0
    # Lines a second of each job's log copied to the process log (nick_jobs.worker.reporting.
    # LogCopy); the job's own log keeps them all. 0: every line.
    job_log_copy_rate: int = 10
    # Requests of one API process that run their view and transaction at once (0: no
    # bound), and how long one past that may wait (nick_jobs.ops.admission).
    max_active_requests: int = 16
    request_queue_timeout_s: float = 30.0
    # Threads that send the process's messages on RabbitMQ, each with one connection
    # (nick_jobs.worker.queue.Publishers); 0: every thread that sends opens its own.
    publisher_threads: int = 2
    # Whether a send on RabbitMQ waits for the broker to confirm it has the message
    # (nick_jobs.worker.queue.make_broker says why it doesn't by default).
    publisher_confirms: bool = False
    # The URL every URL the API writes starts with (nick_jobs.web.urls), without a trailing
    # slash; "" takes the scheme, Host and SCRIPT_NAME of each request.
    public_url: str = ""
    # Origins whose pages may call the API from a browser (nick_jobs.web.cors): exact
    # origins such as https://cms.example.org, or "*" for any; empty, none may.
    cors_origins: frozenset[str] = frozenset()
    # The admin dashboard (nick_jobs.dashboard), and the path it is served under.
    dashboard: bool = True
    dashboard_path: str = "/dashboard"
    # Where the object holding @jobs is, from the application's root: "/" standalone,
    # a host application's site path (such as /plone) otherwise.
    dashboard_api_path: str = "/"

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url.startswith("stub://")


def parse(settings: Mapping[str, Any]) -> Settings:
    """Build :class:`Settings` from ini values, raising :class:`ConfigurationError` on nonsense."""
    environment = settings.get("nick_jobs.environment", "development").strip()
    if environment not in {"development", "production", "testing"}:
        raise ConfigurationError(
            f"nick_jobs.environment must be development, testing or production, not {environment!r}"
        )
    database_url = settings.get("sqlalchemy.url", "").strip()
    if not database_url:
        raise ConfigurationError("sqlalchemy.url (or NICK_JOBS_DATABASE_URL) is required")
    broker_url = settings.get("nick_jobs.broker_url", "stub://").strip()
    if not broker_url.startswith(("stub://", "redis://", "rediss://", "amqp://", "amqps://")):
        raise ConfigurationError(
            "nick_jobs.broker_url must start with stub://, redis://, rediss://, amqp:// "
            f"or amqps://, not {broker_url!r}"
        )
    secret = settings.get("nick_jobs.jwt_secret", "").strip()
    if environment == "production" and (
        secret.lower() in WEAK_SECRETS or len(secret) < MIN_SECRET_LENGTH
    ):
        raise ConfigurationError(
            "refusing to start: set NICK_JOBS_JWT_SECRET (or nick_jobs.jwt_secret) to a random "
            f"secret of at least {MIN_SECRET_LENGTH} characters"
        )
    if not secret:
        raise ConfigurationError("nick_jobs.jwt_secret (or NICK_JOBS_JWT_SECRET) is required")
    algorithms = tuple(settings.get("nick_jobs.jwt_algorithms", "HS256").split())
    if not algorithms or any(not a.startswith("HS") for a in algorithms):
        raise ConfigurationError("nick_jobs.jwt_algorithms takes HMAC algorithms (HS256/384/512)")
    page_size = _int(settings, "nick_jobs.default_page_size", 50)
    max_page = _int(settings, "nick_jobs.max_page_size", 1000)
    if not 1 <= page_size <= max_page:
        raise ConfigurationError("nick_jobs.default_page_size must be between 1 and max_page_size")
    heartbeat_interval = _float(settings, "nick_jobs.heartbeat_interval", 10.0)
    lease = _float(settings, "nick_jobs.lease", 60.0)
    sweep_interval = _float(settings, "nick_jobs.sweep_interval", 15.0)
    resend_grace = _float(settings, "nick_jobs.resend_grace", 30.0)
    health_timeout = _float(settings, "nick_jobs.health_timeout", 2.0)
    if heartbeat_interval < 0 or sweep_interval < 0:
        raise ConfigurationError(
            "nick_jobs.heartbeat_interval and nick_jobs.sweep_interval take 0 (off) or more"
        )
    if lease <= 0 or resend_grace <= 0 or health_timeout <= 0:
        raise ConfigurationError(
            "nick_jobs.lease, nick_jobs.resend_grace and nick_jobs.health_timeout must be > 0"
        )
    # A job is declared lost only after it missed at least two heartbeats in a row.
    if heartbeat_interval and lease < 2 * heartbeat_interval:
        raise ConfigurationError(
            "nick_jobs.lease must be at least twice nick_jobs.heartbeat_interval, "
            f"not {lease:g} s for heartbeats every {heartbeat_interval:g} s"
        )
    if _int(settings, "nick_jobs.max_active_requests", 16) < 0:
        raise ConfigurationError("nick_jobs.max_active_requests takes 0 (no bound) or more")
    if not _float(settings, "nick_jobs.request_queue_timeout", 30.0) > 0:  # NaN too
        raise ConfigurationError("nick_jobs.request_queue_timeout takes seconds above 0")
    if _int(settings, "nick_jobs.publisher_threads", 2) < 0:
        raise ConfigurationError("nick_jobs.publisher_threads takes 0 (one per thread) or more")
    if _float(settings, "nick_jobs.shutdown_grace", 20.0) < 0:
        raise ConfigurationError("nick_jobs.shutdown_grace takes 0 or more seconds")
    return Settings(
        database_url=database_url,
        broker_url=broker_url,
        queue_name=settings.get("nick_jobs.queue", "nick_jobs").strip(),
        broker_namespace=settings.get("nick_jobs.broker_namespace", "nick_jobs").strip(),
        environment=environment,
        auto_migrate=asbool(settings.get("nick_jobs.auto_migrate", environment == "development")),
        embedded_worker_threads=_int(settings, "nick_jobs.embedded_worker_threads", 4),
        worker_timeout_ms=_int(settings, "nick_jobs.worker_timeout_ms", 50),
        worker_threads=_int(settings, "nick_jobs.worker_threads", 8),
        worker_grace_s=_float(settings, "nick_jobs.worker_grace", 30.0),
        heartbeat_interval_s=heartbeat_interval,
        lease_s=lease,
        sweep_interval_s=sweep_interval,
        resend_grace_s=resend_grace,
        health_timeout_s=health_timeout,
        jwt_secret=secret,
        jwt_algorithms=algorithms,
        jwt_lifetime_s=_int(settings, "nick_jobs.jwt_lifetime", 12 * 3600),
        jwt_leeway_s=_int(settings, "nick_jobs.jwt_leeway", 30),
        max_authorization_header=_int(settings, "nick_jobs.max_authorization_header", 8192),
        max_body_bytes=_int(settings, "nick_jobs.max_body_bytes", 1024 * 1024),
        login_rate_limit=_int(settings, "nick_jobs.login_rate_limit", 10),
        login_rate_window_s=_float(settings, "nick_jobs.login_rate_window", 60.0),
        login_account_rate_limit=_int(settings, "nick_jobs.login_account_rate_limit", 30),
        login_address_rate_limit=_int(settings, "nick_jobs.login_address_rate_limit", 100),
        bootstrap_admin=asbool(
            settings.get("nick_jobs.bootstrap_admin", environment == "development")
        )
        and environment != "production",
        default_page_size=page_size,
        max_page_size=max_page,
        job_time_limit_s=_float(settings, "nick_jobs.job_time_limit", 3600.0),
        streams=_stream_settings(settings),
        graceful_shutdown=asbool(settings.get("nick_jobs.graceful_shutdown", True)),
        shutdown_grace_s=_float(settings, "nick_jobs.shutdown_grace", 20.0),
        abort_check_interval_s=_abort_check_interval(settings),
        claim_max_wait_s=_non_negative(settings, "nick_jobs.claim_max_wait", 30.0),
        claim_max_waiting=int(_non_negative(settings, "nick_jobs.claim_max_waiting", 16)),
        claim_poll_interval_s=_positive(settings, "nick_jobs.claim_poll_interval", 1.0),
        job_log_copy_rate=_job_log_copy_rate(settings),
        max_active_requests=_int(settings, "nick_jobs.max_active_requests", 16),
        request_queue_timeout_s=_float(settings, "nick_jobs.request_queue_timeout", 30.0),
        publisher_threads=_int(settings, "nick_jobs.publisher_threads", 2),
        publisher_confirms=asbool(settings.get("nick_jobs.publisher_confirms", False)),
        public_url=_public_url(settings),
        cors_origins=_cors_origins(settings),
        dashboard=asbool(settings.get("nick_jobs.dashboard", True)),
        dashboard_path=_dashboard_path(settings),
        dashboard_api_path=_dashboard_api_path(settings),
    )


def _warn_removed(settings: Mapping[str, Any]) -> None:
    for name, why in REMOVED.items():
        if name in settings:
            log.warning("%s is no longer read: %s", name, why)


# A URL's path, as RFC 3986 writes it: nothing that would need quoting in a header.
_URL_PATH = re.compile(r"(?:/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})*)*\Z")


def _public_url(settings: Mapping[str, Any]) -> str:
    raw = str(settings.get("nick_jobs.public_url", "") or "").strip()
    if not raw:
        return ""
    problem = (
        "nick_jobs.public_url (or NICK_JOBS_PUBLIC_URL) takes an absolute http or https URL "
        "with no user, query or fragment, such as https://jobs.example.org/api"
    )
    try:
        parts = urlsplit(raw)
    except ValueError:
        raise ConfigurationError(f"{problem}, not {raw!r}") from None
    if (
        parts.scheme not in ("http", "https")
        or "?" in raw
        or "#" in raw
        or "@" in parts.netloc
        or not valid_host(parts.netloc)
        or not _URL_PATH.match(parts.path)
    ):
        raise ConfigurationError(f"{problem}, not {raw!r}")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def _cors_origins(settings: Mapping[str, Any]) -> frozenset[str]:
    origins = set()
    for raw in str(settings.get("nick_jobs.cors_origins", "") or "").replace(",", " ").split():
        if raw == "*":
            origins.add(raw)
            continue
        parts = urlsplit(raw)
        # An Origin header is scheme://host[:port] and nothing else; a path or a trailing
        # slash would never match one, so it is refused here rather than ignored.
        if (
            parts.scheme not in ("http", "https")
            or not valid_host(parts.netloc)
            or "@" in parts.netloc
            or raw != f"{parts.scheme}://{parts.netloc}"
        ):
            raise ConfigurationError(
                "nick_jobs.cors_origins (or NICK_JOBS_CORS_ORIGINS) takes origins such as "
                f"https://cms.example.org (scheme, host and port only) or *, not {raw!r}"
            )
        origins.add(raw.lower())
    return frozenset(origins)


def _dashboard_path(settings: Mapping[str, Any]) -> str:
    raw = str(settings.get("nick_jobs.dashboard_path", "/dashboard") or "").strip()
    path = "/" + raw.strip("/")
    if path == "/" or not _URL_PATH.match(path) or "@" in path:
        raise ConfigurationError(
            "nick_jobs.dashboard_path takes a path such as /dashboard (not / and not a "
            f"path with @, which nick-jobs' own names use), not {raw!r}"
        )
    return path


def _dashboard_api_path(settings: Mapping[str, Any]) -> str:
    raw = str(settings.get("nick_jobs.dashboard_api_path", "/") or "/").strip()
    path = "/" + raw.strip("/")
    if not _URL_PATH.match(path) or "@" in path or ".." in path.split("/"):
        raise ConfigurationError(
            "nick_jobs.dashboard_api_path takes the path, from the application's root, of "
            f"what holds @jobs (such as / or /plone), not {raw!r}"
        )
    return path


def _job_log_copy_rate(settings: Mapping[str, Any]) -> int:
    rate = _int(settings, "nick_jobs.job_log_copy_rate", 10)
    if rate < 0:
        raise ConfigurationError(
            f"nick_jobs.job_log_copy_rate takes 0 (every line) or more lines a second, not {rate}"
        )
    return rate


def _positive(settings: Mapping[str, Any], key: str, default: float) -> float:
    value = _float(settings, key, default)
    if value <= 0:
        raise ConfigurationError(f"{key} must be more than 0, not {value:g}")
    return value


def _non_negative(settings: Mapping[str, Any], key: str, default: float) -> float:
    value = _float(settings, key, default)
    if value < 0:
        raise ConfigurationError(f"{key} must be 0 or more, not {value:g}")
    return value


def _abort_check_interval(settings: Mapping[str, Any]) -> float:
    interval = _float(settings, "nick_jobs.abort_check_interval", 0.5)
    if not interval > 0:  # NaN too
        raise ConfigurationError(f"nick_jobs.abort_check_interval must be > 0, not {interval:g}")
    return interval


def registry_settings(registry: Mapping[str, Any]) -> Settings:
    """The settings :func:`includeme` keeps on the Pyramid ``registry`` (``nick_jobs.settings``)."""
    settings: Settings = registry["nick_jobs.settings"]
    return settings


def includeme(config: Configurator) -> None:
    """Parse the settings once and keep them on the registry as ``nick_jobs.settings``."""
    merged = apply_environment(config.get_settings())
    config.add_settings(merged)
    config.registry["nick_jobs.settings"] = parse(merged)
    _warn_removed(merged)
