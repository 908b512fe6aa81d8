"""The dashboard in a real browser: headless Chromium against a live ``pserve`` with its
embedded worker (tests/browser/conftest.py). Each scenario is what a person does, by
the page's labels and ``data-testid`` hooks; nothing is reloaded unless the test says so.
One test has a server of its own, whose tokens live a few seconds, to see them renewed.

``NICK_JOBS_SCREENSHOTS=docs/dashboard .venv/bin/pytest tests/browser/test_dashboard.py``
writes the pictures of docs/dashboard.md.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time

from tests.browser.conftest import start_live_server, wait_until

try:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select
except ImportError:
    # Every test here asks for the ``driver`` fixture, whose browser_available() skips it
    # with the reason, or fails it under NICK_JOBS_REQUIRE_SERVICES=1 (CI): no module-wide
    # skip that CI would take for a pass.
    By = Keys = Select = None

TOKEN_KEY = "nick-jobs.dashboard.token"
STATUSES = ("created", "running", "completed", "failed", "aborted", "stopped")


# --- helpers ---------------------------------------------------------------------------


def by_testid(name: str) -> tuple[str, str]:
    return (By.CSS_SELECTOR, f"[data-testid='{name}']")


def find(driver, name: str):
    return driver.find_element(*by_testid(name))


def visible(driver, name: str, timeout: float = 10.0):
    """The element with ``data-testid=name`` once it is displayed."""

    def shown(chrome):
        for element in chrome.find_elements(*by_testid(name)):
            if element.is_displayed():
                return element
        return None

    return wait_until(driver, shown, timeout, f"{name} is not shown")


def text_of(driver, name: str) -> str:
    elements = driver.find_elements(*by_testid(name))
    return elements[0].text if elements else ""


def unique(prefix: str) -> str:
    return f"{prefix} {secrets.token_hex(3)}"


def log_in(driver, live_server, login: str = "admin") -> None:
    """Open the dashboard and log in through its form, with the keyboard only."""
    driver.get(live_server.dashboard_url)
    field = visible(driver, "login-name")
    # The form starts focused on the login: typing goes there, Tab moves on, Enter sends.
    wait_until(driver, lambda chrome: chrome.switch_to.active_element == field)
    field.send_keys(login, Keys.TAB)
    driver.switch_to.active_element.send_keys(live_server.passwords[login], Keys.ENTER)
    visible(driver, "jobs-table")
    wait_until(driver, lambda chrome: find(chrome, "user-name").text == login.title())
    # A mark on the page's window: still there at the end means it was never reloaded.
    driver.execute_script("window.__notReloaded = true;")


def attr(driver, css: str, name: str) -> str | None:
    """An attribute of the first element ``css`` selects, read in the page at once: the
    views re-render as events come, so an element found a moment ago may be gone."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]);"
        "return e ? e.getAttribute(arguments[1]) : null;",
        css,
        name,
    )


def attrs(driver, css: str, name: str) -> list[str | None]:
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])]"
        ".map(e => e.getAttribute(arguments[1]));",
        css,
        name,
    )


def text(driver, css: str) -> str:
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';", css
    )


def history(driver) -> list[str | None]:
    return attrs(driver, "[data-testid='history-row']", "data-event")


def not_reloaded(driver) -> bool:
    return driver.execute_script("return window.__notReloaded === true;")


def token_in_page(driver) -> str | None:
    return driver.execute_script(f"return sessionStorage.getItem('{TOKEN_KEY}');")


def submit_job(
    live_server, params: dict, login: str = "admin", token: str | None = None, **body
) -> dict:
    """``POST /@jobs`` as ``login``, or with ``token`` (no login each time: a test that
    submits many jobs saves a password check for each)."""
    auth = {"token": token} if token else {"login": login}
    answer = live_server.request("POST", "/@jobs", json={"params": params, **body}, **auth)
    assert answer.status == 201, answer.body
    return answer.json


def job_status(driver) -> str:
    return attr(driver, "[data-testid='job-status-slot'] [data-status]", "data-status") or ""


def wait_status(driver, status: str, timeout: float = 20.0) -> None:
    wait_until(driver, lambda chrome: job_status(chrome) == status, timeout, f"never {status}")


