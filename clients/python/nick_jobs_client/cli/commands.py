"""The client subcommands of ``nick-jobs``: ``login``, ``list``, ``submit`` and the rest.

They talk to a running service over HTTP with :mod:`nick_jobs_client.client`, and take no
ini file. ``docs/cli.md`` describes them. :func:`add_client_commands` adds them to the
``nick-jobs`` parser.

The server is ``--server``, else ``$NICK_JOBS_URL``, else the current server (the one
``login`` last logged in to, or ``server URL`` chose), else ``DEFAULT_URL``.

Exit statuses: 0 success, 1 any other error, 2 bad usage, 3 not logged in (or the session
expired) or not allowed, 4 not found, 5 conflict (the job's state refuses it), 6 the server
is down or unreachable; ``stream``, ``submit --stream`` and ``get --watch`` exit 7, 8 or 9
when the job ends failed, aborted or stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from nick_jobs_client.cli.completion import SHELLS, completion_script
from nick_jobs_client.cli.parser import Parser
from nick_jobs_client.cli.sessions import (
    URL_VARIABLE,
    SessionExpired,
    StoredSession,
    current_server,
    forget_token,
    resolve_server,
    set_current_server,
    store_token,
    stored_session,
    utc_text,
)
from nick_jobs_client.client import (
    DEFAULT_URL,
    JOB_STATUSES,
    LOG_LEVELS,
    Client,
    ClientError,
    Event,
    EventStream,
    ServerUnavailable,
    fields_summary,
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_CONFLICT = 5
EXIT_UNAVAILABLE = 6
# How a followed job ended, when not "completed" (which is 0).
EXIT_JOB_FAILED = 7
EXIT_JOB_ABORTED = 8
EXIT_JOB_STOPPED = 9
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

JOB_EXIT = {
    "completed": EXIT_OK,
    "failed": EXIT_JOB_FAILED,
    "aborted": EXIT_JOB_ABORTED,
    "stopped": EXIT_JOB_STOPPED,
}

COMMANDS: tuple[str, ...] = ("login", "logout", "list", "get", "submit", "abort", "retry")
COMMANDS += ("delete", "stop", "resume", "restart", "log", "history", "stream", "schedules")
COMMANDS += ("actions", "health", "status", "stats", "server", "completion")
COMMANDS += ("consume",)

# Where ``args.server`` came from (``server_source``), as ``nick-jobs server`` tells it.
SERVER_SOURCES = {
    "argument": "given to login",
    "option": "from --server",
    "environment": f"from ${URL_VARIABLE}",
    "current": "the current server",
    "default": "the default: no server was chosen",
}


class UsageError(Exception):
    """The command line is wrong in a way argparse can't see (a bad key=value, say)."""


def exit_code(exc: ClientError) -> int:
    if isinstance(exc, ServerUnavailable):
        return EXIT_UNAVAILABLE
    return {401: EXIT_AUTH, 403: EXIT_AUTH, 404: EXIT_NOT_FOUND, 409: EXIT_CONFLICT}.get(
        exc.status or 0, EXIT_ERROR
    )


def fail(message: str) -> None:
    print(f"nick-jobs: {' '.join(str(message).split())}", file=sys.stderr)


# --- output ----------------------------------------------------------------------------


def _when(value: str | None) -> str:
    """``2026-11-23T11:40:11.373Z`` as ``2026-11-23 11:40:11``; ``-`` for null."""
    if not value:
        return "-"
    return value.replace("T", " ")[:19]


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Columns padded to their widest cell; the last column is cut to the terminal width."""
    rows = [[_one_line(cell) for cell in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]
    room = shutil.get_terminal_size((120, 24)).columns
    used = sum(widths[:-1]) + 2 * (len(widths) - 1)
    last = max(room - used, 10)
    for row in [list(headers), *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        tail = row[-1]
        if len(tail) > last:
            tail = tail[: last - 1] + "…"
        print("  ".join([*cells, tail]).rstrip())


class Rows(list[Any]):
    """A field whose value is several rows of cells: one line each, its cells aligned in a
    table and tab-separated in plain output, where each line repeats the field's name."""


def format_fields(pairs: Sequence[tuple[str, Any]], plain: bool) -> list[str]:
    """``field: value`` lines (``field<TAB>value`` when ``plain``)."""
    lines: list[str] = []
    if plain:
        for key, value in pairs:
            if isinstance(value, Rows):
                lines += ["\t".join([key, *(_one_line(cell) for cell in row)]) for row in value]
            else:
                lines.append(f"{key}\t{_one_line(_compact(value))}")
        return lines
    width = max(len(key) for key, _ in pairs)
    for key, value in pairs:
        label = (key + ":").ljust(width + 1)
        if isinstance(value, Rows):
            cells = [[_one_line(cell) for cell in row] for row in value]
            widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
            for n, row in enumerate(cells):
                text = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
                lines.append(f"{label if n == 0 else ' ' * len(label)}  {text}")
        else:
            lines.append(f"{label}  {_compact(value)}")
    return lines


def print_fields(pairs: Sequence[tuple[str, Any]], plain: bool) -> None:
    for line in format_fields(pairs, plain):
        print(line)


def _step_count(step: dict[str, Any]) -> str:
    """A step's ``done/total``: ``3/4``; ``-`` for a step that has not counted anything."""
    done, total = step.get("done"), step.get("total")
    if done is None and total is None:
        return "-"
    return f"{'-' if done is None else done}/{'-' if total is None else total}"


def progress_fields(progress: dict[str, Any] | None, plain: bool) -> list[tuple[str, Any]]:
    """The job's ``progress``: its percent and message, then a row for each step."""
    if not progress:
        return [("progress", "-")]
    percent = progress.get("percent")
    message = _one_line(progress.get("message") or "")
    if plain:
        summary: Any = Rows([["" if percent is None else percent, message]])
    else:
        summary = ("-%" if percent is None else f"{percent:.1f}%") + (
            f"  {message}" if message else ""
        )
    pairs = [("progress", summary)]
    steps = progress.get("steps") or []
    if steps:
        pairs.append(
            (
                "step" if plain else "steps",
                Rows([s.get("name", ""), _step_count(s), s.get("status", "")] for s in steps),
            )
        )
    return pairs


def job_fields(job: dict[str, Any], plain: bool = False) -> list[tuple[str, Any]]:
    """A job as ``field, value`` pairs, its progress and steps and its error included."""
    params = dict(job.get("params") or {})
    pairs = [
        ("uuid", job.get("uuid")),
        ("status", job.get("status")),
        ("action", params.pop("action", "")),
        ("title", job.get("title")),
        ("description", job.get("description")),
        ("actor", job.get("actor")),
        ("attempt", job.get("attempt")),
        ("created", _when(job.get("created"))),
        ("started", _when(job.get("started"))),
        ("finished", _when(job.get("finished"))),
        *progress_fields(job.get("progress"), plain),
        ("params", params),
        ("result", job.get("result")),
    ]
    if job.get("error"):
        error = job["error"]
        pairs.append(("error", f"{error.get('type')}: {error.get('message')}"))
    pairs.append(("url", job.get("@id")))
    return pairs


def job_row(job: dict[str, Any]) -> list[Any]:
    return [
        job.get("uuid"),
        job.get("status"),
        (job.get("params") or {}).get("action", ""),
        job.get("actor"),
        job.get("attempt"),
        _when(job.get("created")),
        job.get("title"),
    ]


