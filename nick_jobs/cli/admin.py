"""The server's commands of ``nick-jobs``: ``serve``, ``migrate``, ``worker``, ``sweep``,
``scheduler``, ``users``, ``tokens`` and ``actions apply``.

The ``nick-jobs`` command itself is the client's (:mod:`nick_jobs_client.cli`): this
distribution adds these commands to it through the ``nick_jobs.commands`` entry point
(:func:`add_server_commands`). Every one of them takes the ini file first; the
``NICK_JOBS_*`` environment overrides apply, as they do for the server.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import nick_jobs_client.cli as client_cli
from nick_jobs_client.cli.commands import actions_subcommands
from nick_jobs_client.cli.parser import Parser

if TYPE_CHECKING:
    # Imported where they are used: the client's commands start without the server's
    # modules.
    import sqlalchemy as sa
    from pyramid.registry import Registry

    from nick_jobs.ops.metrics import MetricsSettings
    from nick_jobs.settings import Settings

log = logging.getLogger("nick_jobs.cli.admin")

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def _settings(config_uri: str) -> Settings:
    from pyramid.paster import get_appsettings

    from nick_jobs.settings import apply_environment, parse

    if not os.path.exists(config_uri.split("#")[0]):
        raise SystemExit(f"nick-jobs: no such config file: {config_uri}")
    return parse(apply_environment(get_appsettings(config_uri)))


def _engine(config_uri: str) -> sa.Engine:
    from nick_jobs.db import get_engine

    return get_engine(_settings(config_uri).database_url)


def _setup_logging(config_uri: str) -> None:
    from pyramid.paster import setup_logging

    try:
        setup_logging(config_uri)
    except Exception:  # an ini without logging sections is fine
        logging.basicConfig(level=logging.INFO)


# --- migrate ---------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    from nick_jobs.db import migrations

    _setup_logging(args.config)
    engine = _engine(args.config)
    migrations.upgrade(engine, args.revision)
    print(f"database at revision {migrations.current_revision(engine)}")
    return EXIT_OK


# --- users -----------------------------------------------------------------------------


def _read_password() -> str:
    """From the terminal, or one line of standard input when that is not a terminal."""
    if sys.stdin.isatty():
        return getpass.getpass("Password: ")
    return sys.stdin.readline().rstrip("\r\n")


def cmd_users_add(args: argparse.Namespace) -> int:
    from nick_jobs.users.accounts import add_user

    password = _read_password() if args.password is None else args.password
    from sqlalchemy.orm import Session

    with Session(_engine(args.config)) as session, session.begin():
        try:
            add_user(session, args.login, password, fullname=args.fullname or "", roles=args.role)
        except ValueError as exc:
            print(f"nick-jobs: {exc}", file=sys.stderr)
            return EXIT_ERROR
    print(f"added {args.login}")
    return EXIT_OK


def cmd_users_update(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from nick_jobs.users.accounts import update_user

    password = args.password
    if password == "-":  # noqa: S105 - the option's "read it" value, not a password
        password = _read_password()
    roles = [] if args.no_roles else (args.role or None)
    if password is None and args.fullname is None and roles is None:
        print(
            "nick-jobs: nothing to change: give --password, --fullname or --role", file=sys.stderr
        )
        return EXIT_USAGE
    with Session(_engine(args.config)) as session, session.begin():
        try:
            _, ended = update_user(
                session, args.login, password=password, fullname=args.fullname, roles=roles
            )
        except (LookupError, ValueError) as exc:
            print(f"nick-jobs: {exc.args[0]}", file=sys.stderr)
            return EXIT_ERROR
    print(f"updated {args.login}" + ("; their tokens issued until now are ended" if ended else ""))
    return EXIT_OK


def cmd_users_list(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from nick_jobs.users.accounts import list_users

    with Session(_engine(args.config)) as session:
        for user in list_users(session):
            print(f"{user.login}\t{user.fullname}\t{','.join(user.roles or [])}")
    return EXIT_OK


def cmd_users_remove(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from nick_jobs.users.accounts import remove_user

    with Session(_engine(args.config)) as session, session.begin():
        if not remove_user(session, args.login):
            print(f"nick-jobs: no user {args.login!r}", file=sys.stderr)
            return EXIT_ERROR
    print(f"removed {args.login}")
    return EXIT_OK


# --- tokens ----------------------------------------------------------------------------


def cmd_tokens_create(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from nick_jobs.users import service_tokens

    settings = _settings(args.config)
    try:
        lifetime = service_tokens.parse_lifetime(args.expires)
    except ValueError as exc:
        print(f"nick-jobs: --expires: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with Session(_engine(args.config)) as session, session.begin():
        try:
            token, row = service_tokens.create(session, settings, args.login, args.name, lifetime)
        except (LookupError, ValueError) as exc:
            print(f"nick-jobs: {exc.args[0]}", file=sys.stderr)
            return EXIT_ERROR
        expires = row.expires.strftime("%Y-%m-%d %H:%M UTC")
    # The token alone on standard output, for a script to keep; the rest for the reader.
    print(token)
    print(
        f"service token {args.name!r} of {args.login}, valid until {expires}; it is shown "
        "only now: keep it where the machine reads it",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_tokens_list(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from nick_jobs.db.meta import utcnow
    from nick_jobs.users import service_tokens

    now = utcnow()
    with Session(_engine(args.config)) as session:
        rows = service_tokens.list_tokens(session, args.login)
        print("LOGIN\tNAME\tCREATED\tEXPIRES\tSTATE")
        for row in rows:
            state = "revoked" if row.revoked else "valid"
            if row.revoked is None and row.expires <= now:
                state = "expired"
            dates = (d.strftime("%Y-%m-%d %H:%M") for d in (row.created, row.expires))
            print("\t".join((row.login, row.name, *dates, state)))
    return EXIT_OK


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from nick_jobs.users import service_tokens

    settings = _settings(args.config)
    with Session(_engine(args.config)) as session, session.begin():
        try:
            service_tokens.revoke(session, settings, args.login, args.name)
        except LookupError as exc:
            print(f"nick-jobs: {exc.args[0]}", file=sys.stderr)
            return EXIT_ERROR
    print(f"revoked {args.login}'s service token {args.name!r}")
    return EXIT_OK


# --- worker ----------------------------------------------------------------------------


def _refuse_embedded_broker(settings: Settings) -> bool:
    if not settings.embedded_broker:
        return False
    print(
        "nick-jobs: this config uses the embedded broker (stub://); its jobs run inside "
        "the API process. Set nick_jobs.broker_url to redis:// or amqp:// for workers.",
        file=sys.stderr,
    )
    return True


def _hand_back_unfinished(registry: Registry) -> int:
    """Give back the jobs this process still runs: a new ``created`` attempt each, sent again
    once committed.

    Called once the grace period is over. Each hand-back is fenced on the attempt, so a
    job that finishes at this very moment keeps its outcome.
    """
    from nick_jobs.db.after_commit import transaction
    from nick_jobs.jobs import lifecycle

    queue = registry["nick_jobs.queue"]
    running = queue.runner.running()
    if not running:
        return 0
    handed = 0
    with transaction(registry["nick_jobs.engine"]) as conn:
        for uuid, attempt in running.items():
            # The attempt this process runs, not whatever the row says now.
            handed += lifecycle.hand_back(conn, uuid, attempt, send=queue.send)
    return handed


def _metrics_settings(config_uri: str) -> MetricsSettings:
    from pyramid.paster import get_appsettings

    from nick_jobs.ops.metrics import parse_settings
    from nick_jobs.settings import apply_environment

    return parse_settings(apply_environment(get_appsettings(config_uri)))


class _StopSignals:
    """How the worker process is told to stop: its grace first, then at once.

    ``SIGTERM`` or ``SIGINT`` stops it within ``nick_jobs.worker_grace``; another one makes
    it hand its running jobs back at once. The handlers only set events: logging or a
    query from a signal handler could deadlock on a lock the interrupted code holds.
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.hurry = threading.Event()
        # Set by a hurry, or once the grace is over: what the stopping thread waits for.
        self.wake = threading.Event()

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stop.is_set():
            self.hurry.set()
            self.wake.set()
        self.stop.set()