def finish(live_server, uuid: str, timeout: float = 20.0) -> dict:
    """Poll the job over HTTP until it is finished; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = live_server.request("GET", f"/@jobs/{uuid}", login="admin").json
        if job["status"] in ("completed", "failed", "aborted"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {uuid} did not finish in {timeout} s")


def click(driver, name: str) -> None:
    """Click ``name`` (a data-testid, or a CSS selector) once it is shown, even if the
    view re-renders meanwhile."""
    from selenium.common.exceptions import StaleElementReferenceException

    def clicked(chrome) -> bool:
        try:
            found = (By.CSS_SELECTOR, name) if any(c in name for c in "[ .#") else by_testid(name)
            for element in chrome.find_elements(*found):
                if element.is_displayed() and element.is_enabled():
                    element.click()
                    return True
        except StaleElementReferenceException:
            pass
        return False

    wait_until(driver, clicked, 10, f"{name} could not be clicked")


def unlabelled(driver) -> list[str]:
    """The form controls of the page that have neither a ``label[for]`` nor an
    ``aria-label``: none may be, on every view."""
    return driver.execute_script(
        "return [...document.querySelectorAll('input, select, textarea')]"
        ".filter((e) => e.type !== 'hidden')"
        ".filter((e) => !(e.getAttribute('aria-label') || '').trim()"
        '  && !(e.id && document.querySelector(`label[for="${CSS.escape(e.id)}"]`)))'
        ".map((e) => e.outerHTML);"
    )


def assert_labelled(driver, at_least: int = 1) -> None:
    controls = driver.execute_script(
        "return document.querySelectorAll('input:not([type=hidden]), select, textarea').length;"
    )
    assert controls >= at_least, f"{controls} form controls on {driver.current_url}"
    assert unlabelled(driver) == [], driver.current_url


def log_levels(driver) -> list[str | None]:
    return attrs(driver, "[data-testid='log-line']", "data-level")


def steps_done_shown(driver) -> int:
    """The steps done, as the job page's summary says ("3 of 60 steps done")."""
    summary = text(driver, "[data-testid='steps-summary']")
    return int(summary.split()[0]) if summary else 0


def claims_of(token: str) -> dict:
    """The claims of a JWT, read without checking it (the server does that)."""
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def shown_seconds(text: str) -> float:
    """A duration as format.js writes it ("4.2 s", "12 s", "3 min 5 s") in seconds."""
    match = re.fullmatch(r"(?:(\d+) min )?(\d+(?:\.\d)?) s", text)
    assert match, text
    return int(match.group(1) or 0) * 60 + float(match.group(2))


def confirm(driver) -> None:
    dialog = visible(driver, "confirm-dialog")
    assert dialog.get_attribute("open") is not None
    # It opens on Cancel, so Enter alone never destroys anything.
    assert driver.switch_to.active_element == find(driver, "confirm-cancel")
    find(driver, "confirm-ok").click()


# --- logging in and out ----------------------------------------------------------------


def test_log_in_with_a_wrong_then_the_right_password_and_log_out(driver, live_server, screenshot):
    driver.get(live_server.url + "/dashboard")  # the redirect to /dashboard/
    visible(driver, "login-form")
    assert driver.current_url == live_server.dashboard_url
    find(driver, "login-name").send_keys("admin")
    find(driver, "login-password").send_keys("not-the-password")
    assert_labelled(driver, at_least=2)
    screenshot("login")
    find(driver, "login-submit").click()
    error = visible(driver, "login-error")
    assert "Invalid credentials: Wrong login and/or password." in error.text
    assert token_in_page(driver) is None

    password = find(driver, "login-password")
    password.clear()
    password.send_keys(live_server.passwords["admin"], Keys.ENTER)
    visible(driver, "jobs-table")
    assert find(driver, "user-name").text == "Admin"
    token = token_in_page(driver)
    assert token
    assert live_server.request("GET", "/@jobs", token=token).status == 200
    # No cookie carries the session: only the page's requests are authenticated. Nor
    # does anything outlive the tab: the token is in sessionStorage alone.
    assert driver.get_cookies() == []
    assert driver.execute_script("return localStorage.length;") == 0
    assert find(driver, "nav-schedules").is_displayed()

    find(driver, "logout").click()
    assert "You have logged out." in visible(driver, "login-reason").text
    assert token_in_page(driver) is None
    # @logout revoked the token: it opens nothing any more.
    assert live_server.request("GET", "/@jobs", token=token).status == 401


def test_a_401_sends_the_user_back_to_the_login_form_with_the_reason(driver, live_server):
    log_in(driver, live_server)
    token = token_in_page(driver)
    # The token is logged out elsewhere (another tab, an operator): the next request fails.
    assert live_server.request("POST", "/@logout", token=token).status == 204
    find(driver, "nav-submit").click()
    reason = visible(driver, "login-reason")
    assert "Your session has ended" in reason.text
    assert "not authorized" in reason.text
    assert token_in_page(driver) is None
    assert not_reloaded(driver)
    # Logging in again lands on the page that was asked for.
    find(driver, "login-name").send_keys("admin")
    find(driver, "login-password").send_keys(live_server.passwords["admin"], Keys.ENTER)
    visible(driver, "submit-form")


# A lifetime short enough to see the page renew its token in a test, and long enough
# that the renewed token outlives a loaded machine's stalls (renewed at half of it).
SHORT_LIFETIME_S = 12


