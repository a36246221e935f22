"""Imports run one way: gatewatch -> detectors -> the leaf modules, and ingest -> nothing of ours above it.

``python -m pytest tests/test_layering.py`` names every backwards import with
its file and line. The rules (STYLE.md, issue 13):

- ``ingest/`` imports neither ``gatewatch`` nor ``detectors``;
- ``detectors/`` imports itself and the leaf modules only;
- a leaf module imports other leaf modules only, so anything may import it;
- ``schemas/`` (documents and index templates, which ``ingest`` reads) imports only itself.

Imports are read from the source (``ast``), including those inside functions
and under ``if TYPE_CHECKING:``: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("gatewatch", "ingest", "detectors", "schemas", "dashboards")

LEAF = frozenset({
    "ingest.records",  # raw records, events, transactions, dead letters
    "ingest.alerts",  # alerts and their lifecycle events, as values
    "ingest.errors",  # the exception tree (gatewatch.errors re-exports it)
    "ingest.codec",  # events <-> MessagePack tables
    "ingest.ecs",  # ECS documents and timestamps
    "ingest.escape",  # control characters made visible
    "ingest.addresses",  # client addresses: ports, X-Forwarded-For
    "ingest.routes",  # a request's route as the rules, the documents and the hunt queries key it
})  # fmt: skip

# Backwards imports in files this change could not edit (issue 14 reshapes them at the same time).
# Each entry is (importing module, imported module): the reason, and what removes it.
KNOWN: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in ``path`` (the module ``module``).

    ``from a import b`` names ``a.b`` when that is a module, else ``a``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield node.lineno, candidate if _is_module(candidate) else base


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def _allowed(importer: str, imported: str) -> bool:
    if _top(imported) not in OURS or imported == importer:
        return True
    if importer in LEAF:
        return imported in LEAF
    if _top(importer) == "ingest":
        return _top(imported) not in ("gatewatch", "detectors")
    if _top(importer) == "detectors":
        return _top(imported) == "detectors" or imported in LEAF
    if _top(importer) == "schemas":
        return _top(imported) == "schemas"
    return True  # gatewatch wires everything; schemas and dashboards are data


def _pairs(root: Path = ROOT) -> Iterator[tuple[str, int, str, str]]:
    for package in ("ingest", "detectors", "schemas"):
        for path in sorted((root / package).rglob("*.py")):
            importer = _module_name(path)
            for line, imported in _imports(path, importer):
                yield str(path.relative_to(root)), line, importer, imported


def backwards_imports() -> list[str]:
    """Every import that runs against the layering, as ``file:line: importer imports imported``."""
    return [
        f"{path}:{line}: {importer} imports {imported}"
        for path, line, importer, imported in _pairs()
        if not _allowed(importer, imported) and (importer, imported) not in KNOWN
    ]


def test_no_backwards_import() -> None:
    found = backwards_imports()
    assert not found, "backwards imports (see tests/test_layering.py for the rules):\n" + "\n".join(found)


def test_the_leaf_modules_exist() -> None:
    # A renamed leaf module would silently make the rules above stricter or looser.
    assert all(_is_module(name) for name in LEAF)


def test_known_exceptions_are_still_needed() -> None:
    pairs = {(importer, imported) for _, _, importer, imported in _pairs()}
    stale = [pair for pair in KNOWN if pair not in pairs]
    assert not stale, f"these known exceptions no longer occur, remove them from KNOWN: {stale}"


@pytest.mark.parametrize(
    ("importer", "source", "expected"),
    [
        ("ingest.sinks.duckdb", "from gatewatch.errors import StoreError", "gatewatch.errors"),
        ("ingest.records", "from ingest.sinks import base", "ingest.sinks.base"),
        ("ingest.sources.files", "import detectors.alerts", "detectors.alerts"),
        ("detectors.gateway_bypass", "import gatewatch.topology", "gatewatch.topology"),
        ("detectors.gateway_bypass", "from ingest.normalize import parse_timestamp", "ingest.normalize"),
        ("detectors.gateway_bypass", "def f() -> None:\n    from ..gatewatch import config", "gatewatch.config"),
        ("schemas.templates", "from ingest.records import Event", "ingest.records"),
    ],
)
def test_a_backwards_import_is_named(tmp_path: Path, importer: str, source: str, expected: str) -> None:
    path = tmp_path / "module.py"
    path.write_text(source + "\n")
    found = [imported for _, imported in _imports(path, importer) if not _allowed(importer, imported)]
    assert found == [expected]


@pytest.mark.parametrize(
    ("importer", "source"),
    [
        ("ingest.sinks.duckdb", "from ingest.errors import StoreError"),
        ("ingest.sinks.duckdb", "from . import base"),
        ("detectors.gateway_bypass", "from ingest.records import Event\nfrom detectors.base import Detector"),
        ("gatewatch.topology", "from detectors.alerts import AlertBook\nimport ingest.order"),
        ("ingest.records", "import hashlib\nfrom pydantic import BaseModel"),
    ],
)
def test_a_forward_import_passes(tmp_path: Path, importer: str, source: str) -> None:
    path = tmp_path / "module.py"
    path.write_text(source + "\n")
    assert all(_allowed(importer, imported) for _, imported in _imports(path, importer))
