"""The text/event-stream wire format and the event ids clients send back.

A job stream's event id is ``"<changed>.<log id>.<progress>"``: the job's change counter
(``jobs.changed``) at the last status sent, the id of the last log line sent, and a
checksum of the last progress sent. Each part only grows or is compared for equality, so
a client that reconnects with ``Last-Event-ID`` gets exactly what changed since, and a
progress it already has is not sent again. The all-jobs stream's id is the change counter
alone, and a job's log stream's the id of its line. Clients treat them as opaque strings.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

from nick_jobs.web import strict

MAX_EVENT_ID = 200


class BadEventId(ValueError):
    """A ``Last-Event-ID`` this server did not write."""


@dataclass
class JobCursor:
    # -1: nothing sent yet, so the current status goes first.
    changed: int = -1
    # None: start at the job's newest line (a fresh stream shows new lines only).
    log_id: int | None = None
    progress: str = ""

    def event_id(self) -> str:
        return f"{self.changed}.{self.log_id or 0}.{self.progress or '0'}"

    @classmethod
    def parse(cls, value: str) -> JobCursor:
        parts = value.strip().split(".")
        if len(value) > MAX_EVENT_ID or len(parts) != 3:
            raise BadEventId(value)
        try:
            changed, log_id = int(parts[0]), int(parts[1])
        except ValueError:
            raise BadEventId(value) from None
        if changed < -1 or log_id < 0 or not parts[2].isalnum():
            raise BadEventId(value)
        return cls(changed=changed, log_id=log_id, progress="" if parts[2] == "0" else parts[2])


def parse_feed_id(value: str) -> int:
    value = value.strip()
    if len(value) > MAX_EVENT_ID or not value.isdigit():
        raise BadEventId(value)
    return int(value)


def parse_line_id(value: str) -> int:
    """The log line id a log stream's ``Last-Event-ID`` names."""
    return parse_feed_id(value)


def progress_checksum(progress: dict[str, Any] | None) -> str:
    """Equal progress, equal checksum, whichever process computes it."""
    if progress is None:
        return ""
    encoded = json.dumps(progress, sort_keys=True, separators=(",", ":")).encode()
    return format(zlib.crc32(encoded), "x")


def frame(event: str, data: Any, event_id: str | None = None) -> bytes:
    """One event. ``data`` is JSON on one line, so no field ever needs splitting."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    # Strict: a NaN stored before input was held to JSON's numbers goes out as null.
    lines.append("data: " + strict.dumps(data, separators=(",", ":"), ensure_ascii=False))
    return ("\n".join(lines) + "\n\n").encode()


def retry(ms: int) -> bytes:
    return f"retry: {ms}\n\n".encode()


KEEPALIVE = b": keepalive\n\n"