def test_the_page_renews_its_token_halfway_through_its_lifetime(driver, tmp_path):
    directory = tmp_path / "short-tokens"
    directory.mkdir()
    lifetime = {"nick_jobs.jwt_lifetime": str(SHORT_LIFETIME_S)}
    with start_live_server(directory, **lifetime) as server:
        job = submit_job(server, {"action": "echo", "message": "listed"}, title=unique("Listed"))
        log_in(driver, server)
        first = token_in_page(driver)
        claims = claims_of(first)
        assert claims["exp"] - claims["iat"] <= SHORT_LIFETIME_S

        def renewed(chrome) -> str | None:
            token = token_in_page(chrome)
            assert token is not None, "the page dropped its token"
            return token if token != first else None

        token = wait_until(driver, renewed, 2 * SHORT_LIFETIME_S, "the token was not renewed")
        now = claims_of(token)
        assert now["sub"] == "admin"
        # Issued (by the server's clock) about half a lifetime after the first, before that
        # one ended: half of 11 to 12 s (exp is whole seconds, iat is not), less the time
        # the page took to get and read the first; not a second later.
        waited = now["iat"] - claims["iat"]
        lived = claims["exp"] - claims["iat"]
        assert lived / 3 <= waited < lived, f"renewed after {waited:.2f} s"
        assert now["exp"] > claims["exp"]

        # The first token is revoked: the page goes on with the one it renewed to.
        assert server.request("POST", "/@logout", token=first).status == 204
        assert server.request("GET", "/@jobs", token=first).status == 401
        find(driver, "nav-schedules").click()
        visible(driver, "schedules-table")
        find(driver, "nav-jobs").click()
        row = f"tr[data-uuid='{job['uuid']}']"
        wait_until(driver, lambda chrome: attr(chrome, row, "data-status") == "completed")
        assert token_in_page(driver) not in (None, first)
        assert not driver.find_elements(*by_testid("login-reason"))
        assert not_reloaded(driver)


# --- jobs ------------------------------------------------------------------------------


def test_submit_a_dummy_job_through_the_form_and_watch_it_complete(driver, live_server, screenshot):
    log_in(driver, live_server)
    find(driver, "new-job").click()
    visible(driver, "submit-form")
    Select(find(driver, "submit-action")).select_by_value("dummy")
    title = unique("Four steps")
    find(driver, "submit-title").send_keys(title)
    # The form is the action's JSON Schema: one labelled field per param.
    sleep_field = visible(driver, "param-sleep")
    assert sleep_field.get_attribute("type") == "number"
    label = driver.find_element(By.CSS_SELECTOR, "label[for='param-sleep']")
    assert label.text.startswith("Sleep")
    sleep_field.send_keys("4")
    find(driver, "param-steps").send_keys("4")
    find(driver, "param-result").send_keys('{"answer": 42}')
    assert_labelled(driver, at_least=4)
    screenshot("submit")
    find(driver, "submit-job").click()

    visible(driver, "job-progress")
    assert find(driver, "job-title").text == title
    uuid = driver.current_url.rsplit("/", 1)[1]
    wait_status(driver, "running")
    seen: set[int] = set()

    def finished(chrome) -> bool:
        percent = attr(chrome, "[data-testid='job-progress'] [role='progressbar']", "aria-valuenow")
        if percent is not None:
            seen.add(int(percent))
        if len(seen) == 2 and job_status(chrome) == "running":
            screenshot("job")
        return job_status(chrome) == "completed"

    wait_until(driver, finished, 30, "the job never completed")
    # The bar moved through the steps while the job ran, then filled. It is
    # read again now: the page may have drawn the last step and the status
    # between the two reads above.
    assert any(0 < percent < 100 for percent in seen), seen
    bar = "[data-testid='job-progress'] [role='progressbar']"
    assert attr(driver, bar, "aria-valuenow") == "100"
    assert '"answer": 42' in find(driver, "job-result").text
    assert find(driver, "field-attempt").text == "1"
    steps = driver.find_elements(By.CSS_SELECTOR, "[data-testid='job-steps'] [data-status='done']")
    assert len(steps) == 4
    wait_until(driver, lambda chrome: len(chrome.find_elements(*by_testid("log-line"))) >= 4)
    wait_until(
        driver,
        lambda chrome: history(chrome) == ["created", "started", "completed"],
        message="the history is not created, started, completed",
    )
    # Finished: restart and delete are offered; abort is not.
    controls = attrs(driver, "[data-testid='job-controls'] button", "data-testid")
    assert controls == ["job-restart", "job-delete"]
    assert not_reloaded(driver)

    # The job is in the list, completed, with a full bar.
    find(driver, "back-to-jobs").click()
    visible(driver, "jobs-table")
    row = f"tr[data-uuid='{uuid}']"
    wait_until(driver, lambda chrome: attr(chrome, row, "data-status") == "completed")
    assert attr(driver, f"{row} [role='progressbar']", "aria-valuenow") == "100"


