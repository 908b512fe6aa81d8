"""The JavaScript client as a package (``clients/js/``): its version is the Python
package's (``[metadata] version`` of setup.cfg, the one source), and the tarball ``npm
pack`` makes holds what a user needs and nothing of the tests.

Without ``npm`` the packing test fails, unless ``NICK_JOBS_REQUIRE_NODE=0`` says that a
machine without Node is fine (as ``tests/client/test_js_client.py``).
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import warnings

from tests.conftest import ROOT

JS = ROOT / "clients" / "js"


def python_version() -> str:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg", encoding="utf-8")
    return setup["metadata"]["version"]


def test_the_js_package_has_the_python_packages_version():
    package = json.loads((JS / "package.json").read_text(encoding="utf-8"))
    assert package["version"] == python_version(), (
        "clients/js/package.json's version must be setup.cfg's [metadata] version"
    )


def test_the_js_package_names_its_repository_and_keywords():
    package = json.loads((JS / "package.json").read_text(encoding="utf-8"))
    repository = package["repository"]
    assert repository["type"] == "git"
    # The server's Source URL (setup.cfg's project_urls), as npm spells a git one.
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    urls = dict(
        line.split(" = ", 1) for line in config["metadata"]["project_urls"].strip().splitlines()
    )
    assert repository["url"] == f"git+{urls['Source']}.git", repository
    # The package's folder in the repository, which npm links to.
    assert repository["directory"] == JS.relative_to(ROOT).as_posix()
    keywords = package["keywords"]
    assert isinstance(keywords, list)
    assert {"nick-jobs", "server-sent-events"} <= set(keywords)
    assert all(isinstance(word, str) and word == word.strip().lower() for word in keywords)


def test_npm_pack_ships_the_module_its_types_and_its_readme(tmp_path):
    npm = shutil.which("npm")
    if npm is None:
        message = "npm is not installed: the JavaScript client's package can't be checked"
        if os.environ.get("NICK_JOBS_REQUIRE_NODE") == "0":
            warnings.warn(f"{message}; NICK_JOBS_REQUIRE_NODE=0 allows that", stacklevel=1)
            return
        raise AssertionError(f"{message}. Install Node 18+, or set NICK_JOBS_REQUIRE_NODE=0.")
    # A cache of its own: packing reads no registry, and leaves nothing behind.
    env = {**os.environ, "npm_config_cache": str(tmp_path / "npm-cache")}
    done = subprocess.run(
        [npm, "pack", "--dry-run", "--json", "--ignore-scripts"],
        cwd=JS,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (packed,) = json.loads(done.stdout)
    files = {entry["path"] for entry in packed["files"]}
    assert {"README.md", "index.js", "index.d.ts", "package.json"} <= files
    assert not {path for path in files if path.startswith(("test/", "testing/"))}, files
    assert packed["version"] == python_version()
    assert packed["name"] == "nick-jobs-client"
