"""Fixtures of the browser tests: Debian's Chromium, headless, driven by Selenium.

Everything is local: the browser and its driver are the system's (``/usr/bin/chromium``,
``/usr/bin/chromedriver``), given to Selenium by path, so Selenium Manager never runs and
nothing is downloaded. When either is missing the tests skip with the reason; with
``NICK_JOBS_REQUIRE_SERVICES=1`` (set by ``.ci/run``) they fail instead.

Fixtures
--------

``live_server`` (session) -> :class:`LiveServer`
    A real ``pserve`` process on a free port: SQLite in a temporary directory, the embedded
    worker (``stub://``, 2 threads), ``auto_migrate = true``, ``tests.actions_for_tests``
    included, and ``nick_jobs.cors_origins`` listing ``origin_server.url`` only. The users
    ``admin`` (Administrator) and ``alice`` (no role) are added with ``nick-jobs users add``.

    * ``.url``: ``"http://127.0.0.1:PORT"`` (no trailing slash); ``.dashboard_url`` is
      ``url + "/dashboard/"``.
    * ``.passwords``: ``{"admin": "admin-password", "alice": "alice-password"}``.
    * ``.token(login="admin") -> str``: a bearer token, by ``POST /@login`` over HTTP.
    * ``.request(method, path, *, login=None, token=None, json=None, headers=None)
      -> Response``: one HTTP request that never raises for a status; ``login`` logs in
      first. ``Response`` has ``.status``, ``.headers`` (case-insensitive) and ``.json``.
    * ``.client(login="admin") -> nick_jobs.client.Client``: the Python client, logged in.
    * ``.ini``, ``.directory``, ``.log`` (the server's output file).

    ``start_live_server(directory, **settings)`` is the context manager behind it, for a
    module that needs other settings (its own server, its own database).

``origin_server`` (session) and ``disallowed_origin`` (session) -> :class:`OriginServer`
    Two more origins, each a small HTTP server on its own port, serving
    ``tests/browser/pages/`` at ``/`` and ``clients/js/index.js`` at
    ``/nick-jobs-client.js`` (so a page imports the client as an ES module from its own
    origin). ``origin_server.url`` is in the live server's ``cors_origins``;
    ``disallowed_origin.url`` is not. ``.page(name, **query) -> str`` is the URL of a page
    with a query string.

``driver`` (function) -> selenium WebDriver
    A fresh headless Chromium (1280x800, its own temporary profile) per test. When the test
    fails, a screenshot, the page's HTML and the browser console are saved in the test's
    ``tmp_path`` and their paths are printed with the failure ("browser artifacts").

``screenshot`` (function) -> ``screenshot(name: str) -> Path``
    Saves the current page as ``<name>.png`` in the directory ``$NICK_JOBS_SCREENSHOTS``
    names (relative to the checkout), or in the test's ``tmp_path`` when it is unset, so a
    normal run never changes the tree. The docs' pictures are taken with
    ``NICK_JOBS_SCREENSHOTS=docs/dashboard .venv/bin/pytest tests/browser``.

Helpers (import them: ``from tests.browser.conftest import wait_until, page_result``)
------------------------------------------------------------------------------------

``wait_until(driver, condition, timeout=10.0, message="")``
    Polls ``condition(driver)`` (every 50 ms, with WebDriverWait) until it returns a truthy
    value, and returns that value; at the deadline the test fails with ``message``.
    ``condition`` may be one of Selenium's ``expected_conditions``.

``page_result(driver, timeout=30.0) -> dict``
    Waits for the test pages' ``<pre id="result" data-state="done">`` and returns its JSON.

``browser_available()``
    Skips (or fails, under ``NICK_JOBS_REQUIRE_SERVICES=1``) when the browser can't run.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests import processes
from tests.client.test_client import PSERVE, server_env
from tests.conftest import REQUIRE_SERVICES, ROOT, stop_process
from tests.netutil import free_port, wait_listening

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PAGES = Path(__file__).resolve().parent / "pages"
JS_CLIENT = ROOT / "clients" / "js" / "index.js"
CHROME_ARGUMENTS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,800",
)
USERS = {
    "admin": ("admin-password", ["Administrator"]),
    "alice": ("alice-password", []),
}


# --- the browser -----------------------------------------------------------------------


def browser_available() -> None:
    """Skip the test (fail it under ``NICK_JOBS_REQUIRE_SERVICES=1``) when Chromium, its
    driver or Selenium is missing."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if not missing:
        return
    message = (
        f"{' and '.join(missing)} not installed "
        "(apt-get install chromium chromium-driver; pip install -e .[testing])"
    )
    if REQUIRE_SERVICES:
        pytest.fail(message + " (NICK_JOBS_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def start_chrome(profile: Path):
    """A headless Chromium from Debian's packages, with ``profile`` as its user data dir.

    The driver's path in ``Service`` is what keeps Selenium Manager from running (it is
    asked only when no path is given), so nothing is looked up or downloaded.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in CHROME_ARGUMENTS:
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={profile}")
    # The console, for the artifacts of a failed test.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER))
    return webdriver.Chrome(options=options, service=service)


_BROWSER = pytest.StashKey[tuple[Any, Path]]()


@pytest.fixture
def driver(request, tmp_path):
    """A fresh headless Chromium for one test; see the module's docstring."""
    browser_available()
    profile = tmp_path / "chrome-profile"
    profile.mkdir()
    chrome = start_chrome(profile)
    request.node.stash[_BROWSER] = (chrome, tmp_path)
    yield chrome
    chrome.quit()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed or _BROWSER not in item.stash:
        return
    chrome, directory = item.stash[_BROWSER]
    saved = []
    with contextlib.suppress(Exception):
        path = directory / "failure.png"
        chrome.save_screenshot(str(path))
        saved.append(f"screenshot: {path}")
    with contextlib.suppress(Exception):
        path = directory / "failure.html"
        path.write_text(f"<!-- {chrome.current_url} -->\n{chrome.page_source}")
        saved.append(f"page:       {path}")
    with contextlib.suppress(Exception):
        path = directory / "console.log"
        lines = [
            f"{entry['timestamp']} {entry['level']} {entry['message']}"
            for entry in chrome.get_log("browser")
        ]
        path.write_text("\n".join(lines) + "\n")
        saved.append(f"console:    {path} ({len(lines)} lines)")
    if saved:
        report.sections.append(("browser artifacts", "\n".join(saved)))


@pytest.fixture
def screenshot(driver, tmp_path) -> Callable[[str], Path]:
    """``screenshot(name)``: the page as ``<name>.png``; see the module's docstring."""

    def take(name: str) -> Path:
        target = os.environ.get("NICK_JOBS_SCREENSHOTS")
        directory = (ROOT / target) if target else tmp_path
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}.png"
        if not driver.save_screenshot(str(path)):
            raise AssertionError(f"the browser saved no screenshot to {path}")
        return path

    return take