def test_the_job_list_follows_new_jobs_live(driver, live_server, screenshot):
    log_in(driver, live_server)
    live = "[data-testid='live']"
    wait_until(driver, lambda chrome: attr(chrome, live, "data-state") == "live")
    completed = "[data-testid='count-completed']"
    wait_until(driver, lambda chrome: attr(chrome, completed, "data-count"))
    before = int(attr(driver, completed, "data-count"))
    title = unique("Arrives live")
    job = submit_job(live_server, {"action": "dummy", "sleep": 1, "steps": 2}, title=title)
    selector = f"tr[data-uuid='{job['uuid']}']"
    wait_until(
        driver, lambda chrome: attr(chrome, selector, "data-uuid"), 10, "the job never appeared"
    )
    assert title in text(driver, selector)
    # Newest first: it heads the list.
    assert attrs(driver, "[data-testid='jobs-body'] tr", "data-uuid")[0] == job["uuid"]
    wait_until(
        driver,
        lambda chrome: attr(chrome, selector, "data-status") == "completed",
        20,
        "the row never became completed",
    )
    wait_until(
        driver,
        lambda chrome: int(attr(chrome, completed, "data-count") or 0) > before,
        message="the completed count did not grow",
    )
    # A few more, for the picture: one running, one failed, one from another user.
    running = submit_job(
        live_server, {"action": "dummy", "sleep": 60, "steps": 30}, title="Nightly export"
    )
    submit_job(live_server, {"action": "explode"}, title="Import catalogue")
    submit_job(live_server, {"action": "echo", "message": "hi"}, login="alice", title="Say hi")
    bar = f"tr[data-uuid='{running['uuid']}'] [role='progressbar']"
    wait_until(driver, lambda chrome: int(attr(chrome, bar, "aria-valuenow") or 0) > 0, 15)
    screenshot("jobs")
    assert (
        live_server.request("POST", f"/@jobs/{running['uuid']}/abort", login="admin").status == 204
    )
    assert not_reloaded(driver)


def test_filters_and_pages(driver, live_server):
    marker = secrets.token_hex(4)
    token = live_server.token()
    for number in range(27):
        params = {"action": "echo", "message": str(number)}
        submit_job(live_server, params, token=token, title=f"page {marker} {number}")
    # Two more with the marker, for the action and user filters: another action, another user.
    dummy = submit_job(
        live_server, {"action": "dummy", "steps": 0}, token=token, title=f"other {marker}"
    )
    alices = submit_job(
        live_server, {"action": "echo", "message": "hers"}, login="alice", title=f"other {marker}"
    )
    log_in(driver, live_server)
    assert_labelled(driver, at_least=4)
    find(driver, "filter-q").send_keys(f"page {marker}", Keys.ENTER)
    wait_until(
        driver, lambda chrome: marker in chrome.current_url, message="the filter is not in the URL"
    )
    # The rows of the filtered answer: until it comes, the page still shows the
    # unfiltered first page, 25 rows too (the URL changes first).
    titles_js = (
        "return [...document.querySelectorAll('[data-testid=job-link]')].map(a => a.textContent);"
    )

    def filtered(chrome) -> list[str] | None:
        shown = chrome.execute_script(titles_js)
        ours = len(shown) == 25 and all(title.startswith(f"page {marker} ") for title in shown)
        return shown if ours else None

    titles = wait_until(driver, filtered, message="the filtered page did not come")
    assert titles[0] == f"page {marker} 26"
    find(driver, "page-next").click()
    wait_until(driver, lambda chrome: len(chrome.find_elements(*by_testid("job-row"))) == 2)
    assert find(driver, "page-next").get_attribute("disabled") is not None
    find(driver, "page-prev").click()
    wait_until(driver, lambda chrome: len(chrome.find_elements(*by_testid("job-row"))) == 25)
    # The status filter: echo jobs complete, so none of these is failed.
    Select(find(driver, "filter-status")).select_by_value("failed")
    visible(driver, "jobs-empty")

    def rows(chrome) -> list[str | None]:
        return attrs(chrome, "[data-testid='job-row']", "data-uuid")

    # The action filter, with any status: of the marked jobs, the one dummy job. (Each
    # list is waited for before the next filter, as each is checked.)
    Select(find(driver, "filter-status")).select_by_value("")
    wait_until(driver, lambda chrome: len(rows(chrome)) == 25, message="no page of 25 again")
    search = find(driver, "filter-q")
    search.clear()
    search.send_keys(marker)
    find(driver, "filter-action").send_keys("dummy", Keys.ENTER)
    wait_until(driver, lambda chrome: rows(chrome) == [dummy["uuid"]], message="not the dummy job")
    assert "action=dummy" in driver.current_url
    # The user filter instead: of the marked jobs, Alice's one.
    find(driver, "filter-action").clear()
    find(driver, "filter-actor").send_keys("alice", Keys.ENTER)
    wait_until(driver, lambda chrome: rows(chrome) == [alices["uuid"]], message="not Alice's job")
    assert "actor=alice" in driver.current_url
    assert "action=" not in driver.current_url
    # Both at once: Alice has no dummy job.
    find(driver, "filter-action").send_keys("dummy", Keys.ENTER)
    visible(driver, "jobs-empty")
    assert rows(driver) == []


