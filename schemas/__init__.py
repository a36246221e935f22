"""JSON Schemas of the documents gatewatch stores, and the index templates generated from them.

``<name>.schema.json`` (draft 2020-12) describes one document exactly as the
code builds it — ``event``, ``transaction``, ``dead_letter`` (ingest/ecs.py)
and ``alert`` (detectors/alerts.py); a test validates built documents against
them. :mod:`schemas.templates` turns them into Elasticsearch / OpenSearch
index templates, also shipped as ``index_templates/*.json``.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

DOCUMENT_SCHEMAS = ("event", "transaction", "alert", "dead_letter")


@cache
def _load(name: str) -> str:
    resource = resources.files(__name__).joinpath(f"{name}.schema.json")
    try:
        return resource.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyError(f"no schema {name!r} in schemas/ (documents: {', '.join(DOCUMENT_SCHEMAS)})") from None


def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema ``schemas/<name>.schema.json`` as a fresh dict (callers may change it)."""
    schema: dict[str, Any] = json.loads(_load(name))
    return schema