def wait_until(
    driver, condition: Callable[[Any], Any], timeout: float = 10.0, message: str = ""
) -> Any:
    """``condition(driver)``'s first truthy value, polled until ``timeout`` seconds."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)
    except TimeoutException:
        pytest.fail(f"waited {timeout} s in vain{': ' + message if message else ''}")


def page_result(driver, timeout: float = 30.0) -> dict:
    """The JSON a test page writes into ``<pre id="result" data-state="done">``."""

    def done(chrome) -> str | None:
        return chrome.execute_script(
            "const pre = document.getElementById('result');"
            "return pre && pre.dataset.state === 'done' ? pre.textContent : null;"
        )

    return json.loads(wait_until(driver, done, timeout, "the page wrote no result"))


# --- the origins of the pages ----------------------------------------------------------


class _PagesHandler(SimpleHTTPRequestHandler):
    def translate_path(self, path: str) -> str:
        if path.split("?", 1)[0] == "/nick-jobs-client.js":
            return str(JS_CLIENT)
        return super().translate_path(path)

    def end_headers(self) -> None:
        # A page always loads the client as it is in the checkout now.
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class OriginServer:
    url: str
    server: ThreadingHTTPServer

    def page(self, name: str, **query: Any) -> str:
        """The URL of ``pages/<name>``, with ``query`` as its query string."""
        from urllib.parse import urlencode

        return f"{self.url}/{name}" + (f"?{urlencode(query)}" if query else "")


@contextlib.contextmanager
def serve_pages() -> Iterator[OriginServer]:
    """``tests/browser/pages`` and the JS client on a free port of 127.0.0.1."""
    handler = functools.partial(_PagesHandler, directory=str(PAGES))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="pages", daemon=True)
    thread.start()
    try:
        yield OriginServer(f"http://127.0.0.1:{server.server_address[1]}", server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="session")
def origin_server() -> Iterator[OriginServer]:
    """The origin the live server's ``nick_jobs.cors_origins`` allows."""
    with serve_pages() as origin:
        yield origin


@pytest.fixture(scope="session")
def disallowed_origin() -> Iterator[OriginServer]:
    """The same pages from an origin that ``nick_jobs.cors_origins`` does not list."""
    with serve_pages() as origin:
        yield origin