def test_abort_a_running_job(driver, live_server):
    job = submit_job(
        live_server, {"action": "dummy", "sleep": 120, "steps": 120}, title=unique("Long")
    )
    log_in(driver, live_server)
    driver.get(f"{live_server.dashboard_url}#/jobs/{job['uuid']}")
    wait_status(driver, "running")
    controls = "[data-testid='job-controls'] button"
    wait_until(
        driver, lambda chrome: attrs(chrome, controls, "data-testid") == ["job-abort", "job-stop"]
    )
    click(driver, "job-abort")
    confirm(driver)
    wait_status(driver, "aborted")
    assert (
        live_server.request("GET", f"/@jobs/{job['uuid']}", login="admin").json["status"]
        == "aborted"
    )
    wait_until(driver, lambda chrome: chrome.find_elements(*by_testid("job-retry")))
    assert not driver.find_elements(*by_testid("job-abort"))
    wait_until(
        driver,
        lambda chrome: "aborted" in history(chrome),
    )


def test_cancel_leaves_the_job_alone(driver, live_server):
    job = submit_job(live_server, {"action": "echo", "message": "keep me"}, title=unique("Kept"))
    log_in(driver, live_server)
    driver.get(f"{live_server.dashboard_url}#/jobs/{job['uuid']}")
    wait_status(driver, "completed")
    click(driver, "job-delete")
    visible(driver, "confirm-dialog")
    driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    wait_until(driver, lambda chrome: not find(chrome, "confirm-dialog").is_displayed())
    assert live_server.request("GET", f"/@jobs/{job['uuid']}", login="admin").status == 200
    click(driver, "job-delete")
    confirm(driver)
    visible(driver, "jobs-table")
    assert live_server.request("GET", f"/@jobs/{job['uuid']}", login="admin").status == 404


def test_retry_a_failed_job(driver, live_server):
    job = submit_job(live_server, {"action": "explode"}, title=unique("Explodes"))
    log_in(driver, live_server)
    driver.get(f"{live_server.dashboard_url}#/jobs/{job['uuid']}")
    wait_status(driver, "failed")
    assert '"message": "kaboom"' in find(driver, "job-error-json").text
    click(driver, "job-retry")
    # explode fails every time: the second attempt fails too, and the page follows it.
    attempt = "[data-testid='field-attempt']"
    wait_until(driver, lambda chrome: text(chrome, attempt) == "2", 20, "no second attempt")
    wait_status(driver, "failed")
    wait_until(
        driver,
        lambda chrome: (
            history(chrome) == ["created", "started", "failed", "retried", "started", "failed"]
        ),
        20,
        "the history does not show the retry",
    )
    assert not_reloaded(driver)


def levelled_job(live_server) -> str:
    """A completed job that logged one line at each level: a remote action's, run by its
    consumer (here, over HTTP) as any consumer would."""
    token = live_server.token("admin")
    name = f"levels-{secrets.token_hex(3)}"
    put = live_server.request(
        "PUT", f"/@job-actions/{name}", token=token, json={"title": "Logs at every level"}
    )
    assert put.status == 201, put.body
    job = submit_job(live_server, {"action": name}, title=unique("Logs at every level"))
    claimed = live_server.request(
        "POST", "/@jobs/@claim", token=token, json={"actions": [name], "wait": 10}
    )
    assert [taken["uuid"] for taken in claimed.json] == [job["uuid"]], claimed.body
    lease = claimed.json[0]["lease"]["id"]
    lines = [{"level": level, "message": f"a {level} line"} for level in LOG_LEVELS]
    path = f"/@jobs/{job['uuid']}"
    checkin = {"lease": lease, "log": lines}
    assert live_server.request("POST", f"{path}/checkin", token=token, json=checkin).status == 200
    done = {"lease": lease, "result": {}}
    assert live_server.request("POST", f"{path}/complete", token=token, json=done).status == 204
    return job["uuid"]


LOG_LEVELS = ("debug", "info", "warning", "error")