JOB_HEADERS = ("ID", "STATUS", "ACTION", "ACTOR", "ATTEMPT", "CREATED", "TITLE")


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def show_job(args: argparse.Namespace, job: dict[str, Any]) -> None:
    if args.quiet:
        print(job["uuid"])
    elif args.output == "json":
        print_json(job)
    else:
        plain = args.output == "plain"
        print_fields(job_fields(job, plain), plain=plain)


# --- commands --------------------------------------------------------------------------


def login_hint(args: argparse.Namespace, server: str) -> str:
    """The command that logs in to ``server`` again: with the URL only when a bare
    ``nick-jobs login`` would log in elsewhere."""
    if args.server_source in {"option", "argument"}:
        elsewhere = os.environ.get(URL_VARIABLE) or current_server() or DEFAULT_URL
        if Client(elsewhere).url != server:
            return f"nick-jobs login {server}"
    return "nick-jobs login"


def expired_message(args: argparse.Namespace, session: StoredSession) -> str:
    assert session.expires is not None
    return (
        f"your session at {session.server} expired at {utc_text(session.expires)}; "
        f"log in again: {login_hint(args, session.server)}"
    )


def make_client(
    args: argparse.Namespace, *, with_token: bool = True, expired_ok: bool = False
) -> Client:
    """A client for the server; its ``url`` (normalised) keys the stored tokens.

    The token is ``--token``, else ``$NICK_JOBS_TOKEN``, else the stored one. A stored
    token that has expired is not sent: the command stops with :class:`SessionExpired`,
    or with ``expired_ok`` goes on without a token (``args.expired_session`` says so).
    ``args.session`` is the stored session in use, for the message of a refused token.
    """
    client = Client(args.server, timeout=args.timeout)
    args.session = args.expired_session = None
    if not with_token:
        return client
    client.token = args.token or os.environ.get("NICK_JOBS_TOKEN")
    if client.token:
        return client
    session = stored_session(client.url)
    if session is None:
        return client
    if session.expired:
        if not expired_ok:
            raise SessionExpired(expired_message(args, session))
        args.expired_session = session
    else:
        client.token = session.token
        args.session = session
    return client


