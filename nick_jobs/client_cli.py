"""The client subcommands of ``nick-jobs``: ``login``, ``list``, ``submit`` and the rest.

They talk to a running service over HTTP with :mod:`nick_jobs.client`, and take no ini
file. ``docs/cli.md`` describes them. :func:`add_client_commands` adds them to the
``nick-jobs`` parser.

Exit statuses: 0 success, 1 any other error, 2 bad usage, 3 not logged in or not allowed,
4 not found, 5 conflict (the job's state refuses it), 6 the server is down or unreachable.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .client import DEFAULT_URL, JOB_STATUSES, Client, ClientError, ServerUnavailable

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_CONFLICT = 5
EXIT_UNAVAILABLE = 6
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

COMMANDS = ("login", "logout", "list", "get", "submit", "abort", "retry", "delete")
COMMANDS += ("actions", "health")

TOKENS_FILE = "tokens.json"


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


# --- where the token lives -------------------------------------------------------------


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/nick-jobs``, by default ``~/.config/nick-jobs``."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.environ.get("APPDATA")
    return Path(base or Path.home() / ".config") / "nick-jobs"


def tokens_path() -> Path:
    return config_dir() / TOKENS_FILE


def _read_tokens() -> dict[str, Any]:
    try:
        data = json.loads(tokens_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_tokens(tokens: dict[str, Any]) -> Path:
    """Write the tokens file readable by its owner only (0600, in a 0700 directory)."""
    path = tokens_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{TOKENS_FILE}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(tokens, f, indent=2)
        f.write("\n")
    os.chmod(tmp, 0o600)  # in case the file existed with wider permissions
    os.replace(tmp, path)
    return path


def stored_token(server: str) -> str | None:
    entry = _read_tokens().get(server)
    return entry.get("token") if isinstance(entry, dict) else None


def store_token(server: str, login: str, token: str) -> Path:
    tokens = _read_tokens()
    tokens[server] = {"login": login, "token": token}
    return _write_tokens(tokens)


def forget_token(server: str) -> bool:
    tokens = _read_tokens()
    if tokens.pop(server, None) is None:
        return False
    _write_tokens(tokens)
    return True


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


def print_fields(pairs: Sequence[tuple[str, Any]], plain: bool) -> None:
    if plain:
        for key, value in pairs:
            print(f"{key}\t{_one_line(_compact(value))}")
        return
    width = max(len(key) for key, _ in pairs)
    for key, value in pairs:
        print(f"{(key + ':').ljust(width + 1)}  {_compact(value)}")


def job_fields(job: dict[str, Any]) -> list[tuple[str, Any]]:
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
        print_fields(job_fields(job), plain=args.output == "plain")


# --- commands --------------------------------------------------------------------------


def make_client(args: argparse.Namespace, *, with_token: bool = True) -> Client:
    """A client for ``--server``; its ``url`` (normalised) keys the stored tokens."""
    client = Client(args.server, timeout=args.timeout)
    if with_token:
        client.token = args.token or os.environ.get("NICK_JOBS_TOKEN") or stored_token(client.url)
    return client


def cmd_login(args: argparse.Namespace) -> int:
    login = args.login
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
    if args.output == "json":
        print_json({"token": token})
    elif not args.quiet:
        print(f"Logged in to {client.url} as {login}; the token is in {path}.")
    return EXIT_OK


def cmd_logout(args: argparse.Namespace) -> int:
    client = make_client(args)
    if not client.token:
        if not args.quiet:
            print(f"Not logged in to {client.url}.")
        return EXIT_OK
    try:
        client.logout()
    finally:
        # Forget the stored token even when the server can't be told: it is unusable here
        # from now on, and the server refuses it once it expires.
        forgotten = forget_token(client.url)
    if not args.quiet:
        print(f"Logged out of {client.url}." + ("" if forgotten else " (no stored token)"))
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    client = make_client(args)
    jobs = client.iter_jobs(
        status=args.status,
        action=args.action,
        actor=args.actor,
        q=args.search,
        limit=args.limit or None,
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
    show_job(args, make_client(args).get_job(args.id))
    return EXIT_OK


def parse_params(pairs: Sequence[str], params_file: str | None) -> dict[str, Any]:
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
        raise UsageError("the action is the first argument, not a parameter")
    return params


def cmd_submit(args: argparse.Namespace) -> int:
    params = parse_params(args.params, args.params_file)
    job = make_client(args).submit_job(
        args.action,
        params,
        title=args.title,
        description=args.description,
        idempotency_key=args.idempotency_key,
    )
    show_job(args, job)
    return EXIT_OK


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


def cmd_actions(args: argparse.Namespace) -> int:
    actions = make_client(args).job_actions()
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
    health = make_client(args).health()
    if args.output == "json":
        print_json(health)
    elif not args.quiet:
        endpoint = health["endpoint"]
        how = f"{endpoint} answered {health['http_status']}"
        body = health["body"]
        if endpoint == "/healthz/ready" and isinstance(body, dict):
            checks = body.get("checks") or {}
            how += "".join(f"; {name} {check.get('status')}" for name, check in checks.items())
        elif endpoint == "/healthz":
            how += " (liveness only: this server has no /healthz/ready)"
        else:
            how += " (this server has no /healthz)"
            if health["authenticated"] is False:
                how += "; not logged in"
        print(f"ok {health['url']}: {how} in {health['elapsed_ms']:.0f} ms")
    return EXIT_OK


def run(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the expected failures into one line on stderr and an exit status."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except ClientError as exc:
            message = exc.message
            if exc.status == 401 and args.command != "login":
                message += f" (log in with: nick-jobs login -s {args.server})"
            fail(message)
            return exit_code(exc)
        except (UsageError, ValueError) as exc:
            fail(str(exc))
            return EXIT_USAGE
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


# --- argument parsing ------------------------------------------------------------------


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("server and output")
    group.add_argument(
        "--server",
        "-s",
        default=os.environ.get("NICK_JOBS_URL") or DEFAULT_URL,
        help="the service's URL (default: $NICK_JOBS_URL or %(default)s)",
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


class _KeyValueParser(argparse.ArgumentParser):
    """``submit``'s parser: ``key=value`` words may come after options too.

    argparse takes a ``nargs="*"`` positional in one run, so ``submit dummy --title T a=1``
    would leave ``a=1`` unrecognized; here such leftovers join ``params``, in order.
    """

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        pairs = [word for word in extras if "=" in word and not word.startswith("-")]
        if pairs:
            namespace.params = [*(getattr(namespace, "params", None) or []), *pairs]
            extras = [word for word in extras if word not in pairs]
        return namespace, extras


def add_client_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the client subcommands to the ``nick-jobs`` parser's ``subparsers``."""
    common = _common_options()

    def add(name: str, command: Callable[[argparse.Namespace], int], help: str, **kw: Any):
        parser = subparsers.add_parser(
            name, help=help, description=help[0].upper() + help[1:] + ".", parents=[common], **kw
        )
        parser.set_defaults(func=run(command))
        return parser

    login = add("login", cmd_login, "log in to a nick-jobs server and store the token")
    login.add_argument("login", nargs="?", help="asked for on a terminal when omitted")
    add("logout", cmd_logout, "revoke the stored token and forget it")

    lst = add("list", cmd_list, "list jobs, newest first")
    lst.add_argument("--status", choices=JOB_STATUSES)
    lst.add_argument("--action", help="only jobs of this action")
    lst.add_argument("--actor", help="only jobs of this user")
    lst.add_argument("--search", metavar="TEXT", help="only jobs whose title or description has it")
    lst.add_argument(
        "--limit",
        type=_non_negative,
        default=100,
        help="at most this many jobs, across pages (default: %(default)s; 0 for all)",
    )

    get = add("get", cmd_get, "show a job")
    get.add_argument("id", metavar="ID")

    # add_parser builds its parsers with the subparsers' class; submit needs its own.
    parser_class = subparsers._parser_class
    subparsers._parser_class = _KeyValueParser
    try:
        submit = add("submit", cmd_submit, "submit a job")
    finally:
        subparsers._parser_class = parser_class
    submit.add_argument("action", metavar="ACTION", help="see `nick-jobs actions`")
    submit.add_argument(
        "params", nargs="*", metavar="key=value", help="a parameter; the value is JSON if it parses"
    )
    submit.add_argument(
        "--params-file", metavar="FILE", help="a JSON object of parameters; - for stdin"
    )
    submit.add_argument("--title")
    submit.add_argument("--description")
    submit.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="submitting again with the same key returns the first job",
    )

    for name, command, help in (
        ("abort", cmd_abort, "abort created or running jobs"),
        ("retry", cmd_retry, "run failed or aborted jobs again"),
        ("delete", cmd_delete, "delete jobs that are not running"),
    ):
        add(name, command, help).add_argument("ids", nargs="+", metavar="ID")

    add("actions", cmd_actions, "list the actions you may submit")
    add("health", cmd_health, "check that the server answers")

    # The parser lists its subcommands in a fixed metavar; name these there too.
    metavar = subparsers.metavar
    if isinstance(metavar, str) and metavar.startswith("{") and metavar.endswith("}"):
        subparsers.metavar = metavar[:-1] + "," + ",".join(COMMANDS) + "}"


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value
