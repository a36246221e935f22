"""One exception tree: every exception class of ours is a GatewatchError, ends in Error, and is drawn in errors.py."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import ingest.errors
from ingest.errors import GatewatchError

ROOT = Path(__file__).resolve().parent.parent

# Private signals that never leave the function that raises them (a parser's mismatch, a value a
# normalizer drops): bad records become dead letters, not exceptions.
PRIVATE = {
    ("ingest.normalize", "InvalidValueError"),
    ("ingest.normalize", "OutOfRangeError"),
    # a request body refused: http_ingest answers it with its HTTP status (413, 400)
    ("gatewatch.http_body", "TooLargeError"),
    ("gatewatch.http_body", "TrailingBytesError"),
    ("gatewatch.http_body", "TooManyMembersError"),
    ("gatewatch.http_body", "TooManyRecordsError"),
}
# Exceptions outside the tree on purpose, with the reason (none today).
KNOWN: dict[tuple[str, str], str] = {}


def _exception_classes() -> list[tuple[str, str]]:
    found = []
    for package in ("ingest", "detectors", "gatewatch"):
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                    bases = [ast.unparse(base) for base in node.bases]
                    if any(base.endswith(("Error", "Exception")) for base in bases):
                        found.append((module, node.name))
    return found


def test_every_exception_of_ours_is_in_the_tree_and_ends_in_error() -> None:
    classes = _exception_classes()
    assert ("ingest.sinks.search_clients", "StoreRefusedError") in classes  # the scan sees them
    outside = []
    for module, name in classes:
        if (module, name) in PRIVATE or (module, name) in KNOWN:
            continue
        cls = getattr(importlib.import_module(module), name)
        if not (issubclass(cls, GatewatchError) and name.endswith("Error")):
            outside.append(f"{module}.{name}")
    assert not outside, f"exceptions outside the GatewatchError tree (or not named *Error): {outside}"


def test_the_drawn_tree_names_every_class() -> None:
    drawing = ingest.errors.__doc__ or ""
    names = {name for module, name in _exception_classes() if (module, name) not in PRIVATE}
    tree_classes = [
        name for name, value in vars(ingest.errors).items() if isinstance(value, type) and issubclass(value, Exception)
    ]
    missing = [name for name in {*tree_classes, "StoreRefusedError", "StoreUnreachableError"} if name not in drawing]
    assert not missing, f"draw these in ingest/errors.py's docstring: {missing}"
    assert set(tree_classes) <= names | {"GatewatchError"}


def test_the_classes_gatewatch_errors_re_exports_are_the_leaf_s() -> None:
    import gatewatch.errors

    for name in gatewatch.errors.__all__:
        assert getattr(gatewatch.errors, name) is getattr(ingest.errors, name)