def cmd_login(args: argparse.Namespace) -> int:
    url, login = args.url, args.login
    # ``login [URL] [LOGIN]``: a word with a scheme is the server, any other the login.
    if url is not None and "://" not in url:
        if login is not None:
            raise UsageError(f"not a URL: {url!r} (a URL starts with http:// or https://)")
        url, login = None, url
    if url is not None:
        url = Client(url).url
        if args.server_source == "option" and Client(args.server).url != url:
            raise UsageError("give the server once: as the URL or with --server")
        args.server, args.server_source = url, "argument"
    interactive = sys.stdin.isatty()
    if login is None:
        if not interactive:
            raise UsageError("give the login as an argument when stdin is not a terminal")
        login = input("Login: ").strip()
    if interactive:
        password = getpass.getpass(f"Password for {login} at {args.server}: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not login or not password:
        raise UsageError("a login and a password are needed")
    client = make_client(args, with_token=False)
    token = client.login(login, password)
    path = store_token(client.url, login, token)
    previous = current_server()
    set_current_server(client.url)
    if args.output == "json":
        print_json({"token": token})
    elif not args.quiet:
        print(f"Logged in to {client.url} as {login}; the token is in {path}.")
        if previous != client.url:
            print(f"{client.url} is now the current server.")
    return EXIT_OK


def cmd_logout(args: argparse.Namespace) -> int:
    client = make_client(args, expired_ok=True)
    expired = args.expired_session
    if not client.token and expired is None:
        if not args.quiet:
            print(f"Not logged in to {client.url}.")
        return EXIT_OK
    try:
        # An expired token needs no revoking: the server refuses it already.
        if client.token:
            client.logout()
    finally:
        # Forget the stored token even when the server can't be told: it is unusable here
        # from now on, and the server refuses it once it expires.
        forgotten = forget_token(client.url)
    if not args.quiet:
        if expired is not None and expired.expires is not None:
            note = f" (the session had expired at {utc_text(expired.expires)})"
        else:
            note = "" if forgotten else " (no stored token)"
        print(f"Logged out of {client.url}.{note}")
    return EXIT_OK


def session_state(session: StoredSession | None) -> tuple[str, str]:
    """``(state, text)``: ``valid``, ``expired``, ``unknown`` (no readable expiry) or
    ``none``, and how ``server`` and ``status`` say it."""
    if session is None:
        return "none", "not logged in"
    if session.expires is None:
        return "unknown", "its expiry can't be read from the token"
    if session.expired:
        return "expired", f"expired at {utc_text(session.expires)}"
    return "valid", f"valid until {utc_text(session.expires)}"


def cmd_server(args: argparse.Namespace) -> int:
    if args.url:
        set_current_server(Client(args.url).url)
        # What the commands now talk to: --server and $NICK_JOBS_URL still come first.
        if args.server_source != "option":
            args.server = None
            resolve_server(args)
    url = Client(args.server).url
    session = stored_session(url)
    state, text = session_state(session)
    info = {
        "server": url,
        "source": args.server_source,
        "current": current_server(),
        "login": session.login if session else None,
        "session": state,
        "expires": session.expires.isoformat() if session and session.expires else None,
    }
    if args.quiet:
        print(url)
    elif args.output == "json":
        print_json(info)
    else:
        source = SERVER_SOURCES[args.server_source]
        plain = args.output == "plain"
        expires = info["expires"] or ""
        pairs: list[tuple[str, Any]] = [
            ("server", Rows([[url, args.server_source]]) if plain else f"{url}  ({source})"),
        ]
        if args.server_source != "current" and info["current"]:
            pairs.append(("current", info["current"]))
        pairs.append(("login", info["login"] or "-"))
        pairs.append(("session", Rows([[state, expires]]) if plain else text))
        if os.environ.get("NICK_JOBS_TOKEN") or args.token:
            given = "--token" if args.token else "$NICK_JOBS_TOKEN"
            pairs.append(("token", f"{given} is sent instead of the stored token"))
        print_fields(pairs, plain=plain)
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    client = make_client(args)
    jobs = client.iter_jobs(
        status=args.status,
        action=args.action,
        actor=args.actor,
        q=args.search,
        parent=args.parent,
        limit=args.limit or None,
        sort=args.sort,
    )
    if args.quiet:
        for job in jobs:
            print(job["uuid"], flush=True)
    elif args.output == "json":
        print_json(list(jobs))
    elif args.output == "plain":
        for job in jobs:
            print("\t".join(_one_line(cell) for cell in job_row(job)), flush=True)
    else:
        rows = [job_row(job) for job in jobs]
        if rows:
            print_table(JOB_HEADERS, rows)
        else:
            print("No jobs.")
    return EXIT_OK


def cmd_get(args: argparse.Namespace) -> int:
    client = make_client(args)
    job = client.get_job(args.id)
    if not args.watch:
        show_job(args, job)
        return EXIT_OK
    return watch_job(args, client, job)


# The statuses after which there is nothing more to watch: a stopped job waits for a
# resume, which may never come.
WATCH_END = ("completed", "failed", "aborted", "stopped")
# Seconds between two GETs when the server refuses the job's event stream.
POLL_INTERVAL = 1.0


class JobWatch:
    """Shows a job again each time what it shows changes: on a terminal the old block is
    redrawn in place; elsewhere each new block is printed after the old one (a blank
    line between), or, with ``-o json``, each new state is one JSON object a line."""

    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.out = out
        self.quiet = args.quiet
        self.output = args.output
        self.live = not args.quiet and args.output == "table" and out.isatty()
        self.job: dict[str, Any] = {}
        self._last: list[str] | None = None

    def update(self, job: dict[str, Any]) -> None:
        self.job = job
        if self.quiet:
            return
        if self.output == "json":
            lines = [json.dumps(job, ensure_ascii=False)]
        else:
            plain = self.output == "plain"
            lines = format_fields(job_fields(job, plain), plain=plain)
        if lines == self._last:
            return
        if self.live:
            # Cut to the terminal so that no line wraps: the block is then exactly as many
            # rows as lines, and moving up that many rows reaches its top.
            width = shutil.get_terminal_size((80, 24)).columns - 1
            lines = [line if len(line) <= width else line[: width - 1] + "…" for line in lines]
            if self._last:
                self.out.write(f"\x1b[{len(self._last)}F\x1b[J")
        elif self._last is not None and self.output != "json":
            self.out.write("\n")
        self.out.write("".join(line + "\n" for line in lines))
        self.out.flush()
        self._last = lines

    def progress(self, data: dict[str, Any]) -> None:
        if data.get("attempt") in (None, self.job.get("attempt")):
            self.update({**self.job, "progress": data.get("progress")})


def watch_job(args: argparse.Namespace, client: Client, job: dict[str, Any]) -> int:
    """``get --watch``: show the job until it ends, from its event stream (or by polling
    when the server refuses a stream); the exit status says how it ended, as ``stream``'s
    does."""
    watch = JobWatch(args, sys.stdout)
    watch.update(job)
    uuid = job["uuid"]
    deleted = False
    if job.get("status") not in WATCH_END:
        try:
            stream = client.stream_job(uuid)
        except ClientError as exc:
            # A server without streams (404 from a job that exists), or one with all of
            # this user's streams taken (503): ask for the job once a second instead.
            if exc.status not in {404, 405, 503}:
                raise
            deleted = _poll_job(client, watch)
        else:
            deleted = _watch_stream(stream, watch)
    if deleted:
        fail(f"{uuid}: the job was deleted")
        return EXIT_NOT_FOUND
    job = watch.job
    if job.get("status") not in WATCH_END:
        # The stream ended without a final status event: ask for the job itself.
        job = client.get_job(uuid)
        watch.update(job)
    if args.quiet:
        print(uuid, flush=True)
    return _job_end(uuid, job)


def _watch_stream(stream: EventStream, watch: JobWatch) -> bool:
    """Show the stream's changes until the job ends; ``True`` when it was deleted."""
    with stream:
        for event in stream:
            data = event.json
            if event.event == "status" and isinstance(data, dict):
                watch.update(data)
                if data.get("status") in WATCH_END:
                    break
            elif event.event == "progress" and isinstance(data, dict):
                watch.progress(data)
            elif event.event == "close":
                return isinstance(data, dict) and data.get("reason") == "deleted"
    return False


def _poll_job(client: Client, watch: JobWatch) -> bool:
    """Show the job's changes, asking for it once a second; ``True`` when it was deleted."""
    while watch.job.get("status") not in WATCH_END:
        time.sleep(POLL_INTERVAL)
        try:
            watch.update(client.get_job(watch.job["uuid"]))
        except ClientError as exc:
            if exc.status == 404:
                return True
            raise
    return False


def _job_end(uuid: str, job: dict[str, Any]) -> int:
    """The exit status for how the job ended, with a line on stderr unless it completed."""
    status = job.get("status", "")
    if status != "completed":
        reason = status
        if status == "failed" and isinstance(job.get("error"), dict):
            reason += f": {job['error'].get('message')}"
        elif status == "stopped":
            reason += f" (resume with: nick-jobs resume {uuid})"
        fail(f"{uuid}: {reason}")
    return JOB_EXIT.get(status, EXIT_ERROR)


def cmd_status(args: argparse.Namespace) -> int:
    client = make_client(args)
    if args.id:
        return _status_of_job(args, client.get_job(args.id))
    if not args.quiet and not client.token:
        # On stderr: stdout keeps only the counts, for the scripts that read them.
        print(f"{client.url}: not logged in", file=sys.stderr)
    elif not args.quiet and args.session is not None:
        session = args.session
        state = session_state(session)[1]
        print(f"{client.url}: logged in as {session.login}, {state}", file=sys.stderr)
    counts = client.job_counts(action=args.action, actor=args.actor)
    if args.output == "json":
        print_json(counts)
    elif args.output == "plain" or args.quiet:
        for status, count in counts.items():
            print(f"{status}\t{count}")
    else:
        rows = [[status, count] for status, count in counts.items()]
        print_table(("STATUS", "JOBS"), [*rows, ["total", sum(counts.values())]])
    return EXIT_OK


def _status_of_job(args: argparse.Namespace, job: dict[str, Any]) -> int:
    percent = (job.get("progress") or {}).get("percent")
    summary = {
        "uuid": job.get("uuid"),
        "action": (job.get("params") or {}).get("action", ""),
        "status": job.get("status"),
        "attempt": job.get("attempt"),
        "percent": percent,
    }
    if args.quiet:
        print(summary["status"])
    elif args.output == "json":
        print_json(summary)
    elif args.output == "plain":
        cells = [*list(summary.values())[:4], "" if percent is None else percent]
        print("\t".join(_one_line(cell) for cell in cells))
    else:
        text = f"{summary['uuid']}  {summary['action']}  {summary['status']}"
        text += f" (attempt {summary['attempt']})"
        if percent is not None:
            text += f"  {percent:.1f}%"
        print(text)
    return EXIT_OK


# --- stats -----------------------------------------------------------------------------

# A sparkline's marks, from the fewest jobs in a mark to the most; a mark with none is
# a dot, so that one job is never mistaken for none.
SPARKS = "▁▂▃▄▅▆▇█"
NO_JOBS = "·"
FINISHED_OUTCOMES = ("completed", "failed", "aborted")


def duration_text(seconds: float) -> str:
    """``1.5s``, ``4m 10s``, ``1h 05m``, ``2d 3h``: the two largest units."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def spark_groups(values: Sequence[int], width: int) -> list[int]:
    """``values`` summed into at most ``width`` marks of equal length, the last mark
    ending with the last value (a first mark may hold fewer)."""
    size = max(-(-len(values) // max(width, 1)), 1)
    head = len(values) % size
    groups = [sum(values[:head])] if head else []
    groups += [sum(values[i : i + size]) for i in range(head, len(values), size)]
    return groups


def sparkline(values: Sequence[int], top: int) -> str:
    """One mark per value, scaled so that ``top`` is the highest mark."""
    marks = []
    for value in values:
        if value <= 0:
            marks.append(NO_JOBS)
        else:
            marks.append(SPARKS[min(-(-value * len(SPARKS) // max(top, 1)) - 1, len(SPARKS) - 1)])
    return "".join(marks)


def _span(first: str | None, last: str | None) -> str:
    """Two minutes as ``2026-11-23 10:41 to 11:40``, the date again only if it differs."""
    start, end = _when(first)[:16], _when(last)[:16]
    return f"{start} to {end[11:] if end[:10] == start[:10] else end}"


def stats_lines(data: dict[str, Any], room: int) -> list[str]:
    """The figures of ``GET /@jobs/@stats`` for people, ``room`` columns wide."""
    counts = data.get("counts") or {}
    lines = [f"{'STATUS':<10} JOBS"]
    lines += [f"{status:<10} {count}" for status, count in counts.items()]
    lines.append(f"{'total':<10} {data.get('total', sum(counts.values()))}")
    by_action = data.get("by_action") or {}
    if by_action:
        statuses = list(counts) or list(JOB_STATUSES)
        headers = ["ACTION", "TOTAL", *(status.upper() for status in statuses)]
        rows = [
            [name, str(figures.get("total", 0)), *(str(figures.get(s, 0)) for s in statuses)]
            for name, figures in by_action.items()
        ]
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
        lines.append("")
        for row in [headers, *rows]:
            lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    lines.append("")
    oldest = data.get("oldest_waiting")
    if oldest:
        lines.append(
            f"oldest waiting: {duration_text(oldest.get('age') or 0.0)}  {oldest.get('uuid')}  "
            f"{oldest.get('action')}  {oldest.get('actor')}  "
            f"(since {_when(oldest.get('waiting_since'))})"
        )
    else:
        lines.append("oldest waiting: none")
    minutes = data.get("finished_per_minute") or []
    if minutes:
        label = max(len(outcome) for outcome in FINISHED_OUTCOMES)
        series = {o: [int(m.get(o) or 0) for m in minutes] for o in FINISHED_OUTCOMES}
        totals = {o: sum(values) for o, values in series.items()}
        width = max(room - label - 2 - len(str(max(totals.values()))) - 2, 10)
        grouped = {o: spark_groups(values, width) for o, values in series.items()}
        top = max((max(values) for values in grouped.values()), default=0)
        per = -(-len(minutes) // width) if len(minutes) > width else 1
        each = "a minute" if per == 1 else f"per {per} minutes"
        span = _span(minutes[0].get("minute"), minutes[-1].get("minute"))
        lines.append("")
        lines.append(f"finished, {span} UTC, one mark {each}, {SPARKS[-1]} = {top}:")
        for outcome in FINISHED_OUTCOMES:
            mark = sparkline(grouped[outcome], top)
            lines.append(f"{outcome:<{label}}  {mark}  {totals[outcome]}")
    return lines


def stats_plain(data: dict[str, Any]) -> list[str]:
    """Tab-separated lines: ``status``, ``total``, ``action``, ``oldest_waiting`` and
    ``minute`` lines, each led by its kind."""
    counts = data.get("counts") or {}
    statuses = list(counts) or list(JOB_STATUSES)
    lines = [f"status\t{status}\t{count}" for status, count in counts.items()]
    lines.append(f"total\t{data.get('total', sum(counts.values()))}")
    for name, figures in (data.get("by_action") or {}).items():
        cells = [name, figures.get("total", 0), *(figures.get(s, 0) for s in statuses)]
        lines.append("\t".join(["action", *map(str, cells)]))
    oldest = data.get("oldest_waiting")
    if oldest:
        cells = [oldest.get(key) for key in ("uuid", "action", "actor", "age")]
        lines.append("\t".join(["oldest_waiting", *map(str, cells)]))
    else:
        lines.append("oldest_waiting\t-")
    for minute in data.get("finished_per_minute") or []:
        cells = [_when(minute.get("minute")), *(minute.get(o, 0) for o in FINISHED_OUTCOMES)]
        lines.append("\t".join(["minute", *map(str, cells)]))
    return lines


def cmd_stats(args: argparse.Namespace) -> int:
    data = make_client(args).stats(minutes=args.minutes)
    if args.output == "json":
        print_json(data)
    elif args.output == "plain" or args.quiet:
        for line in stats_plain(data):
            print(line)
    else:
        for line in stats_lines(data, shutil.get_terminal_size((120, 24)).columns):
            print(line)
    return EXIT_OK


def parse_params(
    pairs: Sequence[str],
    params_file: str | None,
    action_hint: str = "the action is the first argument, not a parameter",
) -> dict[str, Any]:
    """``--params-file`` (a JSON object, ``-`` for stdin), then each ``key=value`` over it.

    A value is JSON when it parses as JSON (``sleep=2``, ``result={"a": 1}``, ``ok=true``)
    and a string otherwise (``fail=disk full``).
    """
    params: dict[str, Any] = {}
    if params_file:
        try:
            text = sys.stdin.read() if params_file == "-" else Path(params_file).read_text()
            loaded = json.loads(text)
        except OSError as exc:
            raise UsageError(f"can't read {params_file}: {exc.strerror}") from None
        except ValueError as exc:
            raise UsageError(f"{params_file} is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"{params_file} must hold a JSON object")
        params.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"parameters are key=value, not {pair!r}")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    if "action" in params:
        raise UsageError(action_hint)
    return params


#: The most jobs the API takes in one bulk submit; a longer file is sent in parts.
BULK_LIMIT = 1000


def cmd_submit(args: argparse.Namespace) -> int:
    if args.from_file is not None:
        return submit_from_file(args)
    if args.action is None:
        raise UsageError("submit takes an ACTION (see `nick-jobs actions`), or --from FILE")
    params = parse_params(args.params, args.params_file)
    client = make_client(args)
    options = {
        "title": args.title,
        "description": args.description,
        "idempotency_key": args.idempotency_key,
    }
    if args.stream:
        return follow_job(args, client, client.submit_and_stream(args.action, params, **options))
    show_job(args, client.submit_job(args.action, params, **options))
    return EXIT_OK


def read_jobs_file(name: str) -> list[tuple[int, dict[str, Any]]]:
    """The job bodies of a JSON Lines file (``-``: stdin), with their line numbers."""
    text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    jobs: list[tuple[int, dict[str, Any]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            body = json.loads(line)
        except ValueError as exc:
            raise UsageError(f"{name}:{number}: not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise UsageError(
                f'{name}:{number}: a job is a JSON object, e.g. {{"params": {{"action": "dummy"}}}}'
            )
        jobs.append((number, body))
    if not jobs:
        raise UsageError(f"{name}: no jobs in it")
    return jobs


def submit_from_file(args: argparse.Namespace) -> int:
    """``submit --from FILE``: every line a job, sent as bulk submits of up to
    :data:`BULK_LIMIT` jobs, each all or nothing."""
    if args.action is not None or args.params or args.params_file:
        raise UsageError("--from takes the jobs from the file: give no ACTION or params")
    if args.stream or args.title or args.description:
        raise UsageError("--from takes no --stream, --title or --description")
    lines = read_jobs_file(args.from_file)
    client = make_client(args)
    parts = [lines[start : start + BULK_LIMIT] for start in range(0, len(lines), BULK_LIMIT)]
    submitted: list[dict[str, Any]] = []
    for number, part in enumerate(parts):
        key = args.idempotency_key
        if key and len(parts) > 1:
            key = f"{key}.{number}"
        try:
            submitted += client.submit_jobs([body for _, body in part], idempotency_key=key)
        except ClientError as exc:
            show_jobs(args, submitted)
            where = f"lines {part[0][0]}-{part[-1][0]}" if len(parts) > 1 else "the file"
            fail(f"nothing of {where} was submitted: {_bulk_error(args, exc, part)}")
            return exit_code(exc)
    show_jobs(args, submitted)
    return EXIT_OK


def _bulk_error(
    args: argparse.Namespace, exc: ClientError, part: list[tuple[int, dict[str, Any]]]
) -> str:
    """The API's error, its faulty bodies named by the file's line numbers."""
    error = exc.body.get("error") if isinstance(exc.body, dict) else None
    fields = error.get("fields") if isinstance(error, dict) else None
    if not isinstance(fields, dict) or not all(str(key).isdigit() for key in fields):
        return _client_error_message(args, exc)
    return "; ".join(
        f"{args.from_file}:{part[int(index)][0]}: " + ", ".join(fields_summary(errors))
        for index, errors in sorted(fields.items(), key=lambda item: int(item[0]))
    )


def show_jobs(args: argparse.Namespace, jobs: list[dict[str, Any]]) -> None:
    """Several jobs: a table, their uuids (``--quiet``) or a JSON array."""
    if args.quiet:
        for job in jobs:
            print(job["uuid"])
    elif args.output == "json":
        print_json(jobs)
    elif args.output == "plain":
        for job in jobs:
            print("\t".join(_one_line(cell) for cell in job_row(job)))
    elif jobs:
        print_table(JOB_HEADERS, [job_row(job) for job in jobs])


def _each_job(verb: str, call: Callable[[Client, str], None]) -> Callable[..., int]:
    """A command that applies ``call`` to each ID; it goes on after a failure."""

    def command(args: argparse.Namespace) -> int:
        client = make_client(args)
        status = EXIT_OK
        for uuid in args.ids:
            try:
                call(client, uuid)
            except ClientError as exc:
                fail(f"{uuid}: {exc.message}")
                status = status or exit_code(exc)
                continue
            if args.quiet:
                print(uuid, flush=True)
            elif args.output != "json":  # the API answers 204, without a body
                print(f"{verb} {uuid}", flush=True)
        return status

    return command


cmd_abort = _each_job("aborted", Client.abort_job)
cmd_retry = _each_job("retried", Client.retry_job)
cmd_delete = _each_job("deleted", Client.delete_job)
# The answer to stop comes at once; the job stops at the handler's next check.
cmd_stop = _each_job("stopping", Client.stop_job)
cmd_resume = _each_job("resumed", Client.resume_job)


def cmd_restart(args: argparse.Namespace) -> int:
    show_job(args, make_client(args).restart_job(args.id))
    return EXIT_OK


# --- log and history -------------------------------------------------------------------


def _log_time(value: str | None) -> str:
    """``2026-11-23T11:40:11.373Z`` as ``2026-11-23 11:40:11.373``."""
    return (value or "-").replace("T", " ").rstrip("Z")


def print_log_line(args: argparse.Namespace, line: dict[str, Any], *, stream: bool) -> None:
    """One log line in the output format; ``stream``: JSON is one object a line."""
    if args.quiet:
        text = _one_line(line.get("message", ""))
    elif args.output == "json":
        text = json.dumps(line, ensure_ascii=False) if stream else ""
    elif args.output == "plain":
        cells = (line.get("time"), line.get("level"), line.get("attempt"), line.get("message"))
        text = "\t".join(_one_line(cell) for cell in cells)
    else:
        text = log_text(line)
    if text:
        print(text, flush=True)


def log_text(line: dict[str, Any]) -> str:
    level = str(line.get("level", ""))
    return (
        f"{_log_time(line.get('time'))}  {level:<7}  #{line.get('attempt')}  "
        f"{_one_line(line.get('message', ''))}"
    )


def cmd_log(args: argparse.Namespace) -> int:
    client = make_client(args)
    if not args.follow:
        lines = client.iter_job_log(args.id, level=args.level)
        if args.output == "json" and not args.quiet:
            print_json(list(lines))
        else:
            for line in lines:
                print_log_line(args, line, stream=False)
        return EXIT_OK
    # The followed log is the whole log, from its first line: nothing to join to a page.
    with client.follow_job_log(args.id, level=args.level) as stream:
        for event in stream:
            if event.event == "log":
                line = {k: v for k, v in event.json.items() if k != "uuid"}
                print_log_line(args, line, stream=True)
            elif event.event == "close" and (event.json or {}).get("reason") == "deleted":
                fail(f"{args.id}: the job was deleted")
                return EXIT_NOT_FOUND
    return EXIT_OK


def _paused(event: Event) -> bool:
    """A ``stopped`` status: the server keeps the stream open (the job may be resumed),
    but for a command that follows the job this is where it ends."""
    return event.event == "status" and (event.json or {}).get("status") == "stopped"


def _history_details(event: dict[str, Any]) -> str:
    details = []
    if isinstance(event.get("error"), dict):
        error = event["error"]
        details.append(f"{error.get('type')}: {error.get('message')}")
    if event.get("result"):
        details.append("result " + _compact(event["result"]))
    previous = event.get("previous_attempt")
    if isinstance(previous, dict):
        details.append(f"attempt {previous.get('attempt')} was {previous.get('status')}")
    return "; ".join(details)


def cmd_history(args: argparse.Namespace) -> int:
    history = make_client(args).job_history(args.id)
    if args.quiet:
        for event in history:
            print(event["event"])
    elif args.output == "json":
        print_json(history)
    else:
        rows = [
            [
                _log_time(e.get("time")),
                e.get("event"),
                e.get("by"),
                e.get("attempt"),
                _history_details(e),
            ]
            for e in history
        ]
        if args.output == "plain":
            for row in rows:
                print("\t".join(_one_line(cell) for cell in row))
        else:
            print_table(("TIME", "EVENT", "BY", "ATTEMPT", "DETAILS"), rows)
    return EXIT_OK


# --- following a job: stream and submit --stream ---------------------------------------


def _elapsed(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    return (f"{hours}:" if hours else "") + f"{rest // 60:02d}:{rest % 60:02d}"


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def current_step(progress: dict[str, Any]) -> str:
    """The step running now, else the last one done; ``""`` when there are none."""
    steps = progress.get("steps") or []
    for step in steps:
        if step.get("status") == "running":
            return str(step.get("name", ""))
    done = [step for step in steps if step.get("status") == "done"]
    return str(done[-1].get("name", "")) if done else ""


class JobView:
    """Shows a job's events as they come: lines for people, tab-separated lines, JSON
    lines, or nothing (``-q``). On a terminal, a one-line progress bar is redrawn in place
    under the lines, once a second too so that the elapsed time moves."""

    BAR_WIDTH = 20

    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.out = out
        self.quiet = args.quiet
        self.output = args.output
        self.live = not args.quiet and args.output == "table" and out.isatty()
        self.job: dict[str, Any] = {}
        self.progress: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._ticker: threading.Thread | None = None
        self._bar_shown = False
        self._named = False

    def __enter__(self) -> JobView:
        if self.live:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            self._clear_bar()
            self.out.flush()

    def _tick(self) -> None:
        while not self._done.wait(1.0):
            with self._lock:
                if self._bar_shown:
                    self._draw_bar()

    # --- events

    def show(self, event: Event) -> None:
        data = event.json
        if event.event == "status" and isinstance(data, dict):
            self.job = data
            if data.get("progress"):
                self.progress = data["progress"]
        elif event.event == "progress" and isinstance(data, dict):
            self.progress = data.get("progress") or self.progress
        if self.quiet:
            return
        if self.output == "json":
            record = {"event": event.event, "id": event.id, "data": data}
            self._line(json.dumps(record, ensure_ascii=False))
        elif self.output == "plain":
            self._line(self._plain(event.event, data))
        else:
            self._line(self._text(event.event, data))

    def _plain(self, kind: str, data: Any) -> str | None:
        if kind == "status":
            cells = ["status", data.get("status"), data.get("attempt")]
        elif kind == "progress":
            progress = data.get("progress") or {}
            percent = progress.get("percent")
            cells = ["progress", "" if percent is None else percent, current_step(progress)]
            cells.append(progress.get("message") or "")
        elif kind == "log":
            cells = ["log", data.get("time"), data.get("level"), data.get("attempt")]
            cells.append(data.get("message"))
        elif kind == "close":
            cells = ["close", data.get("reason")]
        else:
            cells = [kind, _compact(data)]
        return "\t".join(_one_line("" if cell is None else cell) for cell in cells)

    def _text(self, kind: str, data: Any) -> str | None:
        if kind == "status":
            status = data.get("status")
            text = f"{status} (attempt {data.get('attempt')})"
            if not self._named:
                # The first status names the job: submit --stream has not shown its id.
                self._named = True
                text = f"{data.get('uuid')}  {_one_line(data.get('title', ''))}\n{text}"
            started, finished = _parse_time(data.get("started")), _parse_time(data.get("finished"))
            if started is not None and finished is not None:
                text += f" after {_elapsed(finished - started)}"
            if status == "failed" and isinstance(data.get("error"), dict):
                text += f": {_one_line(data['error'].get('message'))}"
            elif status == "completed" and data.get("result"):
                text += f": {_compact(data['result'])}"
            return text
        if kind == "log":
            return log_text(data)
        if kind == "progress":
            # On a terminal the bar shows it; in a pipe, a line says it.
            return None if self.live else self._bar_text(with_bar=False)
        return None  # close: the end, which the caller reports

    def _line(self, text: str | None) -> None:
        with self._lock:
            self._clear_bar()
            if text is not None:
                self.out.write(text + "\n")
            if self.live and self.job.get("status") in {"created", "running"}:
                self._draw_bar()
            self.out.flush()

    # --- the bar

    def _bar_text(self, *, with_bar: bool = True) -> str:
        progress = self.progress or {}
        percent = progress.get("percent")
        status = self.job.get("status", "")
        parts = [f"{status:<9}"]
        if with_bar:
            filled = round((percent or 0) / 100 * self.BAR_WIDTH)
            parts.append("[" + "#" * filled + "-" * (self.BAR_WIDTH - filled) + "]")
        parts.append("   -%" if percent is None else f"{percent:5.1f}%")
        started = _parse_time(self.job.get("started"))
        if started is not None and status == "running":
            parts.append(_elapsed(time.time() - started))
        step = current_step(progress)
        if step:
            parts.append(step)
        if progress.get("message") and progress.get("message") != step:
            parts.append(f"· {progress['message']}")
        return " ".join(parts)

    def _draw_bar(self) -> None:
        width = shutil.get_terminal_size((80, 24)).columns
        text = self._bar_text()
        if len(text) > width - 1:
            text = text[: width - 2] + "…"
        self.out.write("\r" + text + "\x1b[K")
        self.out.flush()
        self._bar_shown = True

    def _clear_bar(self) -> None:
        if self._bar_shown:
            self.out.write("\r\x1b[K")
            self._bar_shown = False


def follow_job(args: argparse.Namespace, client: Client, stream: EventStream) -> int:
    """Show ``stream``'s events until the job ends; the exit status says how it ended."""
    closed: dict[str, Any] = {}
    with stream, JobView(args, sys.stdout) as view:
        for event in stream:
            view.show(event)
            if event.event == "close":
                closed = event.json if isinstance(event.json, dict) else {}
            elif _paused(event):
                break
    uuid = stream.uuid or view.job.get("uuid", "")
    job = view.job
    if closed.get("reason") == "deleted":
        fail(f"{uuid}: the job was deleted")
        return EXIT_NOT_FOUND
    if job.get("status") not in JOB_EXIT:
        # The stream ended without a final status event (a server that closes first):
        # ask for the job itself.
        job = client.get_job(uuid)
    if args.quiet:
        print(uuid, flush=True)
    return _job_end(uuid, job)


def cmd_stream(args: argparse.Namespace) -> int:
    client = make_client(args)
    return follow_job(args, client, client.stream_job(args.id))


# --- scheduled jobs --------------------------------------------------------------------

SCHEDULE_HEADERS = ("ID", "ENABLED", "SCHEDULE", "TIMEZONE", "ACTION", "NEXT RUN", "TITLE")


def _enabled(item: dict[str, Any]) -> str:
    if item.get("enabled"):
        return "yes"
    # Disabled by a refused firing, not by hand: worth seeing in a list.
    return "no (refused)" if item.get("skipped") else "no"


def schedule_row(item: dict[str, Any]) -> list[Any]:
    return [
        item.get("id"),
        _enabled(item),
        item.get("schedule"),
        item.get("timezone"),
        item.get("action"),
        _when(item.get("next_run")),
        item.get("title"),
    ]


def schedule_fields(item: dict[str, Any]) -> list[tuple[str, Any]]:
    return [
        ("id", item.get("id")),
        ("action", item.get("action")),
        ("schedule", item.get("schedule")),
        ("timezone", item.get("timezone")),
        ("enabled", _enabled(item)),
        *_skipped(item),
        ("title", item.get("title")),
        ("description", item.get("description")),
        ("params", item.get("params") or {}),
        ("last_run", _when(item.get("last_run"))),
        ("next_run", _when(item.get("next_run"))),
        ("declared", "yes" if item.get("declared") else "no"),
        ("url", item.get("@id")),
    ]


def _skipped(item: dict[str, Any]) -> list[tuple[str, Any]]:
    skipped = item.get("skipped")
    if not skipped:
        return []
    return [("refused", f"{_when(skipped.get('at'))}: {skipped.get('message')}")]


def show_schedule(args: argparse.Namespace, item: dict[str, Any]) -> None:
    if args.quiet:
        print(item["id"])
    elif args.output == "json":
        print_json(item)
    else:
        print_fields(schedule_fields(item), plain=args.output == "plain")


def cmd_schedules_list(args: argparse.Namespace) -> int:
    items = make_client(args).list_scheduled_jobs()
    if args.quiet:
        for item in items:
            print(item["id"])
    elif args.output == "json":
        print_json(items)
    elif args.output == "plain":
        for item in items:
            print("\t".join(_one_line(cell) for cell in schedule_row(item)))
    elif items:
        print_table(SCHEDULE_HEADERS, [schedule_row(item) for item in items])
    else:
        print("No scheduled jobs.")
    return EXIT_OK


def cmd_schedules_get(args: argparse.Namespace) -> int:
    show_schedule(args, make_client(args).get_scheduled_job(args.id))
    return EXIT_OK


def _schedule_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The properties the command line gives; ``params`` only when any were given."""
    hint = "the action is --action, not a parameter"
    changes: dict[str, Any] = {
        "action": args.action,
        "schedule": args.schedule,
        "title": args.title,
        "description": args.description,
        "timezone": args.timezone,
        "enabled": args.enabled,
    }
    if args.params or args.params_file:
        changes["params"] = parse_params(args.params, args.params_file, hint)
    return changes


def cmd_schedules_add(args: argparse.Namespace) -> int:
    changes = _schedule_changes(args)
    action, schedule = changes.pop("action"), changes.pop("schedule")
    params = changes.pop("params", None)
    item = make_client(args).create_scheduled_job(args.id, action, schedule, params, **changes)
    show_schedule(args, item)
    return EXIT_OK


def cmd_schedules_update(args: argparse.Namespace) -> int:
    changes = _schedule_changes(args)
    if all(value is None for value in changes.values()):
        raise UsageError("nothing to change: give --schedule, --action, params or another option")
    show_schedule(args, make_client(args).update_scheduled_job(args.id, **changes))
    return EXIT_OK


def cmd_schedules_remove(args: argparse.Namespace) -> int:
    client = make_client(args)
    status = EXIT_OK
    for id in args.ids:
        try:
            client.delete_scheduled_job(id)
        except ClientError as exc:
            fail(f"{id}: {exc.message}")
            status = status or exit_code(exc)
            continue
        if args.quiet:
            print(id, flush=True)
        elif args.output != "json":  # 204, without a body
            print(f"removed {id}", flush=True)
    return status


def cmd_actions(args: argparse.Namespace) -> int:
    actions = make_client(args).job_actions(q=args.search)
    if args.quiet:
        for action in actions:
            print(action["name"])
    elif args.output == "json":
        print_json(actions)
    else:
        rows = [
            [
                a["name"],
                a.get("permission") or "",
                ",".join((a.get("params") or {}).get("properties", {})) or "-",
                a.get("title") or "",
            ]
            for a in actions
        ]
        if args.output == "plain":
            for row in rows:
                print("\t".join(row))
        elif rows:
            print_table(("NAME", "PERMISSION", "PARAMS", "TITLE"), rows)
        else:
            print("No actions you may submit.")
    return EXIT_OK


def cmd_health(args: argparse.Namespace) -> int:
    # Health needs no token: an expired one is simply not sent.
    health = make_client(args, expired_ok=True).health()
    if args.output == "json":
        print_json(health)
    elif not args.quiet:
        endpoint = health["endpoint"]
        how = f"{endpoint} answered {health['http_status']}"
        body = health["body"]
        if endpoint == "/healthz/ready" and isinstance(body, dict):
            for name, check in (body.get("checks") or {}).items():
                how += f"; {name} {check.get('status')}"
                # A check the server does not need for readiness (an optional scheduler,
                # say) may be down on a ready server: say so, or "ok" would read oddly.
                if check.get("required") is False and check.get("status") != "ok":
                    how += " (not required)"
        elif endpoint == "/healthz":
            how += " (liveness only: this server has no /healthz/ready)"
        else:
            how += " (this server has no /healthz)"
            if health["authenticated"] is False:
                how += "; not logged in"
        print(f"ok {health['url']}: {how} in {health['elapsed_ms']:.0f} ms")
    return EXIT_OK


def cmd_completion(args: argparse.Namespace) -> int:
    # The whole command line's parser, which the root parser puts in every namespace.
    sys.stdout.write(completion_script(args.root_parser, args.shell))
    return EXIT_OK


def cmd_consume(args: argparse.Namespace) -> int:
    # Imported here: the other commands need none of it.
    from nick_jobs_client.cli.consume import consume

    consume(args, make_client(args))
    return EXIT_OK


def run(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the expected failures into one line on stderr and an exit status."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            if hasattr(args, "server"):
                resolve_server(args)
            return command(args)
        except SessionExpired as exc:
            fail(str(exc))
            return EXIT_AUTH
        except ClientError as exc:
            fail(_client_error_message(args, exc))
            return exit_code(exc)
        except (UsageError, ValueError) as exc:
            fail(str(exc))
            return EXIT_USAGE
        except BrokenPipeError:
            raise  # the reader went away: guarded() below ends quietly
        except OSError as exc:  # writing the tokens file, say
            fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
            return EXIT_ERROR
        except KeyboardInterrupt:
            print(file=sys.stderr)
            return EXIT_INTERRUPTED
        except EOFError:
            fail("no input")
            return EXIT_USAGE

    def guarded(args: argparse.Namespace) -> int:
        try:
            code = wrapper(args)
            sys.stdout.flush()
            return code
        except BrokenPipeError:
            # The reader (head, say) went away: stop quietly, without a flush error at exit.
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_BROKEN_PIPE

    return guarded


def _client_error_message(args: argparse.Namespace, exc: ClientError) -> str:
    message = exc.message
    if exc.status != 401 or args.command == "login":
        return message
    session: StoredSession | None = getattr(args, "session", None)
    if session is None:
        return message + f" (log in with: nick-jobs login -s {args.server})"
    if session.expired:  # it expired on the way
        return expired_message(args, session)
    until = f", valid until {utc_text(session.expires)}," if session.expires else ""
    return message + (
        f" (your session at {session.server}{until} was refused: the server revoked it or "
        f"no longer accepts it; log in again: {login_hint(args, session.server)})"
    )


# --- argument parsing ------------------------------------------------------------------


def _common_options() -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    group = common.add_argument_group("server and output")
    group.add_argument(
        "--server",
        "-s",
        help=f"the service's URL (default: ${URL_VARIABLE}, else the current server that "
        f"`login` or `server URL` chose, else {DEFAULT_URL})",
    )
    group.add_argument(
        "--token",
        help="a bearer token (default: $NICK_JOBS_TOKEN, or the one `login` stored)",
    )
    group.add_argument(
        "--output",
        "-o",
        choices=("table", "json", "plain"),
        default="table" if sys.stdout.isatty() else "plain",
        help="table (the default on a terminal), json (the API's JSON) or plain "
        "(tab-separated, the default when piped)",
    )
    group.add_argument("--quiet", "-q", action="store_true", help="print ids only, one a line")
    group.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per request (default: %(default)s)"
    )
    return common


# ``subparsers`` below: what ArgumentParser.add_subparsers() returns, a class argparse
# keeps private, hence typed as Any.
def add_client_commands(subparsers: Any) -> None:
    """Add the client subcommands to the ``nick-jobs`` parser's ``subparsers``."""
    common = _common_options()

    def add(
        name: str, command: Callable[[argparse.Namespace], int], help: str, **kw: Any
    ) -> Parser:
        parser: Parser = subparsers.add_parser(
            name, help=help, description=help[0].upper() + help[1:] + ".", parents=[common], **kw
        )
        parser.set_defaults(func=run(command))
        return parser

    login = add(
        "login",
        cmd_login,
        "log in to a nick-jobs server, store the token and make it the current server",
    )
    login.add_argument(
        "url",
        nargs="?",
        metavar="URL",
        help="the server, as http://... or https://... (default: as --server says)",
    )
    login.add_argument(
        "login", nargs="?", metavar="LOGIN", help="asked for on a terminal when omitted"
    )
    add("logout", cmd_logout, "revoke the stored token and forget it; the server stays current")
    server = add(
        "server",
        cmd_server,
        "show the server the commands talk to, and whether its stored session is valid",
    )
    server.add_argument(
        "url", nargs="?", metavar="URL", help="make this the current server (without logging in)"
    )

    lst = add("list", cmd_list, "list jobs, newest first (--sort oldest: oldest first)")
    lst.add_argument("--status", choices=JOB_STATUSES)
    lst.add_argument("--action", help="only jobs of this action")
    lst.add_argument("--actor", help="only jobs of this user")
    lst.add_argument("--search", metavar="TEXT", help="only jobs whose title or description has it")
    lst.add_argument("--parent", metavar="UUID", help="only the restarts of this job")
    lst.add_argument("--sort", choices=("newest", "oldest"), help="default: newest first")
    lst.add_argument(
        "--limit",
        type=_non_negative,
        default=100,
        help="at most this many jobs, across pages (default: %(default)s; 0 for all)",
    )

    get = add("get", cmd_get, "show a job, its progress and its steps")
    get.add_argument("id", metavar="ID")
    get.add_argument(
        "--watch",
        "-w",
        action="store_true",
        help="show it again at each change until it ends; the exit status says how",
    )

    status = add("status", cmd_status, "show a job's status, or how many jobs are in each")
    status.add_argument("id", metavar="ID", nargs="?", help="without it: the counts")
    status.add_argument("--action", help="count only the jobs of this action")
    status.add_argument("--actor", help="count only the jobs of this user")

    stats = add(
        "stats",
        cmd_stats,
        "show how many jobs are in each status and of each action, the oldest waiting job "
        "and the jobs finished in each of the last minutes",
    )
    stats.add_argument(
        "--minutes",
        type=_window,
        metavar="N",
        help="how many minutes of finished jobs, 1 to 1440 (default: the server's, 60)",
    )

    submit = add("submit", cmd_submit, "submit a job, or the jobs of a file")
    submit.key_values = True
    submit.add_argument("action", nargs="?", metavar="ACTION", help="see `nick-jobs actions`")
    _add_params_arguments(submit)
    submit.add_argument("--title")
    submit.add_argument("--description")
    submit.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="submitting again with the same key returns the first job",
    )
    submit.add_argument(
        "--from",
        dest="from_file",
        metavar="FILE",
        help="submit the jobs of a JSON Lines file (- for stdin), one API body a line, "
        'e.g. {"params": {"action": "dummy"}, "title": "…"}: all of a file (of each '
        f"{BULK_LIMIT} lines) or none; with --idempotency-key, safe to run again",
    )
    submit.add_argument(
        "--stream",
        "--follow",
        action="store_true",
        help="show the job's progress and log until it ends; the exit status says how",
    )

    for name, command, help in (
        ("abort", cmd_abort, "abort created or running jobs"),
        ("retry", cmd_retry, "run failed or aborted jobs again"),
        ("delete", cmd_delete, "delete jobs that are not running"),
        ("stop", cmd_stop, "ask running jobs to stop, to be resumed later"),
        ("resume", cmd_resume, "run stopped jobs again from where they stopped"),
    ):
        add(name, command, help).add_argument("ids", nargs="+", metavar="ID")

    add("restart", cmd_restart, "submit a new job made from a finished one").add_argument(
        "id", metavar="ID"
    )

    log = add("log", cmd_log, "show a job's log, oldest first")
    log.add_argument("id", metavar="ID")
    log.add_argument("--level", choices=LOG_LEVELS, help="only lines at this level or above")
    log.add_argument(
        "--follow", "-f", action="store_true", help="then show new lines until the job ends"
    )

    add("history", cmd_history, "show what happened to a job").add_argument("id", metavar="ID")
    add("stream", cmd_stream, "follow a job until it ends").add_argument("id", metavar="ID")

    consume = add(
        "consume",
        cmd_consume,
        "run the jobs of remote actions with a shell command, until SIGTERM or Ctrl-C",
    )
    consume.add_argument("actions", nargs="+", metavar="ACTION", help="a remote action")
    consume.add_argument(
        "--exec",
        dest="exec_command",
        metavar="COMMAND",
        required=True,
        help="run for each job through the shell: the params as JSON on stdin, "
        "$NICK_JOBS_JOB_UUID and $NICK_JOBS_ATTEMPT set; stdout (a JSON object) is the "
        "result, each stderr line a log line, an exit status other than 0 fails the job",
    )
    consume.add_argument(
        "--concurrency",
        "-c",
        type=_positive,
        default=1,
        metavar="N",
        help="jobs at a time, 1 to 100 (default: %(default)s)",
    )
    consume.add_argument(
        "--labels",
        nargs="+",
        action="extend",
        metavar="KEY=VALUE",
        help="only the actions with these labels",
    )
    consume.add_argument(
        "--claims",
        nargs="+",
        action="extend",
        metavar="KEY=VALUE",
        help="what this consumer offers the jobs' claims",
    )
    consume.add_argument(
        "--grace",
        type=_seconds,
        default=30.0,
        metavar="S",
        help="on SIGTERM or Ctrl-C, seconds the running jobs get to end before they are "
        "released (default: %(default)s)",
    )
    consume.add_argument(
        "--wait",
        type=_seconds,
        default=20.0,
        metavar="S",
        help="seconds a claim waits for a job, at most 30 (default: %(default)s); a stop "
        "lets the claim in flight answer",
    )

    schedules = subparsers.add_parser(
        "schedules",
        help="list, show, add, change and remove scheduled jobs",
        description="Scheduled jobs: cron rules that submit jobs (administrators only).",
    )
    schedule_commands = schedules.add_subparsers(
        dest="schedules_command", required=True, metavar="{list,get,add,update,remove}"
    )

    def add_schedule_command(
        name: str, command: Callable[..., int], help: str, **kw: Any
    ) -> Parser:
        parser: Parser = schedule_commands.add_parser(
            name, help=help, description=help[0].upper() + help[1:] + ".", parents=[common], **kw
        )
        parser.set_defaults(func=run(command))
        return parser

    add_schedule_command("list", cmd_schedules_list, "list the scheduled jobs")
    add_schedule_command("get", cmd_schedules_get, "show a scheduled job").add_argument(
        "id", metavar="ID"
    )
    for name, command, help, new in (
        ("add", cmd_schedules_add, "add a scheduled job", True),
        ("update", cmd_schedules_update, "change a scheduled job", False),
    ):
        parser = add_schedule_command(name, command, help)
        parser.key_values = True
        parser.add_argument(
            "id",
            metavar="ID",
            help="1 to 100 lowercase letters, digits, - or _" if new else None,
        )
        _add_params_arguments(parser, "the params, which replace the old ones" if not new else None)
        parser.add_argument(
            "--schedule", metavar="CRON", required=new, help='5 cron fields, e.g. "0 2 * * *"'
        )
        parser.add_argument("--action", required=new, help="see `nick-jobs actions`")
        parser.add_argument("--title")
        parser.add_argument("--description")
        parser.add_argument("--timezone", metavar="TZ", help="an IANA time zone (default UTC)")
        enabled = parser.add_mutually_exclusive_group()
        enabled.add_argument(
            "--enabled",
            dest="enabled",
            action="store_const",
            const=True,
            help="it fires (the default for a new one)",
        )
        enabled.add_argument(
            "--disabled",
            dest="enabled",
            action="store_const",
            const=False,
            help="a disabled scheduled job does not fire",
        )
    add_schedule_command(
        "remove", cmd_schedules_remove, "remove scheduled jobs; the jobs they made stay"
    ).add_argument("ids", nargs="+", metavar="ID")

    actions = add("actions", cmd_actions, "list the actions you may submit")
    actions.add_argument(
        "--search", metavar="TEXT", help="only actions whose name, title or description has it"
    )
    # Its subcommands, if any, come from other distributions: actions_subcommands().
    add("health", cmd_health, "check that the server answers")

    completion = subparsers.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print a completion script for bash, zsh or fish: see docs/cli.md for "
        "where it goes (in bash: source <(nick-jobs completion bash)).",
    )
    completion.add_argument("shell", choices=SHELLS)
    completion.set_defaults(func=cmd_completion)