def test_a_job_page_filters_its_log_and_stops_resumes_and_restarts_a_job(driver, live_server):
    levelled = levelled_job(live_server)
    # dummy is resumable: a step every half second, each saved as its checkpoint.
    job = submit_job(
        live_server, {"action": "dummy", "sleep": 30, "steps": 60}, title=unique("Resumable")
    )
    uuid = job["uuid"]
    left = [uuid]
    try:
        log_in(driver, live_server)

        # The log level: every line, then warning and up only.
        driver.get(f"{live_server.dashboard_url}#/jobs/{levelled}")
        wait_status(driver, "completed")
        wait_until(driver, lambda chrome: log_levels(chrome) == list(LOG_LEVELS), 10, "no lines")
        assert_labelled(driver, at_least=2)
        Select(find(driver, "log-level")).select_by_value("warning")
        wait_until(
            driver,
            lambda chrome: log_levels(chrome) == ["warning", "error"],
            message="the log still shows lines below warning",
        )
        assert text(driver, "[data-testid='job-log']").count("a warning line") == 1

        # Stop a running job: it keeps its checkpoint, and offers to resume.
        driver.get(f"{live_server.dashboard_url}#/jobs/{uuid}")
        wait_status(driver, "running")
        controls = "[data-testid='job-controls'] button"
        wait_until(
            driver,
            lambda chrome: attrs(chrome, controls, "data-testid") == ["job-abort", "job-stop"],
        )
        wait_until(driver, lambda chrome: steps_done_shown(chrome) >= 1, 10, "no step done")
        click(driver, "job-stop")
        wait_status(driver, "stopped")
        wait_until(
            driver,
            lambda chrome: attrs(chrome, controls, "data-testid") == ["job-resume", "job-delete"],
        )
        wait_until(
            driver, lambda chrome: "stopped" in history(chrome), message="no stop in history"
        )
        stopped = live_server.request("GET", f"/@jobs/{uuid}", login="admin").json
        steps_done = sum(step["status"] == "done" for step in stopped["progress"]["steps"])
        assert steps_done >= 1

        # Resume it: a second attempt, on from the checkpoint rather than from the start.
        click(driver, "job-resume")
        wait_until(driver, lambda chrome: text(chrome, "[data-testid='field-attempt']") == "2")
        wait_status(driver, "running")
        wait_until(driver, lambda chrome: "resumed" in history(chrome), message="no resume")
        wait_until(
            driver,
            lambda chrome: steps_done_shown(chrome) > steps_done,
            10,
            "the resumed job does not go on",
        )
        log, token = f"/@jobs/{uuid}/log?b_size=1000", live_server.token()

        def second_attempts_lines(_) -> list[str]:
            lines = live_server.request("GET", log, token=token).json
            return [line["message"] for line in lines if line["attempt"] == 2]

        again = wait_until(driver, second_attempts_lines, 10, "the second attempt logged nothing")
        # "step N of 60 done": the first step it ran is past the checkpoint, never step 1.
        assert int(again[0].split()[1]) > 1, again
        assert "step 1 of 60 done" not in again

        # Abort it, then restart it: the page moves to the new job, which names its parent.
        click(driver, "job-abort")
        confirm(driver)
        wait_status(driver, "aborted")
        click(driver, "job-restart")
        wait_until(
            driver,
            lambda chrome: uuid not in chrome.current_url,
            message="the page did not move to the restarted job",
        )
        restarted = driver.current_url.rsplit("/", 1)[1]
        left.append(restarted)
        parent = "[data-testid='parent-link']"
        wait_until(driver, lambda chrome: attr(chrome, parent, "href") == f"#/jobs/{uuid}")
        assert (
            live_server.request("GET", f"/@jobs/{restarted}", login="admin").json["parent"] == uuid
        )
        # The old job lists its restart.
        click(driver, parent)
        restarts = "[data-testid='restarts'] a"
        wait_until(
            driver,
            lambda chrome: attrs(chrome, restarts, "href") == [f"#/jobs/{restarted}"],
            message="the old job does not list its restart",
        )
        assert job_status(driver) == "aborted"
        assert not_reloaded(driver)
    finally:
        for left_over in left:
            live_server.request("POST", f"/@jobs/{left_over}/abort", login="admin")


def test_a_refused_change_shows_the_apis_409(driver, live_server):
    # A failed dummy job may be resumed (its action can), but one that ran no step saved
    # no checkpoint: the API refuses, and the page says what it said.
    job = submit_job(
        live_server,
        {"action": "dummy", "steps": 0, "fail": "disk full"},
        title=unique("No checkpoint"),
    )
    log_in(driver, live_server)
    driver.get(f"{live_server.dashboard_url}#/jobs/{job['uuid']}")
    wait_status(driver, "failed")
    click(driver, "job-resume")
    message = visible(driver, "job-action-error")
    assert message.text == (
        "Invalid state: This failed job saved no checkpoint to resume from; retry it instead. "
        "(the job is failed)"
    )


