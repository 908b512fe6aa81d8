"""The dashboard's files over HTTP: where they are served, with which headers, and what
happens to a name that is not one of them (``nick_jobs.dashboard``)."""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import webtest

from nick_jobs import main
from nick_jobs.dashboard import CONTENT_SECURITY_POLICY, STATIC
from nick_jobs.db import get_engine, migrations
from nick_jobs.settings import ConfigurationError, parse
from tests.conftest import ROOT, base_settings

CLIENT = ROOT / "clients" / "js" / "index.js"
VENDORED = STATIC / "vendor" / "nick-jobs-client.js"
NOT_FOUND = {
    "error": {"type": "Not found", "message": "The resource you requested does not exist."}
}


def make(tmp_path: Path, **overrides: str) -> webtest.TestApp:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    engine = get_engine(url)
    migrations.upgrade(engine)
    engine.dispose()
    settings = base_settings(
        **{
            "sqlalchemy.url": url,
            "nick_jobs.broker_url": "stub://",
            "nick_jobs.embedded_worker_threads": "0",
            **overrides,
        }
    )
    return webtest.TestApp(main({}, **settings), extra_environ={"HTTP_HOST": "localhost:8080"})


@pytest.fixture
def app(tmp_path) -> webtest.TestApp:
    test_app = make(tmp_path)
    yield test_app
    test_app.app.registry["nick_jobs.engine"].dispose()
    test_app.app.registry["nick_jobs.read_engine"].dispose()


def static_files() -> list[str]:
    return sorted(
        path.relative_to(STATIC).as_posix() for path in STATIC.rglob("*") if path.is_file()
    )


def assert_security_headers(response) -> None:
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"


def test_the_policy_allows_nothing_inline_and_nothing_from_elsewhere():
    directives = dict(
        part.strip().split(" ", 1) for part in CONTENT_SECURITY_POLICY.split(";") if part.strip()
    )
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["img-src"] == "'self' data:"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["base-uri"] == "'none'"
    assert directives["form-action"] == "'self'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY


def test_the_path_without_a_slash_redirects_to_the_page(app):
    response = app.get("/dashboard", status=302)
    assert response.headers["Location"] == "http://localhost:8080/dashboard/"
    assert_security_headers(response)
    # A query string goes along (a link with one keeps working).
    response = app.get("/dashboard?x=1", status=302)
    assert response.headers["Location"] == "http://localhost:8080/dashboard/?x=1"


def test_the_page_is_served_without_a_token_and_never_cached_unvalidated(app):
    response = app.get("/dashboard/", status=200)
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["ETag"]
    assert response.headers["Last-Modified"]
    assert_security_headers(response)
    assert response.body == (STATIC / "index.html").read_bytes()
    assert app.get("/dashboard/index.html").body == response.body
    # A token the page does not need changes nothing: the files are public by design.
    with_token = app.get("/dashboard/", headers={"Authorization": "Bearer not-a-token"})
    assert with_token.status_int == 200
    assert with_token.body == response.body


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "script":
            self.scripts.append(attributes)
        if tag == "style" or "style" in attributes:
            self.inline.append(tag)
        if any(name.startswith("on") for name in attributes):
            self.inline.append(f"{tag} handler")

    def handle_data(self, data):
        if self.lasttag == "script" and data.strip():
            self.inline.append("script text")


def test_the_page_has_no_inline_script_or_style(app):
    markup = _Markup()
    markup.feed(app.get("/dashboard/").text)
    assert markup.scripts == [{"type": "module", "src": "./app.js"}]
    assert markup.inline == []


@pytest.mark.parametrize("name", static_files())
def test_every_file_is_served_with_its_type_and_the_headers(app, name):
    types = {
        ".html": "text/html; charset=utf-8",
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".svg": "image/svg+xml; charset=utf-8",
    }
    response = app.get(f"/dashboard/{name}", status=200)
    assert response.headers["Content-Type"] == types[os.path.splitext(name)[1]]
    assert response.headers["Cache-Control"] == "no-cache"
    assert_security_headers(response)
    assert response.body == (STATIC / name).read_bytes()
    # HEAD answers the same headers without the body.
    head = app.head(f"/dashboard/{name}", status=200)
    assert head.headers["Content-Type"] == response.headers["Content-Type"]
    assert head.body == b""


def test_the_client_is_the_checkouts_own_file_through_a_relative_symlink(app):
    assert VENDORED.is_symlink()
    target = os.readlink(VENDORED)
    assert not os.path.isabs(target)
    assert (VENDORED.parent / target).resolve() == CLIENT.resolve()
    served = app.get("/dashboard/vendor/nick-jobs-client.js", status=200)
    assert served.body == CLIENT.read_bytes()
    assert served.headers["Content-Type"] == "text/javascript; charset=utf-8"


_IMPORT = re.compile(r"""^\s*import\s[^'"]*?from\s+['"](\.{1,2}/[^'"]+)['"]""", re.MULTILINE)


def test_every_module_imports_only_files_that_are_served(app):
    modules = [name for name in static_files() if name.endswith(".js")]
    checked = 0
    for name in modules:
        for target in _IMPORT.findall((STATIC / name).read_text()):
            path = (Path("/dashboard") / name).parent / target
            app.get(os.path.normpath(path).replace("\\", "/"), status=200)
            checked += 1
    assert checked >= 10  # app.js and the views import each other


def test_no_module_writes_markup_or_styles_from_strings():
    # Data is put into the page as text (dom.js's h()), never parsed as HTML; a style is
    # set through the CSSOM, which the policy allows, never as an attribute.
    for name in static_files():
        if not name.endswith(".js") or name.startswith("vendor/"):
            continue
        text = (STATIC / name).read_text()
        for forbidden in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
            assert forbidden not in text, f"{name} uses {forbidden}"
        assert "setAttribute('style'" not in text, name
        assert "eval(" not in text, name
        assert "new Function" not in text, name


