"""The ``nick-jobs`` command: ``migrate``, ``worker``, ``sweep`` and ``users``.

Every subcommand takes the ini file first; the ``NICK_JOBS_*`` environment overrides
apply, as they do for the server.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, NoReturn

log = logging.getLogger("nick_jobs.cli.admin")

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def _settings(config_uri: str):
    from pyramid.paster import get_appsettings

    from nick_jobs.settings import apply_environment, parse

    if not os.path.exists(config_uri.split("#")[0]):
        raise SystemExit(f"nick-jobs: no such config file: {config_uri}")
    return parse(apply_environment(get_appsettings(config_uri)))


def _engine(config_uri: str):
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

    from nick_jobs.jobs import lifecycle

    queue = registry["nick_jobs.queue"]
    running = queue.runner.running()
    if not running:
        return 0
    jobs = lifecycle.jobs
    handed: list[tuple[str, str]] = []
    with registry["nick_jobs.engine"].begin() as conn:
        rows = conn.execute(
            sa.select(jobs.c.uuid, jobs.c.action).where(jobs.c.uuid.in_(list(running)))
        ).all()
        for row in rows:
            # The attempt this process runs, not whatever the row says now.
            if lifecycle.hand_back(conn, row.uuid, running[row.uuid]):
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
    from nick_jobs.worker.sweeper import Sweeper

    sweeper = Sweeper(registry)
    sweeper.start(interval_s)
    return sweeper


def _metrics_settings(config_uri: str):
    from pyramid.paster import get_appsettings

    from nick_jobs.ops.metrics import parse_settings
    from nick_jobs.settings import apply_environment

    return parse_settings(apply_environment(get_appsettings(config_uri)))


class _StopSignals:
    """How a worker process is told to stop: its grace first, then at once.

    ``SIGTERM`` or ``SIGINT`` stops it within ``nick_jobs.worker_grace``; another one, or
    ``SIGQUIT`` (what the supervisor passes on for a second signal), makes it hand its
    running jobs back at once. The handlers only set events: logging or a query from a
    signal handler could deadlock on a lock the interrupted code holds.
    """

    # A signal this soon after the first is the same stop, not a second one: a process
    # signalled together with its supervisor (killall, Ctrl-C in a terminal, a unit
    # without KillMode=mixed) gets the supervisor's SIGTERM too.
    SAME_STOP_S = 2.0

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.hurry = threading.Event()
        # Set by a hurry, or once the grace is over: what the stopping thread waits for.
        self.wake = threading.Event()
        self._first: float | None = None

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop)
        signal.signal(signal.SIGQUIT, self._on_hurry)

    def request_stop(self) -> None:
        if self._first is None:
            self._first = time.monotonic()
        self.stop.set()

    def _on_stop(self, signum: int, frame: Any) -> None:
        if self._first is None or time.monotonic() - self._first < self.SAME_STOP_S:
            self.request_stop()
        else:
            self._on_hurry(signum, frame)

    def _on_hurry(self, signum: int, frame: Any) -> None:
        self.request_stop()
        self.hurry.set()
        self.wake.set()


def _stop_when_orphaned(supervisor: int, signals: _StopSignals, interval_s: float = 1.0) -> None:
    """Stop this worker process, as on SIGTERM, once its supervisor is gone (killed
    without a chance to pass a signal on): it is not left running jobs on its own."""

    def watch() -> None:
        while os.getppid() == supervisor and not signals.stop.is_set():
            time.sleep(interval_s)
        if not signals.stop.is_set():
            log.warning("worker process %d: its supervisor is gone; stopping", os.getpid())
            signals.request_stop()

    threading.Thread(target=watch, name="nick-jobs-orphan-watch", daemon=True).start()


def run_worker_process(
    config_uri: str,
    threads: int,
    sweep: bool = False,
    metrics_port: int = 0,
    supervisor: int = 0,
) -> int:
    """One worker process: build the app (actions, broker), consume until SIGTERM.

    On SIGTERM it stops taking messages, gives running jobs ``nick_jobs.worker_grace``
    seconds to finish, and hands back those still running (they run again elsewhere); a
    second SIGTERM (or SIGQUIT) hands them back at once. With ``sweep``
    (``--no-supervise``: no supervisor to run it) it also runs the sweeper. With
    ``metrics_port`` it serves its own metrics there. With ``supervisor`` (its pid) it
    stops by itself once that process is gone.
    """
    import dramatiq
    from pyramid.paster import get_app

    # Refuse before building the app: with stub:// the app would start its embedded
    # worker threads, which would run (and then abandon) the database's waiting jobs.
    if _refuse_embedded_broker(_settings(config_uri)):
        return EXIT_USAGE
    signals = _StopSignals()
    # Before the app is built: the app then leaves SIGTERM to this process instead of
    # installing the API's drain (nick_jobs.ops.shutdown), and a SIGTERM during the start-up
    # is not lost.
    signals.install()
    if supervisor:
        _stop_when_orphaned(supervisor, signals)
    _setup_logging(config_uri)
    app = get_app(config_uri)
    registry = app.registry
    settings = registry["nick_jobs.settings"]
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
    sweeper = _start_sweeper(registry) if sweep else None
    log.info(
        "worker process %d consuming %s with %d threads", os.getpid(), settings.queue_name, threads
    )
    signals.stop.wait()
    log.info(
        "worker process %d stopping: running jobs get %g s to finish",
        os.getpid(),
        settings.worker_grace_s,
    )
    if sweeper is not None:
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
    """Exit without the interpreter's teardown, once a worker (or its supervisor) stopped.

    Nothing is left to clean up by then, and the teardown, a full garbage collection of
    a heap that holds the whole app, took 1 to 4 s on a loaded 2-core host: time that a
    stop deadline (systemd's ``TimeoutStopSec``, the supervisor's own) counts. Handler
    threads still running after a hand-back end here too.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