# --- the nick-jobs server --------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: Message
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class LiveServer:
    url: str
    ini: Path
    directory: Path
    log: Path
    process: subprocess.Popen
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def dashboard_url(self) -> str:
        return f"{self.url}/dashboard/"

    def request(
        self,
        method: str,
        path: str,
        *,
        login: str | None = None,
        token: str | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """One request to ``url + path``; a 4xx or 5xx is returned, not raised."""
        import json as _json

        sent = {"Accept": "application/json", **(headers or {})}
        if login is not None:
            token = self.token(login)
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        data = None
        if json is not None:
            data = _json.dumps(json).encode()
            sent["Content-Type"] = "application/json"
        # Always this server's own http:// URL, never a file: or other scheme.
        request = urllib.request.Request(self.url + path, data, sent, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
                return Response(answer.status, answer.headers, answer.read())
        except urllib.error.HTTPError as error:
            with error:
                return Response(error.code, error.headers, error.read())

    def token(self, login: str = "admin") -> str:
        """A bearer token for ``login``, from ``POST /@login``."""
        answer = self.request(
            "POST", "/@login", json={"login": login, "password": self.passwords[login]}
        )
        assert answer.status == 200, (answer.status, answer.body)
        return answer.json["token"]

    def client(self, login: str | None = "admin"):
        """The Python client (``nick_jobs.client.Client``), logged in as ``login``."""
        from nick_jobs.client import Client

        client = Client(self.url)
        if login:
            client.login(login, self.passwords[login])
        return client


def _nick_jobs(*args: str) -> subprocess.CompletedProcess:
    return processes.run(
        [sys.executable, "-m", "nick_jobs.cli.admin", *args],
        cwd=ROOT,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@contextlib.contextmanager
def start_live_server(directory: Path, **settings: str) -> Iterator[LiveServer]:
    """``pserve`` on a free port with a new SQLite database in ``directory``; ``settings``
    add to or replace the ini's ``[app:main]`` values."""
    port = free_port()
    values = {
        "nick_jobs.environment": "testing",
        "sqlalchemy.url": f"sqlite:///{directory / 'jobs.sqlite'}",
        "nick_jobs.broker_url": "stub://",
        "nick_jobs.embedded_worker_threads": "2",
        "nick_jobs.worker_timeout_ms": "50",
        "nick_jobs.jwt_secret": "browser-tests-" + "x" * 40,
        "nick_jobs.auto_migrate": "true",
        "nick_jobs.bootstrap_admin": "false",
        "nick_jobs.login_rate_limit": "1000",
        "nick_jobs.includes": "tests.actions_for_tests",
        # Idle streams send a comment every second, so that a closed page is noticed soon.
        "nick_jobs.stream_keepalive": "1",
        # A test may leave a job running: the server stops within 2 s.
        "nick_jobs.shutdown_grace": "2",
        **settings,
    }
    ini = directory / "server.ini"
    lines = ["[app:main]", "use = egg:nick-jobs"]
    lines += [f"{key} = {value.replace('%', '%%')}" for key, value in values.items()]
    lines += ["", "[server:main]", "use = egg:waitress#main", f"listen = 127.0.0.1:{port}"]
    # Each open event stream holds a waitress thread; pages may hold several.
    lines += ["threads = 16", "channel_request_lookahead = 1", ""]
    ini.write_text("\n".join(lines))
    log_path = directory / "server.log"
    log = log_path.open("w+")
    process = subprocess.Popen(
        [str(PSERVE), str(ini)], cwd=ROOT, env=server_env(), stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_listening(port, process, log_path, "pserve", timeout=60)
        # The server made the tables (auto_migrate); the users come as an operator adds them.
        for login, (password, roles) in USERS.items():
            role_args = [arg for role in roles for arg in ("--role", role)]
            added = _nick_jobs(
                "users", "add", str(ini), login, "--password", password,
                "--fullname", login.title(), *role_args,
            )  # fmt: skip
            assert added.returncode == 0, added.stderr
        passwords = {login: password for login, (password, _) in USERS.items()}
        yield LiveServer(url, ini, directory, log_path, process, passwords)
    finally:
        stop_process(process)
        log.close()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory, origin_server) -> Iterator[LiveServer]:
    """The nick-jobs server of the browser tests; see the module's docstring."""
    with start_live_server(
        tmp_path_factory.mktemp("live-server"),
        **{"nick_jobs.cors_origins": origin_server.url},
    ) as live:
        yield live