def run_worker_process(config_uri: str, threads: int, metrics_port: int = 0) -> int:
    """The worker process: build the app (actions, broker), consume until SIGTERM.

    It runs the sweeper too (``nick_jobs.sweep_interval``; 0 turns it off). On SIGTERM it
    stops taking messages, gives running jobs ``nick_jobs.worker_grace`` seconds to
    finish, and hands back those still running (they run again elsewhere); a second
    SIGTERM hands them back at once. With ``metrics_port`` it serves its metrics there.
    """
    import dramatiq
    from pyramid.paster import get_app

    from nick_jobs.settings import registry_settings
    from nick_jobs.worker.sweeper import Sweeper

    signals = _StopSignals()
    # Before the app is built: the app then leaves SIGTERM to this process instead of
    # installing the API's drain (nick_jobs.ops.shutdown), and a SIGTERM during the start-up
    # is not lost.
    signals.install()
    _setup_logging(config_uri)
    app = get_app(config_uri)
    registry = app.registry
    settings = registry_settings(registry)
    broker = registry["nick_jobs.queue"].broker
    if metrics_port:
        from nick_jobs.ops.metrics import serve

        serve(metrics_port, registry["nick_jobs.ops.metrics"].worker_host)
    broker.emit_after("process_boot")
    worker = dramatiq.Worker(
        broker, worker_threads=threads, worker_timeout=settings.worker_timeout_ms
    )
    if signals.stop.is_set():  # stopped while starting: nothing taken, nothing to give back
        log.info("worker process %d stopping before it consumed anything", os.getpid())
        broker.close()
        return EXIT_OK
    worker.start()
    # In every worker process: each rescues the jobs of the others that died. Rounds of
    # several sweepers are kept apart by a lock in the database (nick_jobs.worker.sweeper).
    sweeper = Sweeper(registry)
    sweeper.start()
    log.info(
        "worker process %d consuming %s with %d threads", os.getpid(), settings.queue_name, threads
    )
    signals.stop.wait()
    log.info(
        "worker process %d stopping: running jobs get %g s to finish",
        os.getpid(),
        settings.worker_grace_s,
    )
    sweeper.stop()

    def stop_worker() -> None:
        # Takes no new message; waits up to the grace period for the running jobs.
        worker.stop(timeout=int(settings.worker_grace_s * 1000))
        signals.wake.set()

    # On a thread of its own, so that a second signal need not wait for the grace.
    threading.Thread(target=stop_worker, name="nick-jobs-worker-stop", daemon=True).start()
    signals.wake.wait()
    hurried = signals.hurry.is_set()
    try:
        handed = _hand_back_unfinished(registry)
    except Exception:
        # The database is unreachable: the jobs stay running until the sweeper's lease.
        log.exception("could not hand back the jobs still running")
    else:
        if handed and hurried:
            log.warning("handed back %d jobs still running on a second signal", handed)
        elif handed:
            log.warning(
                "handed back %d jobs still running after the %g s grace period",
                handed,
                settings.worker_grace_s,
            )
    try:
        broker.close()
    except Exception:
        # Cut short, the worker may still hold connections the close trips over; the
        # process exits either way.
        log.debug("closing the broker failed", exc_info=True)
    return EXIT_OK


