"""The browser harness itself: the system's Chromium, started without Selenium Manager, and
the fixtures the other browser tests stand on."""

from __future__ import annotations

import logging
import subprocess

from tests.browser.conftest import (
    CHROMEDRIVER,
    CHROMIUM,
    browser_available,
    page_result,
    start_chrome,
)


def version(binary) -> str:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    # "Chromium 156.0.8078.129 built on Debian …", "ChromeDriver 156.0.8078.129 (…)"
    return out.stdout.split()[1]


def test_the_browser_is_debians_chromium_without_selenium_manager(tmp_path, caplog):
    browser_available()
    # Selenium logs this (at debug) when the driver's path makes it skip Selenium Manager,
    # which would otherwise look up, and maybe download, a driver and a browser.
    caplog.set_level(logging.DEBUG, logger="selenium.webdriver.common.driver_finder")
    chrome = start_chrome(tmp_path / "profile")
    try:
        capabilities = chrome.capabilities
        size = chrome.get_window_size()
    finally:
        chrome.quit()
    assert any("Skipping Selenium Manager" in r.getMessage() for r in caplog.records)
    assert capabilities["browserName"] == "chrome"
    assert capabilities["browserVersion"] == version(CHROMIUM)
    assert capabilities["chrome"]["chromedriverVersion"].split()[0] == version(CHROMEDRIVER)
    assert capabilities["chrome"]["userDataDir"] == str(tmp_path / "profile")
    assert (size["width"], size["height"]) == (1280, 800)


def test_a_page_of_the_origin_server_imports_the_js_client(driver, origin_server):
    driver.get(origin_server.page("cross-origin.html", scenario="no-such-scenario"))
    # The module loaded (the client among its imports) and ran: it names the scenario
    # it lacks, where a failed import would report the script that did not load.
    assert page_result(driver) == {
        "ok": False,
        "error": {
            "name": "Error",
            "message": "no scenario no-such-scenario",
            "status": None,
            "type": None,
            "body": None,
            "cause": None,
        },
    }
    assert driver.title == "nick-jobs from another origin: no-such-scenario"


def test_the_two_origins_differ_and_only_one_is_allowed(
    live_server, origin_server, disallowed_origin
):
    assert len({live_server.url, origin_server.url, disallowed_origin.url}) == 3
    settings = live_server.ini.read_text()
    assert f"nick_jobs.cors_origins = {origin_server.url}\n" in settings


def test_the_live_servers_users_log_in_over_http(live_server):
    admin = live_server.client("admin")
    assert {a["name"] for a in admin.job_actions()} >= {"dummy", "gated"}
    me = live_server.request("GET", "/@jobs", login="alice")
    assert me.status == 200
    assert live_server.request("GET", "/@scheduled-jobs", login="alice").status == 403
    assert live_server.request("GET", "/@scheduled-jobs", login="admin").status == 200


def test_screenshot_writes_to_tmp_unless_asked(
    driver, origin_server, screenshot, tmp_path, monkeypatch
):
    monkeypatch.delenv("NICK_JOBS_SCREENSHOTS", raising=False)
    driver.get(origin_server.page("cross-origin.html"))
    path = screenshot("harness")
    assert path == tmp_path / "harness.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    elsewhere = tmp_path / "docs-pictures"
    monkeypatch.setenv("NICK_JOBS_SCREENSHOTS", str(elsewhere))
    assert screenshot("harness") == elsewhere / "harness.png"
    assert (elsewhere / "harness.png").is_file()