def test_a_user_sees_only_their_own_jobs(driver, live_server):
    theirs = submit_job(
        live_server, {"action": "echo", "message": "mine"}, login="alice", title=unique("Alice's")
    )
    admins = submit_job(
        live_server, {"action": "echo", "message": "admin's"}, title=unique("Admin's")
    )
    log_in(driver, live_server, "alice")
    wait_until(
        driver,
        lambda chrome: chrome.find_elements(By.CSS_SELECTOR, f"tr[data-uuid='{theirs['uuid']}']"),
    )
    uuids = set(attrs(driver, "[data-testid='job-row']", "data-uuid"))
    assert theirs["uuid"] in uuids
    assert admins["uuid"] not in uuids
    for uuid in uuids:
        assert live_server.request("GET", f"/@jobs/{uuid}", login="alice").json["actor"] == "alice"
    # No user filter and no schedules for a user who is not an administrator.
    assert not driver.find_elements(*by_testid("filter-actor"))
    assert not find(driver, "nav-schedules").is_displayed()
    # A job submitted by someone else now does not appear live either.
    other = submit_job(live_server, {"action": "echo", "message": "later"}, title=unique("Later"))
    mine = submit_job(
        live_server,
        {"action": "echo", "message": "later"},
        login="alice",
        title=unique("Mine later"),
    )
    wait_until(
        driver,
        lambda chrome: chrome.find_elements(By.CSS_SELECTOR, f"tr[data-uuid='{mine['uuid']}']"),
    )
    assert not driver.find_elements(By.CSS_SELECTOR, f"tr[data-uuid='{other['uuid']}']")
    # Another user's job, asked for by its address, is not found.
    driver.get(f"{live_server.dashboard_url}#/jobs/{admins['uuid']}")
    visible(driver, "job-error")
    assert "does not exist, or it is not yours" in find(driver, "job-error").text


def test_submit_shows_the_apis_field_errors_next_to_the_fields(driver, live_server):
    log_in(driver, live_server, "alice")
    driver.get(f"{live_server.dashboard_url}#/submit?action=echo")
    visible(driver, "submit-form")
    Select(find(driver, "submit-action")).select_by_value("echo")
    visible(driver, "param-sleep").send_keys("-1")
    find(driver, "submit-job").click()
    # message is required: the API's 400 names it, and the page puts it under the field.
    error = visible(driver, "param-message-error")
    assert error.text == "Missing data for required field."
    assert find(driver, "param-message").get_attribute("aria-invalid") == "true"
    assert "Validation error" in visible(driver, "submit-error").text
    find(driver, "param-message").send_keys("hello")
    find(driver, "submit-job").click()
    visible(driver, "job-progress")
    wait_status(driver, "completed")
    assert '"message": "hello"' in find(driver, "job-result").text


# --- schedules -------------------------------------------------------------------------


def test_create_disable_and_delete_a_schedule(driver, live_server, screenshot):
    log_in(driver, live_server)
    find(driver, "nav-schedules").click()
    visible(driver, "schedules-table")
    find(driver, "new-schedule").click()
    visible(driver, "schedule-form")
    schedule_id = f"nightly-{secrets.token_hex(3)}"
    find(driver, "schedule-id").send_keys(schedule_id)
    find(driver, "schedule-title").send_keys("Nightly dummy")
    Select(find(driver, "schedule-action")).select_by_value("dummy")
    rule = find(driver, "schedule-rule")
    rule.clear()
    rule.send_keys("61 3 * * *")
    # The server's preview judges the rule as the scheduler would.
    error = visible(driver, "schedule-rule-error")
    assert "is not a valid cron expression" in error.text
    rule.clear()
    rule.send_keys("15 3 * * *")
    zone = find(driver, "schedule-timezone")
    zone.clear()
    zone.send_keys("Europe/Amsterdam")
    wait_until(
        driver,
        lambda chrome: (
            len(chrome.find_elements(By.CSS_SELECTOR, "[data-testid='preview-list'] li")) == 5
            and "Europe/Amsterdam" in find(chrome, "schedule-preview").text
        ),
        message="no preview of five firings",
    )
    assert find(driver, "schedule-rule-error").text == ""
    visible(driver, "sparam-steps").send_keys("3")
    assert_labelled(driver, at_least=5)
    driver.execute_script(
        "document.querySelector('[data-testid=schedule-action]').scrollIntoView({block: 'start'});"
    )
    screenshot("schedule-form")
    find(driver, "schedule-save").click()

    row_selector = f"tr[data-id='{schedule_id}']"
    wait_until(driver, lambda chrome: attr(chrome, row_selector, "data-id"), 10, "no new row")
    assert "15 3 * * *" in text(driver, row_selector)
    assert "Europe/Amsterdam" in text(driver, row_selector)
    stored = live_server.request("GET", f"/@scheduled-jobs/{schedule_id}", login="admin").json
    assert (stored["enabled"], stored["params"], stored["title"]) == (
        True,
        {"steps": 3},
        "Nightly dummy",
    )
    screenshot("schedules")

    toggle = f"{row_selector} [data-testid='schedule-toggle']"
    assert attr(driver, toggle, "aria-pressed") == "true"
    click(driver, toggle)
    wait_until(driver, lambda chrome: attr(chrome, toggle, "aria-pressed") == "false")
    stored = live_server.request("GET", f"/@scheduled-jobs/{schedule_id}", login="admin").json
    assert (stored["enabled"], stored["next_run"]) == (False, None)

    click(driver, f"{row_selector} [data-testid='schedule-edit']")
    visible(driver, "schedule-form")
    assert find(driver, "schedule-id").get_attribute("disabled") is not None
    assert find(driver, "sparam-steps").get_attribute("value") == "3"
    rule = find(driver, "schedule-rule")
    rule.clear()
    rule.send_keys("45 4 * * 1")
    find(driver, "schedule-save").click()
    wait_until(driver, lambda chrome: "45 4 * * 1" in text(chrome, row_selector))

    click(driver, f"{row_selector} [data-testid='schedule-delete']")
    confirm(driver)
    wait_until(driver, lambda chrome: not chrome.find_elements(By.CSS_SELECTOR, row_selector))
    assert (
        live_server.request("GET", f"/@scheduled-jobs/{schedule_id}", login="admin").status == 404
    )
    assert not_reloaded(driver)