def _exit_now(code: int) -> NoReturn:
    """Exit without the interpreter's teardown, once the worker process stopped.

    Nothing is left to clean up by then, and the teardown, a full garbage collection of
    a heap that holds the whole app, took 1 to 4 s on a loaded 2-core host: time that a
    stop deadline (systemd's ``TimeoutStopSec``) counts. Handler threads still running
    after a hand-back end here too.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


SEVERAL_PROCESSES = (
    "nick-jobs: `nick-jobs worker` runs one worker process; for {n}, run {n} of them under "
    "a process manager: `systemctl enable --now nick-jobs-worker@{{1..{n}}}` "
    "(deploy/systemd/nick-jobs-worker@.service), or {n} replicas of a container"
)


def cmd_worker(args: argparse.Namespace) -> int:
    """``nick-jobs worker``: one worker process in the foreground, for a process manager.

    Several processes are several of these commands (systemd template instances,
    container replicas): no process of nick-jobs supervises others.
    """
    if args.processes is not None and args.processes != 1:
        print(SEVERAL_PROCESSES.format(n=max(args.processes, 2)), file=sys.stderr)
        return EXIT_USAGE
    settings = _settings(args.config)
    # Before the app is built: with stub:// the app would start its embedded worker
    # threads, which would run (and then abandon) the database's waiting jobs.
    if _refuse_embedded_broker(settings):
        return EXIT_USAGE
    threads = args.threads or settings.worker_threads
    if threads < 1:
        print("nick-jobs: --threads takes 1 or more", file=sys.stderr)
        return EXIT_USAGE
    port = _metrics_settings(args.config).worker_port
    if args.metrics_port is not None:
        if not port:
            print(
                "nick-jobs: --metrics-port needs nick_jobs.worker_metrics_port set: that "
                "setting turns the workers' metrics on",
                file=sys.stderr,
            )
            return EXIT_USAGE
        port = args.metrics_port
    _exit_now(run_worker_process(args.config, threads, metrics_port=port))


# --- sweep -----------------------------------------------------------------------------


def cmd_sweep(args: argparse.Namespace) -> int:
    """Rescue lost jobs and re-send lost messages: one round, or every interval until SIGTERM."""
    from pyramid.paster import get_app

    from nick_jobs.worker.sweeper import Sweeper

    settings = _settings(args.config)
    if _refuse_embedded_broker(settings):
        return EXIT_USAGE
    interval = args.interval if args.interval is not None else settings.sweep_interval_s or 15.0
    if interval <= 0:
        print("nick-jobs: --interval takes a number of seconds > 0", file=sys.stderr)
        return EXIT_USAGE
    _setup_logging(args.config)
    sweeper = Sweeper(get_app(args.config).registry)
    if args.once:
        print(sweeper.run_once())
        return EXIT_OK
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("sweeping every %g s", interval)
    while not stop.is_set():
        try:
            sweeper.run_once()
        except Exception:
            log.exception("sweep failed; trying again in %g s", interval)
        stop.wait(interval)
    return EXIT_OK


# --- serve -----------------------------------------------------------------------------


def _become(argv: list[str]) -> NoReturn:
    """Replace this process with ``argv``, keeping its pid, its stdio and its signals."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)  # noqa: S606 - a fixed argument list, no shell