def test_a_file_is_revalidated_with_a_304(app):
    first = app.get("/dashboard/app.js", status=200)
    again = app.get("/dashboard/app.js", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_int == 304
    assert again.body == b""
    assert_security_headers(again)
    since = app.get(
        "/dashboard/app.js", headers={"If-Modified-Since": first.headers["Last-Modified"]}
    )
    assert since.status_int == 304


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/no-such-file.js",
        "/dashboard/js/views/nothing.js",
        "/dashboard/vendor",  # a folder is not a file
        "/dashboard/vendor/",
        "/dashboard/.hidden.js",
        "/dashboard/app.py",  # not a type the dashboard serves
        "/dashboard/..%2f..%2fsetup.cfg",
        "/dashboard/%2e%2e/%2e%2e/setup.cfg",
    ],
)
def test_an_unknown_file_is_the_apis_json_404(app, path):
    response = app.get(path, status=404)
    assert response.headers["Content-Type"] == "application/json"
    assert response.json == NOT_FOUND
    assert_security_headers(response)


def test_another_method_is_a_405(app):
    response = app.post("/dashboard/", status=405)
    assert response.json["error"]["type"] == "Method not allowed"
    assert_security_headers(response)


def test_the_page_learns_where_the_api_is(app):
    response = app.get("/dashboard/config.json", status=200)
    assert response.json == {"apiRoot": "../"}
    assert response.headers["Cache-Control"] == "no-cache"
    assert_security_headers(response)


def test_the_apis_own_answers_keep_their_headers(app):
    response = app.get("/@jobs", status=401)
    assert "Content-Security-Policy" not in response.headers
    assert response.json["error"]["type"] == "Unauthorized"


def test_another_path_moves_everything(tmp_path):
    moved = make(tmp_path, **{"nick_jobs.dashboard_path": "/ops/jobs-board/"})
    try:
        assert moved.get("/ops/jobs-board", status=302).headers["Location"] == (
            "http://localhost:8080/ops/jobs-board/"
        )
        page = moved.get("/ops/jobs-board/", status=200)
        assert_security_headers(page)
        # Two segments deep: the API is two levels up from the page.
        assert moved.get("/ops/jobs-board/config.json").json == {"apiRoot": "../../"}
        assert moved.get("/ops/jobs-board/vendor/nick-jobs-client.js").body == (CLIENT.read_bytes())
        assert moved.get("/dashboard/", status=404).json == NOT_FOUND
    finally:
        moved.app.registry["nick_jobs.engine"].dispose()
        moved.app.registry["nick_jobs.read_engine"].dispose()


def test_a_host_application_says_where_its_jobs_are(tmp_path):
    """nick_jobs.dashboard_api_path: a host whose @jobs hangs under its site (/plone/@jobs)
    tells the page where, still relative to the page."""
    hosted = make(
        tmp_path,
        **{"nick_jobs.dashboard_path": "/ops/board", "nick_jobs.dashboard_api_path": "/plone/"},
    )
    try:
        assert hosted.get("/ops/board/config.json").json == {"apiRoot": "../../plone/"}
    finally:
        hosted.app.registry["nick_jobs.engine"].dispose()
        hosted.app.registry["nick_jobs.read_engine"].dispose()


@pytest.mark.parametrize("value", ["/@jobs", "/site/../etc", "no spaces please"])
def test_an_api_path_that_is_no_site_path_stops_the_start(value):
    with pytest.raises(ConfigurationError, match=r"nick_jobs\.dashboard_api_path"):
        parse(
            base_settings(**{"sqlalchemy.url": "sqlite://", "nick_jobs.dashboard_api_path": value})
        )


def test_the_setting_turns_it_off(tmp_path):
    off = make(tmp_path, **{"nick_jobs.dashboard": "false"})
    try:
        for path in ("/dashboard", "/dashboard/", "/dashboard/app.js", "/dashboard/config.json"):
            response = off.get(path, status=404)
            assert response.json == NOT_FOUND
            assert "Content-Security-Policy" not in response.headers
        # The API is there as ever.
        assert off.get("/@jobs", status=401).json["error"]["type"] == "Unauthorized"
    finally:
        off.app.registry["nick_jobs.engine"].dispose()
        off.app.registry["nick_jobs.read_engine"].dispose()


_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def screenshot_names() -> set[str]:
    """The names the browser tests pass to their ``screenshot`` fixture."""
    import ast

    names = set()
    for module in (ROOT / "tests" / "browser").glob("test_*.py"):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "screenshot"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                names.add(node.args[0].value)
    return names


def test_every_picture_of_the_docs_is_one_a_browser_test_takes():
    # NICK_JOBS_SCREENSHOTS=docs/dashboard writes them again: none may be a stray file
    # that no test would bring up to date.
    docs = ROOT / "docs"
    images = _IMAGE.findall((docs / "dashboard.md").read_text(encoding="utf-8"))
    assert len(images) >= 8, images
    taken = screenshot_names()
    for image in images:
        path = Path(image)
        assert path.parent == Path("dashboard"), image
        assert path.suffix == ".png", image
        assert path.stem in taken, f"{image}: no browser test takes screenshot({path.stem!r})"
        assert (docs / path).is_file(), f"{image} is not in the checkout"
    stored = {path.name for path in (docs / "dashboard").glob("*.png")}
    assert stored == {Path(image).name for image in images}, "pictures the page doesn't show"