# --- overview, and the page at another size ---------------------------------------------


def running(live_server, uuids: list[str], timeout: float = 20.0) -> None:
    """Poll over HTTP until every job of ``uuids`` is running; fail at the deadline."""
    deadline = time.monotonic() + timeout
    token = live_server.token()
    while time.monotonic() < deadline:
        jobs = [live_server.request("GET", f"/@jobs/{uuid}", token=token).json for uuid in uuids]
        if all(job["status"] == "running" for job in jobs):
            return
        time.sleep(0.05)
    raise AssertionError(f"jobs {uuids} did not all start in {timeout} s")


def test_the_overview_charts_the_last_hour(driver, live_server, screenshot):
    done = submit_job(
        live_server, {"action": "echo", "message": "counted"}, title=unique("Counted")
    )
    failed = submit_job(live_server, {"action": "explode"}, title=unique("Counted failure"))
    for job in (done, failed):
        finish(live_server, job["uuid"])
    # Both worker threads busy, so that a job waits: the oldest waiting one.
    busy = [
        submit_job(live_server, {"action": "dummy", "sleep": 120, "steps": 120}, title=title)
        for title in (unique("Keeps a worker busy"), unique("Keeps another busy"))
    ]
    left = [job["uuid"] for job in busy]
    try:
        running(live_server, left)
        waiting = submit_job(live_server, {"action": "echo", "message": "waits"}, title="Waits")
        left.append(waiting["uuid"])
        token = live_server.token()

        def stats() -> dict:
            return live_server.request("GET", "/@jobs/@stats", token=token).json

        before = stats()
        assert before["oldest_waiting"]["uuid"] == waiting["uuid"]
        log_in(driver, live_server)
        find(driver, "nav-overview").click()
        chart = visible(driver, "finished-chart")
        after = stats()
        assert chart.tag_name == "svg"
        css = "[data-testid='finished-chart']"
        assert driver.find_elements(By.CSS_SELECTOR, f"{css} rect.completed")
        assert driver.find_elements(By.CSS_SELECTOR, f"{css} rect.failed")

        # The oldest waiting job, as @stats named it, and its age when the page read it.
        assert attr(driver, "[data-testid='oldest-link']", "href") == f"#/jobs/{waiting['uuid']}"
        age = shown_seconds(find(driver, "oldest-waiting").text)
        assert before["oldest_waiting"]["age"] - 1 <= age <= after["oldest_waiting"]["age"] + 1

        # The counts per status are @stats' own: the jobs stand still meanwhile (the page
        # reads them again every 15 s, should one have moved).
        def counts(chrome) -> dict[str, int]:
            return {
                status: int(text(chrome, f"[data-testid='overview-count-{status}'] .count-value"))
                for status in ("total", *STATUSES)
            }

        def as_stats(chrome) -> dict[str, int] | None:
            figures = stats()
            expected = {"total": figures["total"], **figures["counts"]}
            return expected if counts(chrome) == expected else None

        expected = wait_until(driver, as_stats, 20, "the counts are not those of @stats")
        assert expected["created"] >= 1
        assert expected["running"] >= 2
        assert find(driver, "overview-actions").text.count("echo") == 1
        assert_labelled(driver, at_least=0)
        screenshot("overview")
    finally:
        for uuid in left:
            live_server.request("POST", f"/@jobs/{uuid}/abort", login="admin")


def test_a_narrow_window(driver, live_server, screenshot):
    submit_job(live_server, {"action": "echo", "message": "narrow"}, title=unique("Narrow"))
    driver.set_window_size(420, 860)
    log_in(driver, live_server)
    wait_until(driver, lambda chrome: chrome.find_elements(*by_testid("job-row")))
    # Nothing sticks out sideways but the table, which scrolls in its own box.
    width = driver.execute_script("return document.documentElement.scrollWidth;")
    inner = driver.execute_script("return window.innerWidth;")
    assert width <= inner
    assert find(driver, "nav-submit").is_displayed()
    screenshot("jobs-narrow")