def cmd_serve(args: argparse.Namespace) -> int:
    """``nick-jobs serve production.ini``: what ``pserve production.ini`` does.

    The process becomes ``python -m pyramid.scripts.pserve`` (the way Pyramid documents
    to run its scripts as modules) rather than running it as a child: signals, SIGTERM
    above all, then reach the server as they reach ``pserve``, and the API's graceful stop
    (``nick_jobs.ops.shutdown``) works the same.
    """
    if not os.path.exists(args.config.split("#")[0]):
        print(f"nick-jobs: no such config file: {args.config}", file=sys.stderr)
        return EXIT_USAGE
    argv = [sys.executable, "-m", "pyramid.scripts.pserve", args.config, *args.variables]
    if args.reload:
        argv.append("--reload")
    _become(argv)


# --- argument parsing ------------------------------------------------------------------


def _cmd_scheduler(args: argparse.Namespace) -> int:
    """``nick-jobs scheduler production.ini``: fire scheduled jobs until SIGTERM."""
    from pyramid.paster import get_app

    from nick_jobs.scheduling.scheduler import Scheduler

    settings = _settings(args.config)
    if settings.embedded_broker:
        print(
            "nick-jobs: this config uses the embedded broker (stub://); its scheduler runs "
            "inside the API process. Set nick_jobs.broker_url to redis:// or amqp://.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    _setup_logging(args.config)
    app = get_app(args.config)
    scheduler = app.registry.get("nick_jobs.scheduling.scheduler") or Scheduler(app.registry)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("scheduler started (missed slots: %s)", scheduler.missed)
    started = time.monotonic()
    if scheduler.running:
        stop.wait()
        scheduler.stop()
    else:
        scheduler.run(stop)
    log.info("scheduler stopped after %.0f s", time.monotonic() - started)
    return EXIT_OK


def _cmd_actions_apply(args: argparse.Namespace) -> int:
    from nick_jobs.cli.actions_apply import cmd_actions_apply

    return cmd_actions_apply(args)


def _configured(
    command: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """A bad setting in the ini file or the environment: one line and the usage status."""

    def run(args: argparse.Namespace) -> int:
        from nick_jobs.settings import ConfigurationError

        try:
            return command(args)
        except ConfigurationError as exc:
            print(f"nick-jobs: {exc}", file=sys.stderr)
            return EXIT_USAGE

    return run


# ``subparsers``: what ArgumentParser.add_subparsers() returns, a class argparse keeps
# private, hence typed as Any.
def add_server_commands(subparsers: Any) -> None:
    """Add the server's commands to the ``nick-jobs`` parser's ``subparsers``: the
    ``nick_jobs.commands`` entry point of this distribution."""
    serve = subparsers.add_parser(
        "serve",
        help="serve the API, as pserve does",
        description="Serve the API and its embedded parts as `pserve CONFIG` does: the "
        "[server:main] section says where. SIGTERM stops it gracefully.",
    )
    serve.add_argument("config", help="the ini file, e.g. production.ini")
    serve.add_argument(
        "variables",
        nargs="*",
        metavar="name=value",
        help="values for %%(name)s in the ini file, as pserve takes them",
    )
    serve.add_argument(
        "--reload", action="store_true", help="restart when a source file changes (development)"
    )
    serve.set_defaults(func=_configured(cmd_serve))

    migrate = subparsers.add_parser("migrate", help="upgrade the database schema")
    migrate.add_argument("config", help="the ini file, e.g. production.ini")
    migrate.add_argument("--revision", default="head")
    migrate.set_defaults(func=_configured(cmd_migrate))

    worker = subparsers.add_parser(
        "worker",
        help="run one worker process that executes jobs",
        description="Run one worker process in the foreground: it executes jobs and runs "
        "the sweeper. SIGTERM stops it: running jobs get nick_jobs.worker_grace seconds, "
        "then those still running are handed back; a second SIGTERM hands them back at "
        "once. For several processes, run several of these commands under a process "
        "manager (deploy/systemd/nick-jobs-worker@.service, container replicas).",
    )
    worker.add_argument("config", help="the ini file, e.g. production.ini")
    worker.add_argument("--threads", "-t", type=int, help="default: nick_jobs.worker_threads")
    worker.add_argument(
        "--metrics-port",
        type=int,
        help="this process's metrics port, for several workers on one host "
        "(default: nick_jobs.worker_metrics_port, which turns the metrics on)",
    )
    # Refused unless 1: what an earlier version's supervisor took; the message says how
    # to run several processes instead.
    worker.add_argument("--processes", "-p", type=int, help=argparse.SUPPRESS)
    # Accepted and ignored: every worker process now runs in the foreground.
    worker.add_argument("--no-supervise", action="store_true", help=argparse.SUPPRESS)
    worker.set_defaults(func=_configured(cmd_worker))

    sweep = subparsers.add_parser(
        "sweep", help="rescue jobs that lost their worker, re-send lost messages"
    )
    sweep.add_argument("config")
    sweep.add_argument("--once", action="store_true", help="one round, print what it did, exit")
    sweep.add_argument(
        "--interval", type=float, help="seconds between rounds; default: nick_jobs.sweep_interval"
    )
    sweep.set_defaults(func=_configured(cmd_sweep))

    users = subparsers.add_parser("users", help="manage the users who can log in")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    add = users_sub.add_parser("add", help="add a user")
    add.add_argument("config")
    add.add_argument("login")
    add.add_argument("--password", help="read from the terminal (or stdin) when omitted")
    add.add_argument("--fullname")
    add.add_argument("--role", action="append", default=[], help="e.g. Administrator; may repeat")
    add.set_defaults(func=_configured(cmd_users_add))
    update = users_sub.add_parser(
        "update", help="change a user; a new password or roles end their tokens"
    )
    update.add_argument("config")
    update.add_argument("login")
    update.add_argument(
        "--password", help="the new password; - reads it from the terminal (or stdin)"
    )
    update.add_argument("--fullname")
    roles = update.add_mutually_exclusive_group()
    roles.add_argument("--role", action="append", help="the user's roles from now on; may repeat")
    roles.add_argument("--no-roles", action="store_true", help="take every role away")
    update.set_defaults(func=_configured(cmd_users_update))
    lst = users_sub.add_parser("list", help="list users")
    lst.add_argument("config")
    lst.set_defaults(func=_configured(cmd_users_list))
    rm = users_sub.add_parser("remove", help="remove a user")
    rm.add_argument("config")
    rm.add_argument("login")
    rm.set_defaults(func=_configured(cmd_users_remove))
    tokens = subparsers.add_parser(
        "tokens", help="service tokens: long-lived, revocable tokens for machines"
    )
    tokens_sub = tokens.add_subparsers(dest="tokens_command", required=True)
    create = tokens_sub.add_parser("create", help="make a service token of a user; prints it once")
    create.add_argument("config")
    create.add_argument("login", help="the user the token acts as (a machine's own user)")
    create.add_argument("--name", required=True, help="what it is for, e.g. prometheus")
    create.add_argument(
        "--expires", default="365d", help="lifetime: a number and s, m, h, d or w (365d)"
    )
    create.set_defaults(func=_configured(cmd_tokens_create))
    tokens_list = tokens_sub.add_parser("list", help="list service tokens, never their text")
    tokens_list.add_argument("config")
    tokens_list.add_argument("--login", help="only this user's")
    tokens_list.set_defaults(func=_configured(cmd_tokens_list))
    revoke = tokens_sub.add_parser("revoke", help="end a service token at once")
    revoke.add_argument("config")
    revoke.add_argument("login")
    revoke.add_argument("name")
    revoke.set_defaults(func=_configured(cmd_tokens_revoke))
    scheduler = subparsers.add_parser(
        "scheduler", help="fire scheduled jobs (run one or more next to the workers)"
    )
    scheduler.add_argument("config", help="the ini file, e.g. production.ini")
    scheduler.set_defaults(func=_configured(_cmd_scheduler))

    # `nick-jobs actions` is the client's (it lists the actions): `apply` is added under it.
    apply = actions_subcommands(subparsers).add_parser(
        "apply",
        help="create, change or delete remote actions as a YAML or JSON file declares them",
        description="Apply the remote actions FILE declares (a mapping `actions` of names to "
        "definitions, each what PUT /@job-actions/{name} takes) to the database of CONFIG, "
        "in one transaction: every definition is checked first, and one bad one applies "
        "nothing (exit status 2). Prints one line an action: created, updated, unchanged, "
        "or deleted (--prune).",
    )
    apply.add_argument("config", help="the ini file, e.g. production.ini")
    apply.add_argument("file", help="a .yaml, .yml or .json file")
    apply.add_argument(
        "--dry-run", action="store_true", help="print what would change, and write nothing"
    )
    apply.add_argument(
        "--prune", action="store_true", help="delete the remote actions the file does not name"
    )
    apply.add_argument(
        "--by",
        metavar="LOGIN",
        help="who the new versions say made them (default: cli: and the system user, "
        "e.g. cli:deploy)",
    )
    apply.set_defaults(func=_configured(_cmd_actions_apply))


def build_parser() -> Parser:
    """The whole ``nick-jobs`` parser: the client's commands and the server's (and those
    of any other distribution), as the console script builds it."""
    return client_cli.build_parser([add_server_commands])


def main(argv: Sequence[str] | None = None) -> int:
    """``nick-jobs`` with the server's commands, whether or not the installed metadata
    names them (``python -m nick_jobs.cli`` from a checkout)."""
    return client_cli.main(argv, [add_server_commands])


if __name__ == "__main__":
    sys.exit(main())
