"""What every benchmark shares: services, the run's database, ini files, processes, stats.

Everything a run creates is named after its tag (database, Redis namespace, RabbitMQ
queues, ports) and removed when the run ends, even when it fails.
"""

from __future__ import annotations

import configparser
import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

PG_HOST = os.environ.get("NICK_JOBS_BENCH_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("NICK_JOBS_BENCH_PG_PORT", "5432"))
PG_USER = os.environ.get("NICK_JOBS_BENCH_PG_USER", "postgres")
REDIS_URL = os.environ.get("NICK_JOBS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_HOST, REDIS_PORT = urlsplit(REDIS_URL).hostname, urlsplit(REDIS_URL).port or 6379
AMQP_URL = os.environ.get("NICK_JOBS_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
AMQP_HOST, AMQP_PORT = urlsplit(AMQP_URL).hostname, urlsplit(AMQP_URL).port or 5672

FINISHED = ("completed", "failed", "aborted")
PASSWORD = "bench-password"  # noqa: S105 - a throwaway user in a throwaway database
ADMIN = "Administrator"


LOG_FILE: Path | None = None  # the run's bench.log, set by run.py


def log(message: str) -> None:
    line = f"[bench {time.strftime('%H:%M:%S')}] {message}"
    print(line, file=sys.stderr, flush=True)
    if LOG_FILE is not None:
        with LOG_FILE.open("a") as fh:
            fh.write(line + "\n")


class Skip(Exception):
    """A benchmark can't run here (a service is missing); the message says why."""


# --- statistics ------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (``pct`` in 0..100)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2


# --- services --------------------------------------------------------------------------


def reachable(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def _start_postgres() -> None:
    clusters = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    ctl = shutil.which("pg_ctlcluster")
    if not clusters or not ctl:
        raise Skip("PostgreSQL is down and no local cluster (pg_ctlcluster) to start")
    subprocess.run(
        [ctl, "--skip-systemctl-redirect", clusters[-1], "main", "start"],
        check=False,
        capture_output=True,
    )


REDIS_PIDFILE = Path(tempfile.gettempdir()) / f"nick-jobs-bench-redis-{REDIS_PORT}.pid"


def _start_redis() -> None:
    server = shutil.which("redis-server")
    if not server:
        raise Skip("Redis is down and redis-server is not installed")
    options = ["--bind", REDIS_HOST, "--port", str(REDIS_PORT), "--save", "", "--appendonly", "no"]
    subprocess.run(
        [server, "--daemonize", "yes", *options, "--pidfile", str(REDIS_PIDFILE)],
        check=False,
        capture_output=True,
        cwd=tempfile.gettempdir(),
    )


def _stop_postgres() -> None:
    clusters = sorted(os.listdir("/etc/postgresql"))
    ctl = shutil.which("pg_ctlcluster") or "pg_ctlcluster"
    subprocess.run(
        [ctl, "--skip-systemctl-redirect", clusters[-1], "main", "stop"],
        check=False,
        capture_output=True,
    )


def _stop_redis() -> None:
    with contextlib.suppress(OSError, ValueError, ProcessLookupError):
        os.kill(int(REDIS_PIDFILE.read_text().strip()), signal.SIGTERM)


def _stop_rabbitmq() -> None:
    ctl = shutil.which("rabbitmqctl")
    if ctl:
        subprocess.run([ctl, "stop"], check=False, capture_output=True)


def _start_rabbitmq() -> None:
    server = shutil.which("rabbitmq-server")
    if not server:
        raise Skip("RabbitMQ is down and rabbitmq-server is not installed")
    subprocess.run([server, "-detached"], check=False, capture_output=True)


SERVICES: dict[str, tuple[str, int, Callable[[], None], Callable[[], None]]] = {
    "postgresql": (PG_HOST, PG_PORT, _start_postgres, _stop_postgres),
    "redis": (REDIS_HOST, REDIS_PORT, _start_redis, _stop_redis),
    "rabbitmq": (AMQP_HOST, AMQP_PORT, _start_rabbitmq, _stop_rabbitmq),
}

# The services this process started, stopped again by stop_started_services().
STARTED: list[str] = []


def ensure_services(names: set[str], timeout: float = 60) -> dict[str, str | None]:
    """Start each service that is down; return name → None (up) or the reason it isn't."""
    status: dict[str, str | None] = {}
    for name in sorted(names):
        host, port, start, _ = SERVICES[name]
        if reachable(host, port):
            status[name] = None
            continue
        log(f"{name} is not running on {host}:{port}; starting it")
        try:
            start()
        except Skip as exc:
            status[name] = str(exc)
            continue
        STARTED.append(name)
        deadline = time.monotonic() + timeout
        while not reachable(host, port) and time.monotonic() < deadline:
            time.sleep(1)
        status[name] = None if reachable(host, port) else f"{name} did not come up on {port}"
    return status


def stop_started_services() -> None:
    """Stop what ensure_services() started: a machine is left as the run found it."""
    while STARTED:
        name = STARTED.pop()
        log(f"stopping {name}, which this run started")
        with contextlib.suppress(Exception):
            SERVICES[name][3]()


# --- processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args} exited with {proc.returncode}")
        if reachable("127.0.0.1", port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def _tcp_peers(port: int) -> dict[str, int]:
    """Established TCP connections whose local port is ``port``: inode -> peer port."""
    peers = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields_ = line.split()
                local, remote, state, inode = fields_[1], fields_[2], fields_[3], fields_[9]
                if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                    peers[inode] = int(remote.rsplit(":", 1)[1], 16)
    return peers


def serving_workers(master: int, port: int, connections: int = 8) -> set[int]:
    """The children of ``master`` that answer ``GET /healthz`` on ``port``: ``connections``
    kept-alive requests at once, and which process holds the server side of each."""
    opened = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(connections)]
    try:
        for sock in opened:
            sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        for sock in opened:
            if not sock.recv(100).startswith(b"HTTP/1.1 200"):
                return set()
        clients = {sock.getsockname()[1] for sock in opened}
        peers = _tcp_peers(port)
        return {
            pid
            for pid in child_pids(master)
            if any(peers.get(inode) in clients for inode in _socket_inodes(pid))
        }
    finally:
        for sock in opened:
            sock.close()


def child_pids(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields_[11]) + int(fields_[12])) / ticks


def bin_command(name: str, module: str) -> list[str]:
    """The console script beside this Python, or ``python -m module`` without it."""
    script = BIN / name
    return [str(script)] if script.exists() else [sys.executable, "-m", module]


def env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)}


# --- the run ---------------------------------------------------------------------------


@dataclass
class Mode:
    """How big and how often: ``quick`` must stay under 3 minutes in all."""

    name: str
    repeats: int  # alternated subject/baseline pairs for each throughput figure
    e2e_n: int
    e2e_rabbitmq_n: int
    e2e_sqlite_n: int
    clients: int  # concurrent HTTP clients submitting jobs
    worker_n: int
    rss_n: int  # the first worker run drains this many; RSS at rss_n/10 and rss_n
    latency_samples: int
    latency_gap_s: float
    rows: int  # jobs in the table for the read benchmarks
    small_rows: int  # for list_scaling's small side
    deep: int  # how deep the deep list page is
    http_seconds: float  # one HTTP load run
    http_connections: int
    prune_fraction: float  # the share of loaded rows old enough to prune
    prune_clients: int
    prune_timeout_s: float
    bulk_requests: int  # bulk submits of 500 jobs per measured run, shared by the clients
    consumer_n: int  # remote jobs drained by the consumer processes per run
    claim_samples: int  # waiting claims answered by a submit


MODES = {
    "quick": Mode(
        name="quick",
        repeats=2,
        e2e_n=800,
        e2e_rabbitmq_n=600,
        e2e_sqlite_n=400,
        clients=8,
        worker_n=2_000,
        rss_n=3_000,
        latency_samples=15,
        latency_gap_s=0.4,
        rows=100_000,
        small_rows=10_000,
        deep=90_000,
        http_seconds=1.5,
        http_connections=8,
        prune_fraction=0.1,
        prune_clients=2,
        prune_timeout_s=30,
        bulk_requests=16,
        consumer_n=2_000,
        claim_samples=20,
    ),
    "full": Mode(
        name="full",
        repeats=3,
        e2e_n=5_000,
        e2e_rabbitmq_n=5_000,
        e2e_sqlite_n=2_000,
        clients=8,
        worker_n=10_000,
        rss_n=50_000,
        latency_samples=40,
        latency_gap_s=0.6,
        rows=1_000_000,
        small_rows=10_000,
        deep=900_000,
        http_seconds=8.0,
        http_connections=8,
        prune_fraction=0.1,
        prune_clients=2,
        prune_timeout_s=300,
        bulk_requests=48,
        consumer_n=10_000,
        claim_samples=50,
    ),
}


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    ini: Path


@dataclass
class Run:
    mode: Mode
    run_dir: Path
    services: dict[str, str | None]
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    procs: list[subprocess.Popen] = field(default_factory=list)
    queues: set[str] = field(default_factory=set)
    loaded_rows: int = 0
    notes: list[str] = field(default_factory=list)
    _db_created: bool = False
    _apps: dict[Path, Any] = field(default_factory=dict)

    # names ------------------------------------------------------------------------------

    @property
    def db_name(self) -> str:
        return f"nick_jobs_bench_{self.tag}"

    @property
    def dsn(self) -> str:
        return f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname={self.db_name}"

    @property
    def db_url(self) -> str:
        return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{self.db_name}"

    @property
    def namespace(self) -> str:
        return f"nick-jobs-bench-{self.tag}"

    def queue(self, purpose: str) -> str:
        name = f"nick_jobs_bench_{self.tag}_{purpose}"
        self.queues.add(name)
        return name

    def need(self, *services: str) -> None:
        for name in services:
            reason = self.services.get(name, f"{name} was not checked")
            if reason:
                raise Skip(reason)

    # database ---------------------------------------------------------------------------

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(
            f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname=postgres", autocommit=True
        )

    def create_database(self) -> None:
        self.need("postgresql")
        if self._db_created:
            return
        with self.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {self.db_name} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {self.db_name}")
        self._db_created = True
        ini = self.nick_ini("migrate", broker="redis")
        self.cli("migrate", str(ini))
        # An Administrator: the built-in dummy and prune actions need MANAGE_SITE.
        self.cli("users", "add", str(ini), "bench", "--password", PASSWORD, "--role", ADMIN)

    def db(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=True)

    def truncate_jobs(self) -> None:
        with self.db() as conn:
            conn.execute("TRUNCATE jobs, job_history RESTART IDENTITY")
        self.loaded_rows = 0

    def ensure_rows(self, rows: int) -> None:
        """Bulk-load finished jobs (never through the API) until ``rows`` are loaded."""
        if self.loaded_rows >= rows:
            return
        if self.loaded_rows == 0:
            self.truncate_jobs()  # ids and timestamps then follow the generated order
        old = int(self.mode.rows * self.mode.prune_fraction)
        log(f"loading jobs {self.loaded_rows + 1:,}..{rows:,} with generate_series")
        started = time.monotonic()
        with self.db() as conn:
            conn.execute(
                LOAD_SQL,
                {"lo": self.loaded_rows + 1, "hi": rows, "old": old, "total": self.mode.rows},
            )
            conn.execute("VACUUM ANALYZE jobs")
        self.checkpoint()
        log(f"loaded in {time.monotonic() - started:.1f}s")
        self.loaded_rows = rows

    def checkpoint(self) -> None:
        """Write out what a bulk load left dirty before the timed part begins.

        A million loaded rows are about 0.5 GB of WAL: PostgreSQL starts a checkpoint on
        its own during the load, and its final fsyncs landed in the measured seconds
        after it (a 0.5 s stall of every commit in one run of ``prune``).
        """
        try:
            with self.db() as conn:
                conn.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            self.notes.append("CHECKPOINT after a bulk load needs a superuser; skipped")

    def wait_finished(
        self, n: int, table: str = "jobs", timeout: float = 300, poll: float = 0.05
    ) -> None:
        deadline = time.monotonic() + timeout
        query = f"SELECT count(*) FROM {table} WHERE status IN ('completed', 'failed', 'aborted')"  # noqa: S608
        with self.db() as conn:
            while True:
                done = conn.execute(query).fetchone()[0]
                if done >= n:
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {done} of {n} jobs finished in {timeout}s")
                time.sleep(poll)

    def finished_span(self, table: str = "jobs") -> tuple[float, float, int, dict[str, int]]:
        """(first started, last finished) as epoch seconds, the count, and statuses."""
        with self.db() as conn:
            first, last, count = conn.execute(
                f"SELECT extract(epoch FROM min(started)), extract(epoch FROM max(finished)), "  # noqa: S608
                f"count(*) FROM {table}"
            ).fetchone()
            statuses = dict(
                conn.execute(f"SELECT status, count(*) FROM {table} GROUP BY status").fetchall()  # noqa: S608
            )
        return float(first), float(last), count, statuses

    # ini files, servers and workers -----------------------------------------------------

    def nick_ini(
        self,
        name: str,
        *,
        broker: str,
        queue: str | None = None,
        base: str = "production.ini",
        app: dict[str, str] | None = None,
        server: dict[str, str] | None = None,
    ) -> Path:
        """An ini from ``base`` (server settings and logging as shipped, but ``server``)
        for this run."""
        parser = configparser.RawConfigParser()
        parser.optionxform = str  # keep key case (logging keys are case-sensitive)
        parser.read(ROOT / base)
        settings = {"nick_jobs.jwt_secret": self.secret}
        if broker != "stub":
            settings.update(
                {
                    "sqlalchemy.url": self.db_url,
                    "nick_jobs.broker_url": REDIS_URL if broker == "redis" else AMQP_URL,
                    "nick_jobs.queue": queue or self.queue(name.replace("-", "_")),
                    "nick_jobs.broker_namespace": self.namespace,
                }
            )
        settings.update(app or {})
        for key, value in settings.items():
            parser.set("app:main", key, value.replace("%", "%%"))
        for key, value in (server or {}).items():
            parser.set("server:main", key, value)
        port = free_port()
        parser.set("server:main", "listen", f"127.0.0.1:{port}")
        path = self.run_dir / f"{name}.ini"
        with path.open("w") as fh:
            parser.write(fh)
        return path

    def baseline_ini(self, name: str, *, queue: str, broker: str = "redis") -> Path:
        """The one-view Pyramid baseline, on production.ini's [server:main] settings."""
        parser = configparser.RawConfigParser()
        parser.optionxform = str
        parser.read(ROOT / "production.ini")
        app = {
            "use": "call:benchmarks.baseline_http:main",
            "baseline.dsn": self.dsn,
            "baseline.broker_url": REDIS_URL if broker == "redis" else AMQP_URL,
            "baseline.namespace": self.namespace + "-baseline",
            "baseline.queue": queue,
        }
        parser.remove_section("app:main")
        parser.add_section("app:main")
        for key, value in app.items():
            parser.set("app:main", key, value.replace("%", "%%"))
        parser.set("server:main", "listen", f"127.0.0.1:{free_port()}")
        path = self.run_dir / f"{name}.ini"
        with path.open("w") as fh:
            parser.write(fh)
        return path

    def port_of(self, ini: Path) -> int:
        parser = configparser.RawConfigParser()
        parser.read(ini)
        return int(parser.get("server:main", "listen").rsplit(":", 1)[1])

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        logfile = (self.run_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            args,
            cwd=self.run_dir,
            env=env(),
            stdout=logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        logfile.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 30) -> None:
        """SIGTERM, then SIGKILL to the process group this run started for it."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Children (gunicorn's workers) share the group: make sure none is left.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc in self.procs:
            self.procs.remove(proc)

    def serve(self, ini: Path, name: str) -> Server:
        proc = self.spawn(name, [*bin_command("pserve", "pyramid.scripts.pserve"), str(ini)])
        port = self.port_of(ini)
        wait_port(port, proc)
        return Server(proc, port, ini)

    def serve_gunicorn(self, ini: Path, name: str, workers: int = 2) -> Server:
        """The ini's app under gunicorn with deploy/gunicorn.conf.py as shipped, ``workers``
        gthread workers on the port of its ``[server:main]``; once every worker serves."""
        if importlib.util.find_spec("gunicorn") is None:
            raise Skip("gunicorn is not installed (pip install -e '.[server]')")
        port = self.port_of(ini)
        command = [*bin_command("gunicorn", "gunicorn"), "--paste", str(ini)]
        command += ["-c", str(ROOT / "deploy" / "gunicorn.conf.py"), "-w", str(workers)]
        command += ["-k", "gthread", "-b", f"127.0.0.1:{port}"]
        proc = self.spawn(name, command)
        wait_port(port, proc)
        # The master listens at once; each worker serves only once it has loaded the app.
        deadline = time.monotonic() + 60
        while len(serving_workers(proc.pid, port)) < workers:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"not every one of {workers} gunicorn workers serves")
            time.sleep(0.2)
        return Server(proc, port, ini)

    def worker(self, ini: Path, name: str, threads: int = 8) -> subprocess.Popen:
        """One ``nick-jobs worker`` process: the command's own process runs the jobs."""
        cmd = [*bin_command("nick-jobs", "nick_jobs.cli.admin"), "worker", str(ini)]
        return self.spawn(name, [*cmd, "-t", str(threads)])

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [*bin_command("nick-jobs", "nick_jobs.cli.admin"), *args]
        result = subprocess.run(cmd, cwd=self.run_dir, env=env(), capture_output=True, text=True)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {result.stderr.strip()[-2000:]}")
        return result

    def baseline_pipeline(self, *args: str, queue: str, broker: str = "redis") -> dict:
        cmd = [sys.executable, str(ROOT / "benchmarks" / "baseline_pipeline.py"), *self.bl(queue)]
        cmd += ["--broker-url", REDIS_URL if broker == "redis" else AMQP_URL, *args]
        result = subprocess.run(cmd, cwd=self.run_dir, env=env(), capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"baseline {args} failed: {result.stderr.strip()[-2000:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])

    def bl(self, queue: str) -> list[str]:
        return ["--dsn", self.dsn, "--namespace", self.namespace + "-baseline", "--queue", queue]

    def baseline_worker(self, queue: str, name: str, broker: str = "redis") -> subprocess.Popen:
        cmd = [sys.executable, str(ROOT / "benchmarks" / "baseline_pipeline.py"), *self.bl(queue)]
        cmd += ["--broker-url", REDIS_URL if broker == "redis" else AMQP_URL, "worker"]
        return self.spawn(name, cmd)

    def settings(self, ini: Path):
        from pyramid.paster import get_appsettings

        from nick_jobs.settings import apply_environment, parse

        return parse(apply_environment(get_appsettings(str(ini))))

    def token(self, ini: Path, login: str = "bench") -> str:
        from nick_jobs.users import tokens

        return tokens.issue(self.settings(ini), login, login.title())

    def app(self, ini: Path):
        """The application built in this process: for its queue (sending preloaded jobs)."""
        if ini not in self._apps:
            from pyramid.paster import get_app

            self._apps[ini] = get_app(str(ini))
        return self._apps[ini]

    # clean-up ---------------------------------------------------------------------------

    def close(self) -> None:
        for proc in list(self.procs):
            with contextlib.suppress(Exception):
                self.stop(proc, timeout=15)
        for app in self._apps.values():
            with contextlib.suppress(Exception):
                app.registry["nick_jobs.queue"].broker.close()
                app.registry["nick_jobs.engine"].dispose()
        if not self.services.get("redis"):
            with contextlib.suppress(Exception):
                import redis

                client = redis.Redis.from_url(REDIS_URL)
                keys = list(client.scan_iter(match=f"{self.namespace}*", count=1000))
                for start in range(0, len(keys), 500):
                    client.delete(*keys[start : start + 500])
                client.close()
        if self.queues and not self.services.get("rabbitmq"):
            with contextlib.suppress(Exception):
                import pika

                connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
                channel = connection.channel()
                for queue in self.queues:
                    for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
                        channel.queue_delete(name)
                connection.close()
        if self._db_created:
            with contextlib.suppress(Exception), self.admin() as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {self.db_name} WITH (FORCE)")


# Finished jobs, oldest first: the first ``old`` rows finished 90 days ago (prunable), the
# rest within the last day; one in a thousand failed. Ids follow creation order, as the
# API's own inserts do.
LOAD_SQL = """
INSERT INTO jobs (uuid, title, description, action, params, actor, status, created,
                  started, finished, result, error, attempt, idempotency_key)
SELECT gen_random_uuid()::text, 'Dummy job', '', 'dummy', '{"action": "dummy"}'::jsonb,
       'bench', CASE WHEN g %% 1000 = 0 THEN 'failed' ELSE 'completed' END,
       ts, ts + interval '2 ms', ts + interval '9 ms', '{}'::jsonb,
       CASE WHEN g %% 1000 = 0 THEN '{"type": "JobFailed", "message": "no"}'::jsonb END,
       1, NULL
FROM (
    SELECT g, CASE WHEN g <= %(old)s
                   THEN now() - interval '90 days' + g * interval '10 ms'
                   ELSE now() - interval '1 day' + (g - %(old)s) * interval '10 ms' END AS ts
    FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g
) AS s
"""


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    started = time.monotonic()
    log(f"{name} ...")
    try:
        yield
    finally:
        log(f"{name} done in {time.monotonic() - started:.1f}s")
