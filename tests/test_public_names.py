"""nick-jobs uses other packages through their public names only.

Every name nick-jobs reads from another package that starts with ``_`` (an import, an
attribute, a ``getattr`` with a constant), and every look into another object's
``__dict__``, is listed here, found by reading the source:
an attribute counts as another package's when nick-jobs defines no name like it itself.
A few names start with ``_`` and are documented as public all the same; they are
allowed below, each with where it is documented.

``STILL_USED`` is what remains of the machinery that reached into other packages. It
only shrinks: a new private name fails the first test, and one that is gone must leave
the list (the second test), so the list always says what is left to replace.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "nick_jobs"
# The client's package, its own distribution's (clients/python), is held to the same rule.
PACKAGES = (PACKAGE, ROOT / "clients" / "python" / "nick_jobs_client")

# Documented as public although they start with "_".
PUBLIC_ALL_THE_SAME = {
    # os._exit: the Python library reference, "os — Process Management".
    ("os", "_exit"),
    # _thread: the Python library reference, "_thread — Low-level threading API".
    (None, "_thread"),
    # namedtuple's documented methods and fields (the Python library reference).
    (None, "_make"),
    (None, "_asdict"),
    (None, "_replace"),
    (None, "_fields"),
    # SQLAlchemy's Row: "_mapping", "_t" and "_tuple()" are its documented public API,
    # named so to stay out of the way of column names.
    (None, "_mapping"),
    (None, "_t"),
    (None, "_tuple"),
}

# module (as nick_jobs/… or nick_jobs_client/…) -> the other packages' private names it still uses.
# Empty: a module that takes one up again must say here why, and the first test fails
# until it does.
STILL_USED: dict[str, set[str]] = {}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for package in PACKAGES:
        for path in sorted(package.rglob("*.py")):
            yield str(path.relative_to(package.parent)), ast.parse(path.read_text(), str(path))


def _own_private_names(trees: list[ast.Module]) -> set[str]:
    """Every ``_name`` nick-jobs defines: functions, classes, variables, attributes it
    assigns, parameters and import aliases."""
    own: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                own.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                own.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store | ast.Del):
                own.add(node.attr)
            elif isinstance(node, ast.arg):
                own.add(node.arg)
            elif isinstance(node, ast.alias) and node.asname:
                own.add(node.asname)
            elif isinstance(node, ast.keyword) and node.arg:
                own.add(node.arg)  # dataclass fields and attributes set by keyword
    return {name for name in own if _private(name)}


_OWN = {"nick_jobs", "nick_jobs_client"}


def _external(module: str | None, level: int) -> bool:
    return level == 0 and module is not None and module.split(".")[0] not in _OWN


def _uses(tree: ast.Module, own: set[str]) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and _external(node.module, node.level):
            parts = node.module.split(".")
            found.update(f"{node.module}" for part in parts if _private(part))
            found.update(f"{node.module}.{a.name}" for a in node.names if _private(a.name))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if (None, alias.name) in PUBLIC_ALL_THE_SAME:
                    continue
                if any(_private(part) for part in alias.name.split(".")):
                    found.add(alias.name)
        elif (
            isinstance(node, ast.Attribute)
            and node.attr == "__dict__"
            and not (isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"})
        ):
            # Another object's attribute store: what its own API (reify, properties) keeps.
            base = node.value.id if isinstance(node.value, ast.Name) else "…"
            found.add(f"{base}.__dict__")
        elif isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
            base = node.value.id if isinstance(node.value, ast.Name) else None
            if (base, node.attr) in PUBLIC_ALL_THE_SAME or (None, node.attr) in PUBLIC_ALL_THE_SAME:
                continue
            found.add(f"{base or '…'}.{node.attr}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"getattr", "hasattr", "setattr"}
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
            and node.args[1].value not in own
        ):
            found.add(f"{node.func.id}(…, {node.args[1].value!r})")
    return found


def private_names_used() -> dict[str, set[str]]:
    modules = list(_modules())
    own = _own_private_names([tree for _, tree in modules])
    used = {name: _uses(tree, own) for name, tree in modules}
    return {name: names for name, names in used.items() if names}


def test_no_new_private_name_of_another_package():
    new = {
        module: sorted(names - STILL_USED.get(module, set()))
        for module, names in private_names_used().items()
        if names - STILL_USED.get(module, set())
    }
    assert not new, f"private names of other packages; use their public API instead: {new}"


def test_the_list_of_what_remains_says_only_what_remains():
    used = private_names_used()
    gone = {
        module: sorted(names - used.get(module, set()))
        for module, names in STILL_USED.items()
        if names - used.get(module, set())
    }
    assert not gone, f"no longer used: take them off STILL_USED: {gone}"


def test_the_reader_finds_what_it_is_meant_to(tmp_path):
    """The checker itself, on a module that does each thing once."""
    tree = ast.parse(
        "import os\n"
        "from pyramid.router import _internal\n"
        "from waitress._compat import x\n"
        "import dramatiq._private\n"
        "def _mine(conn):\n"
        "    conn._has_events\n"
        "    conn._mine\n"
        "    os._exit(0)\n"
        "    row._mapping\n"
        "    getattr(conn, '_resources', None)\n"
        "    request.__dict__.update(x=1)\n"
        "    self.__dict__\n"
    )
    own = _own_private_names([tree])
    assert _uses(tree, own) == {
        "pyramid.router._internal",
        "waitress._compat",
        "dramatiq._private",
        "conn._has_events",
        "getattr(…, '_resources')",
        "request.__dict__",
    }