ACTIONS_SUBCOMMAND = "actions_command"


def actions_subcommands(subparsers: Any) -> Any:
    """The subcommands of ``nick-jobs actions``, to which another distribution adds its
    own (the server adds ``apply``); ``subparsers`` is the ``nick-jobs`` parser's.

    They are made on the first call: with none added, ``actions`` is the bare command
    that lists the actions, and it stays that without a subcommand either way.
    """
    actions: Parser = subparsers.choices["actions"]
    for argument in actions.arguments:
        if argument.dest == ACTIONS_SUBCOMMAND:
            return argument
    return actions.add_subparsers(
        dest=ACTIONS_SUBCOMMAND,
        title="subcommands",
        description="without one, `actions` lists the actions you may submit",
    )


def _add_params_arguments(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    parser.add_argument(
        "params",
        nargs="*",
        metavar="key=value",
        help=help or "a parameter; the value is JSON if it parses",
    )
    parser.add_argument(
        "--params-file", metavar="FILE", help="a JSON object of parameters; - for stdin"
    )


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _positive(text: str) -> int:
    value = _non_negative(text)
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError("must be 1 to 100")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError("must be 0 to 3600")
    return value


def _window(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 1440:
        raise argparse.ArgumentTypeError("must be 1 to 1440")
    return value
