"""Log lines for state changes, and JSON lines for log collectors.

Every change of a job's state logs one ``INFO`` line on the ``nick_jobs.state`` logger, in
one shape whoever makes it (API, worker, sweeper, scheduler), once the change has committed
(:mod:`nick_jobs.jobs.lifecycle` logs it)::

    job 5f0c… action=dummy actor=admin status=completed duration=0.104s

``duration`` is how long the attempt ran (absent for a job that never started); ``by``
names who made a change when it is not the job's actor; some changes add more (``error=``
for an automatic retry or a rescue, ``next_run=`` for a retry that waits). The ini's
logging sections decide where they go. For JSON lines, either name :class:`JSONFormatter`
in a ``[formatter_*]`` section::

    [formatter_json]
    class = nick_jobs.ops.logging.JSONFormatter

or set ``nick_jobs.log_format = json``, which gives the root logger's handlers that
formatter when the app starts. A line in the shape above becomes
``{"time": …, "level": "INFO", "logger": …, "message": …, "job": {"uuid": …,
"action": …, "actor": …, "status": …, "duration": 0.104}}``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from nick_jobs.settings import ConfigurationError

if TYPE_CHECKING:
    from pyramid.config import Configurator

TEXT, JSON = "text", "json"
STATE_LOGGER = "nick_jobs.state"

log = logging.getLogger(STATE_LOGGER)

# "job %s key=%s key=%.3fs ...": the uuid first, then one argument per key.
_KEYS = re.compile(r"(\w+)=%")


def state_change(
    uuid: str,
    action: str,
    actor: str,
    status: str,
    duration: float | None = None,
    by: str | None = None,
    *details: tuple[str, Any],
    level: int = logging.INFO,
) -> None:
    """Log one state change of a job (see the module's docstring for its shape);
    ``details`` are more ``(key, value)`` pairs for the end of the line."""
    fmt = "job %s action=%s actor=%s status=%s"
    args: list[Any] = [uuid, action, actor, status]
    if duration is not None:
        fmt += " duration=%.3fs"
        args.append(duration)
    if by is not None and by != actor:
        fmt += " by=%s"
        args.append(by)
    for key, value in details:
        fmt += f" {key}=%s"
        args.append(value)
    log.log(level, fmt, *args)


def job_fields(record: logging.LogRecord) -> dict[str, Any] | None:
    """The job fields of a ``job %s key=%s …`` record, else None."""
    msg, args = record.msg, record.args
    if not (isinstance(msg, str) and msg.startswith("job %s") and isinstance(args, tuple)):
        return None
    keys = _KEYS.findall(msg[len("job %s") :])
    if len(args) != len(keys) + 1:
        return None
    fields: dict[str, Any] = {"uuid": str(args[0])}
    for key, value in zip(keys, args[1:], strict=True):
        fields[key] = (
            value if isinstance(value, int | float | bool) or value is None else str(value)
        )
    return fields


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, job, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = job_fields(record)
        if fields:
            entry["job"] = fields
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def parse_format(settings: Mapping[str, Any]) -> str:
    value = str(settings.get("nick_jobs.log_format", TEXT)).strip() or TEXT
    if value not in (TEXT, JSON):
        raise ConfigurationError(f"nick_jobs.log_format must be text or json, not {value!r}")
    return value


def use_json(logger: logging.Logger | None = None) -> None:
    """Give the handlers of ``logger`` (the root logger) the :class:`JSONFormatter`."""
    for handler in (logger or logging.getLogger()).handlers:
        if not isinstance(handler.formatter, JSONFormatter):
            handler.setFormatter(JSONFormatter())


def includeme(config: Configurator) -> None:
    if parse_format(config.get_settings()) == JSON:
        use_json()
