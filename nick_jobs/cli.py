"""The ``nick-jobs`` command: ``migrate``, ``worker``, ``sweep`` and ``users``.

Every subcommand takes the ini file first; the ``NICK_JOBS_*`` environment overrides
apply, as they do for the server.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

log = logging.getLogger("nick_jobs.cli")

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def _settings(config_uri: str):
    from pyramid.paster import get_appsettings

    from .settings import apply_environment, parse

    if not os.path.exists(config_uri.split("#")[0]):
        raise SystemExit(f"nick-jobs: no such config file: {config_uri}")
    return parse(apply_environment(get_appsettings(config_uri)))


def _engine(config_uri: str):
    from .models import get_engine

    return get_engine(_settings(config_uri).database_url)


def _setup_logging(config_uri: str) -> None:
    from pyramid.paster import setup_logging

    try:
        setup_logging(config_uri)
    except Exception:  # an ini without logging sections is fine
        logging.basicConfig(level=logging.INFO)


# --- migrate ---------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    from . import migrations

    _setup_logging(args.config)
    engine = _engine(args.config)
    migrations.upgrade(engine, args.revision)
    print(f"database at revision {migrations.current_revision(engine)}")
    return EXIT_OK


# --- users -----------------------------------------------------------------------------


def cmd_users_add(args: argparse.Namespace) -> int:
    from .users import add_user

    password = args.password
    if password is None:
        password = (
            getpass.getpass("Password: ")
            if sys.stdin.isatty()
            else sys.stdin.readline().rstrip("\r\n")
        )
    from sqlalchemy.orm import Session

    with Session(_engine(args.config)) as session, session.begin():
        try:
            add_user(session, args.login, password, fullname=args.fullname or "", roles=args.role)
        except ValueError as exc:
            print(f"nick-jobs: {exc}", file=sys.stderr)
            return EXIT_ERROR
    print(f"added {args.login}")
    return EXIT_OK


def cmd_users_list(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from .users import list_users

    with Session(_engine(args.config)) as session:
        for user in list_users(session):
            print(f"{user.login}\t{user.fullname}\t{','.join(user.roles or [])}")
    return EXIT_OK


def cmd_users_remove(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from .users import remove_user

    with Session(_engine(args.config)) as session, session.begin():
        if not remove_user(session, args.login):
            print(f"nick-jobs: no user {args.login!r}", file=sys.stderr)
            return EXIT_ERROR
    print(f"removed {args.login}")
    return EXIT_OK


# --- worker ----------------------------------------------------------------------------


def _refuse_embedded_broker(settings) -> bool:
    if not settings.embedded_broker:
        return False
    print(
        "nick-jobs: this config uses the embedded broker (stub://); its jobs run inside "
        "the API process. Set nick_jobs.broker_url to redis:// or amqp:// for workers.",
        file=sys.stderr,
    )
    return True


def _hand_back_unfinished(registry) -> int:
    """Give back the jobs this process still runs: a new ``created`` attempt each, sent again.

    Called once the grace period is over. Each hand-back is fenced on the attempt, so a
    job that finishes at this very moment keeps its outcome.
    """
    import sqlalchemy as sa

    from . import transitions

    queue = registry["nick_jobs.queue"]
    running = queue.runner.running()
    if not running:
        return 0
    jobs = transitions.jobs
    handed: list[tuple[str, str]] = []
    with registry["nick_jobs.engine"].begin() as conn:
        rows = conn.execute(
            sa.select(jobs.c.uuid, jobs.c.action).where(jobs.c.uuid.in_(list(running)))
        ).all()
        for row in rows:
            # The attempt this process runs, not whatever the row says now.
            if transitions.hand_back(conn, row.uuid, running[row.uuid]):
                handed.append((row.uuid, row.action))
    for uuid, action in handed:
        try:
            queue.send(uuid, action)
        except Exception:
            # It stays created; the sweeper sends it once its resend grace has passed.
            log.exception("could not send job %s again; the sweeper will", uuid)
            break
    return len(handed)


def _start_sweeper(registry, interval_s: float | None = None):
    from .sweeper import Sweeper

    sweeper = Sweeper(registry)
    sweeper.start(interval_s)
    return sweeper


def _metrics_settings(config_uri: str):
    from pyramid.paster import get_appsettings

    from .metrics import parse_settings
    from .settings import apply_environment

    return parse_settings(apply_environment(get_appsettings(config_uri)))


def run_worker_process(
    config_uri: str, threads: int, sweep: bool = False, metrics_port: int = 0
) -> int:
    """One worker process: build the app (actions, broker), consume until SIGTERM.

    On SIGTERM it stops taking messages, gives running jobs ``nick_jobs.worker_grace``
    seconds to finish, and hands back those still running (they run again elsewhere).
    With ``sweep`` (``--no-supervise``: no supervisor to run it) it also runs the sweeper.
    With ``metrics_port`` it serves its own metrics there.
    """
    import dramatiq
    from pyramid.paster import get_app

    # Refuse before building the app: with stub:// the app would start its embedded
    # worker threads, which would run (and then abandon) the database's waiting jobs.
    if _refuse_embedded_broker(_settings(config_uri)):
        return EXIT_USAGE
    _setup_logging(config_uri)
    app = get_app(config_uri)
    registry = app.registry
    settings = registry["nick_jobs.settings"]
    broker = registry["nick_jobs.queue"].broker
    if metrics_port:
        from .metrics import serve

        serve(metrics_port, registry["nick_jobs.metrics"].worker_host)
    broker.emit_after("process_boot")
    worker = dramatiq.Worker(
        broker, worker_threads=threads, worker_timeout=settings.worker_timeout_ms
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker.start()
    sweeper = _start_sweeper(registry) if sweep else None
    log.info(
        "worker process %d consuming %s with %d threads", os.getpid(), settings.queue_name, threads
    )
    stop.wait()
    log.info("worker process %d stopping", os.getpid())
    if sweeper is not None:
        sweeper.stop()
    # Takes no new message; waits up to the grace period for the running jobs.
    worker.stop(timeout=int(settings.worker_grace_s * 1000))
    try:
        handed = _hand_back_unfinished(registry)
    except Exception:
        # The database is unreachable: the jobs stay running until the sweeper's lease.
        log.exception("could not hand back the jobs still running")
    else:
        if handed:
            log.warning(
                "handed back %d jobs still running after the %g s grace period",
                handed,
                settings.worker_grace_s,
            )
    broker.close()
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    """Start and supervise worker processes; a child that dies is started again."""
    settings = _settings(args.config)
    if _refuse_embedded_broker(settings):
        return EXIT_USAGE
    _setup_logging(args.config)
    processes = args.processes or settings.worker_processes
    threads = args.threads or settings.worker_threads
    if processes < 1 or threads < 1:
        print("nick-jobs: --processes and --threads take 1 or more", file=sys.stderr)
        return EXIT_USAGE
    if args.no_supervise:
        if processes != 1:
            print("nick-jobs: --no-supervise runs exactly one process (-p 1)", file=sys.stderr)
            return EXIT_USAGE
        port = _metrics_settings(args.config).worker_port
        return run_worker_process(args.config, threads, sweep=True, metrics_port=port)
    child_cmd = [
        sys.executable,
        "-m",
        "nick_jobs.cli",
        "_worker-process",
        args.config,
        "--threads",
        str(threads),
    ]
    children: dict[int, subprocess.Popen] = {}
    stopping = threading.Event()
    # The supervisor (its sweeper's rescues) on the port, worker process n on port + 1 + n.
    metrics = _metrics_settings(args.config)
    if metrics.worker_port:
        from .metrics import serve

        serve(metrics.worker_port, metrics.worker_host)

    def spawn(slot: int) -> None:
        extra = (
            ["--metrics-port", str(metrics.worker_port + 1 + slot)] if metrics.worker_port else []
        )
        children[slot] = subprocess.Popen(child_cmd + extra)
        log.info("started worker process %d (slot %d)", children[slot].pid, slot)

    def on_signal(signum, _frame) -> None:
        stopping.set()
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for slot in range(processes):
        spawn(slot)
    # The sweeper runs here, in the supervisor, not in each worker process.
    sweeper = None
    if settings.sweep_interval_s > 0 and not stopping.is_set():
        from pyramid.paster import get_app

        try:
            sweeper = _start_sweeper(get_app(args.config).registry)
        except Exception:
            log.exception("could not start the sweeper; lost jobs are not rescued here")
    restarts: dict[int, float] = {}
    while not stopping.is_set():
        for slot, child in list(children.items()):
            code = child.poll()
            if code is None or stopping.is_set():
                continue
            if code == EXIT_USAGE:
                log.error("worker process exited with a configuration error; stopping")
                on_signal(signal.SIGTERM, None)
                if sweeper is not None:
                    sweeper.stop()
                return EXIT_USAGE
            # Back off a little when a child dies at once again and again.
            delay = 1.0 if time.monotonic() - restarts.get(slot, 0) < 5 else 0.0
            log.warning("worker process %d exited with %s; starting another", child.pid, code)
            if stopping.wait(delay):
                break  # a child started now would miss the SIGTERM already sent
            restarts[slot] = time.monotonic()
            spawn(slot)
        stopping.wait(0.5)
    if sweeper is not None:
        sweeper.stop()
    deadline = time.monotonic() + settings.worker_grace_s + 5
    for child in children.values():
        try:
            child.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            child.kill()
    return EXIT_OK


# --- sweep -----------------------------------------------------------------------------


def cmd_sweep(args: argparse.Namespace) -> int:
    """Rescue lost jobs and re-send lost messages: one round, or every interval until SIGTERM."""
    from pyramid.paster import get_app

    from .sweeper import Sweeper

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


# --- argument parsing ------------------------------------------------------------------


def _cmd_scheduler(args: argparse.Namespace) -> int:
    # Imported on use: the scheduler pulls in the database layer, which the client
    # commands of this script never need.
    from .scheduler import cmd_scheduler

    return cmd_scheduler(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nick-jobs", description="Migrate the database, run workers, manage users."
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="{migrate,worker,sweep,users}"
    )

    migrate = sub.add_parser("migrate", help="upgrade the database schema")
    migrate.add_argument("config", help="the ini file, e.g. production.ini")
    migrate.add_argument("--revision", default="head")
    migrate.set_defaults(func=cmd_migrate)

    worker = sub.add_parser("worker", help="run worker processes that execute jobs")
    worker.add_argument("config")
    worker.add_argument("--processes", "-p", type=int, help="default: nick_jobs.worker_processes")
    worker.add_argument("--threads", "-t", type=int, help="default: nick_jobs.worker_threads")
    worker.add_argument(
        "--no-supervise",
        action="store_true",
        help="with one process: run it in the foreground, for a supervisor such as systemd",
    )
    worker.set_defaults(func=cmd_worker)

    sweep = sub.add_parser(
        "sweep", help="rescue jobs that lost their worker, re-send lost messages"
    )
    sweep.add_argument("config")
    sweep.add_argument("--once", action="store_true", help="one round, print what it did, exit")
    sweep.add_argument(
        "--interval", type=float, help="seconds between rounds; default: nick_jobs.sweep_interval"
    )
    sweep.set_defaults(func=cmd_sweep)

    # Internal: what the supervisor starts for each worker process; not listed in --help.
    child = sub.add_parser("_worker-process")
    child.add_argument("config")
    child.add_argument("--threads", type=int, default=8)
    child.add_argument("--metrics-port", type=int, default=0)
    child.set_defaults(
        func=lambda a: run_worker_process(a.config, a.threads, False, a.metrics_port)
    )

    users = sub.add_parser("users", help="manage the users who can log in")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    add = users_sub.add_parser("add", help="add a user")
    add.add_argument("config")
    add.add_argument("login")
    add.add_argument("--password", help="read from the terminal (or stdin) when omitted")
    add.add_argument("--fullname")
    add.add_argument("--role", action="append", default=[], help="e.g. Administrator; may repeat")
    add.set_defaults(func=cmd_users_add)
    lst = users_sub.add_parser("list", help="list users")
    lst.add_argument("config")
    lst.set_defaults(func=cmd_users_list)
    rm = users_sub.add_parser("remove", help="remove a user")
    rm.add_argument("config")
    rm.add_argument("login")
    rm.set_defaults(func=cmd_users_remove)
    scheduler = sub.add_parser(
        "scheduler", help="fire scheduled jobs (run one or more next to the workers)"
    )
    scheduler.add_argument("config", help="the ini file, e.g. production.ini")
    scheduler.set_defaults(func=_cmd_scheduler)
    sub.metavar = sub.metavar[:-1] + ",scheduler}"
    from .client_cli import add_client_commands

    add_client_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .settings import ConfigurationError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigurationError as exc:
        print(f"nick-jobs: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