# After the grace: what a worker process gets to hand back its jobs and exit before the
# supervisor kills it (docs/deployment.md's TimeoutStopSec counts it).
HAND_BACK_S = 5.0


def cmd_worker(args: argparse.Namespace) -> NoReturn:
    """``nick-jobs worker``: see :func:`_supervise`, or one process with ``--no-supervise``."""
    _exit_now(_supervise(args))


def _supervise(args: argparse.Namespace) -> int:
    """Start and supervise worker processes; a child that dies is started again.

    On SIGTERM or SIGINT it passes SIGTERM on, waits for its worker processes (each
    finishes its jobs within ``nick_jobs.worker_grace`` and hands back the rest), and
    exits 0. A second signal passes SIGQUIT on: they hand their jobs back at once. A
    process still running ``HAND_BACK_S`` after either is killed, and the command exits 1.
    """
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
        "nick_jobs.cli.admin",
        "_worker-process",
        args.config,
        "--threads",
        str(threads),
        "--supervisor",
        str(os.getpid()),
    ]
    children: dict[int, subprocess.Popen] = {}
    # The handlers only set these; the loops below act on them (see _StopSignals).
    stopping, hurry = threading.Event(), threading.Event()
    # The supervisor (its sweeper's rescues) on the port, worker process n on port + 1 + n.
    metrics = _metrics_settings(args.config)
    if metrics.worker_port:
        from nick_jobs.ops.metrics import serve

        serve(metrics.worker_port, metrics.worker_host)

    def spawn(slot: int) -> None:
        extra = (
            ["--metrics-port", str(metrics.worker_port + 1 + slot)] if metrics.worker_port else []
        )
        children[slot] = subprocess.Popen(child_cmd + extra)
        log.info("started worker process %d (slot %d)", children[slot].pid, slot)

    def on_signal(signum: int, _frame: Any) -> None:
        if stopping.is_set():
            hurry.set()
        stopping.set()

    # Before the app is built for the sweeper: the app then leaves SIGTERM to this
    # process instead of installing the API's drain (nick_jobs.ops.shutdown).
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
    code = EXIT_OK
    while not stopping.is_set():
        for slot, child in list(children.items()):
            exited = child.poll()
            if exited is None or stopping.is_set():
                continue
            if exited == EXIT_USAGE:
                log.error("worker process exited with a configuration error; stopping")
                code = EXIT_USAGE
                stopping.set()
                break
            # Back off a little when a child dies at once again and again.
            delay = 1.0 if time.monotonic() - restarts.get(slot, 0) < 5 else 0.0
            log.warning("worker process %d exited with %s; starting another", child.pid, exited)
            if stopping.wait(delay):
                break
            restarts[slot] = time.monotonic()
            spawn(slot)
        stopping.wait(0.5)
    log.info(
        "stopping: the worker processes get %g s to finish their jobs", settings.worker_grace_s
    )
    _signal_children(children, signal.SIGTERM)
    deadline = time.monotonic() + settings.worker_grace_s + HAND_BACK_S
    if sweeper is not None:
        sweeper.stop()
    hurried = False
    while live := [child for child in children.values() if child.poll() is None]:
        if hurry.is_set() and not hurried:
            hurried = True
            log.warning("second signal: the worker processes hand back their jobs now")
            _signal_children(children, signal.SIGQUIT)
            deadline = min(deadline, time.monotonic() + HAND_BACK_S)
        if time.monotonic() >= deadline:
            for child in live:
                log.error(
                    "worker process %d did not stop; killing it (the sweeper rescues its jobs "
                    "once their lease is over)",
                    child.pid,
                )
                child.kill()
            for child in live:
                child.wait()
            return code if code != EXIT_OK else EXIT_ERROR
        time.sleep(0.05)
    return code


def _signal_children(children: dict[int, subprocess.Popen], sig: int) -> None:
    for child in children.values():
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(sig)


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
    child.add_argument("--supervisor", type=int, default=0)
    child.set_defaults(
        func=lambda a: _exit_now(
            run_worker_process(a.config, a.threads, False, a.metrics_port, a.supervisor)
        )
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
    update.set_defaults(func=cmd_users_update)
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
    from nick_jobs.cli.client_commands import add_client_commands

    add_client_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from nick_jobs.settings import ConfigurationError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigurationError as exc:
        print(f"nick-jobs: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
