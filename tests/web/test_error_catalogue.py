"""The catalogue of error types (``nick_jobs.web.errors.Error``): the only source of the
``type`` an error body carries, documented in docs/api.md, and used by every call site."""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyramid.httpexceptions import (
    HTTPBadRequest,
    HTTPConflict,
    HTTPGone,
    HTTPNotImplemented,
    HTTPRequestEntityTooLarge,
    status_map,
)
from pyramid.testing import DummyRequest

from nick_jobs.web.errors import Error, api_error, error_body, http_exception

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "nick_jobs"
API_DOC = ROOT / "docs" / "api.md"
BUILDERS = {"api_error", "error_body"}


def test_each_type_belongs_to_one_status_and_one_member():
    """No type string is shared, not even on purpose: a client can tell the status, and
    the error, from ``type`` alone. Two members with the same (status, type) would be one
    member under two names (an Enum alias), which ``@unique`` refuses and this checks."""
    assert len(Error.__members__) == len(Error)
    shared = [type_ for type_, n in Counter(error.type for error in Error).items() if n > 1]
    assert shared == []
    for error in Error:
        assert 400 <= error.status < 600
        assert error.type
        assert error.type == error.type.strip()


def documented_types() -> dict[str, int]:
    """The ``| `type` | status | when |`` rows of docs/api.md's "Error types" section."""
    text = API_DOC.read_text()
    section = text.split("\n## Error types\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \| (\d{3}) \| .+ \|$", section, flags=re.MULTILINE)
    documented = [(type_, int(status)) for type_, status in rows]
    assert len(documented) == len(dict(documented)), "a type is listed twice"
    return dict(documented)


def test_docs_list_every_type_and_no_other():
    assert documented_types() == {error.type: error.status for error in Error}


def test_api_error_sends_the_members_status_and_type():
    for error in Error:
        exc = api_error(error, "A sentence.", extra=1)
        assert exc.code == error.status
        assert exc.content_type == "application/json"
        assert json.loads(exc.body) == {
            "error": {"type": error.type, "message": "A sentence.", "extra": 1}
        }
        assert error_body(error, "m") == {"error": {"type": error.type, "message": "m"}}


def test_for_status_gives_a_member_for_every_error_status():
    catalogued = {error.status for error in Error}
    for code in status_map:
        if code < 400:
            with pytest.raises(ValueError, match="is not an error status"):
                Error.for_status(code)
            continue
        error = Error.for_status(code)
        if code in catalogued:
            assert error.status == code
        else:
            assert error is (Error.BAD_REQUEST if code < 500 else Error.INTERNAL)
    assert Error.for_status(404) is Error.NOT_FOUND
    assert Error.for_status(409) is Error.CONFLICT
    assert Error.for_status(503) is Error.SERVICE_UNAVAILABLE


@pytest.mark.parametrize(
    ("exc", "status", "type_"),
    [
        (HTTPBadRequest(), 400, "Bad request"),
        (HTTPConflict(), 409, "Conflict"),
        (HTTPRequestEntityTooLarge(), 413, "Request too large"),
        (HTTPGone(), 400, "Bad request"),
        (HTTPNotImplemented(), 500, "Internal server error"),
    ],
)
def test_a_bare_http_exception_gets_a_catalogue_type(exc, status, type_):
    response = http_exception(exc, DummyRequest())
    assert response.code == status
    body = json.loads(response.body)
    assert body["error"]["type"] == type_
    assert body["error"]["message"] == exc.explanation


# --- every call site names a member -------------------------------------------------------


def literal_first_arguments(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, builder) for each call of a builder whose error is given as a literal: a
    string, an f-string or a number, instead of a member of the catalogue."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if name not in BUILDERS:
            continue
        first = node.args[0] if node.args else None
        if first is None:
            first = next((kw.value for kw in node.keywords if kw.arg == "error"), None)
        if isinstance(first, ast.Constant | ast.JoinedStr):
            yield node.lineno, name


def test_the_check_finds_a_literal_type():
    source = (
        "api_error(404, 'Not found', 'x')\n"
        "errors.error_body('Service unavailable', 'x')\n"
        "api_error(error=f'{x}', message='x')\n"
        "api_error(Error.NOT_FOUND, 'x')\n"
    )
    found = list(literal_first_arguments(ast.parse(source)))
    assert found == [(1, "api_error"), (2, "error_body"), (3, "api_error")]


def test_no_module_builds_an_error_from_a_literal():
    offenders = [
        f"{path.relative_to(ROOT)}:{line} {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, name in literal_first_arguments(ast.parse(path.read_text(), str(path)))
    ]
    assert offenders == []


def test_every_member_is_sent_somewhere():
    """A member no code names would be a documented type the API never sends. Naming it
    in the catalogue's own mapping of statuses does not count."""
    errors_module = PACKAGE / "web" / "errors.py"
    named: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        skipped: set[ast.AST] = set()
        if path == errors_module:
            for node in tree.body:
                if isinstance(node, ast.ClassDef) and node.name == "Error":
                    skipped.add(node)
                if isinstance(node, ast.AnnAssign | ast.Assign):
                    skipped.add(node)
        for top in tree.body:
            if top in skipped:
                continue
            for node in ast.walk(top):
                if (
                    isinstance(node, ast.Attribute)
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "Error"
                ):
                    named.add(node.attr)
    assert set(Error.__members__) - named == set()
