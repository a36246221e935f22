"""Index templates generated from the document schemas, and the shipped copies of them."""

from __future__ import annotations

from typing import Any

import pytest

from schemas import load_schema
from schemas.templates import (
    FLAVORS,
    INDEX_KINDS,
    index_mappings,
    index_template,
    template_file,
    template_text,
)


def field(mappings: dict[str, Any], dotted: str) -> dict[str, Any]:
    node: dict[str, Any] = mappings
    for part in dotted.split("."):
        node = node["properties"][part]
    return node


@pytest.mark.parametrize("kind", INDEX_KINDS)
@pytest.mark.parametrize("flavor", FLAVORS)
def test_shipped_template_file_matches_the_generator(kind: str, flavor: str) -> None:
    path = template_file(kind, flavor)
    assert path.is_file(), f"{path} is missing: run python -m schemas.templates"
    assert path.read_text(encoding="utf-8") == template_text(kind, flavor), (
        f"{path.name} drifted from schemas/templates.py: run python -m schemas.templates"
    )


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_template_shape(kind: str) -> None:
    body = index_template(kind, "acme-gw")
    assert body["index_patterns"] == [f"acme-gw-{kind}-*"]
    settings = body["template"]["settings"]["index"]
    assert settings["number_of_shards"] == 1
    assert settings["number_of_replicas"] == 0
    assert settings["refresh_interval"]
    assert body["template"]["mappings"]["dynamic"] is False


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_every_schema_property_is_mapped(kind: str) -> None:
    mappings = index_template(kind, "gatewatch")["template"]["mappings"]
    for key in load_schema(INDEX_KINDS[kind])["properties"]:
        assert "type" in field(mappings, key) or "properties" in field(mappings, key), key


def test_event_field_types() -> None:
    mappings = index_template("events", "gatewatch")["template"]["mappings"]
    assert field(mappings, "@timestamp") == {"type": "date"}
    assert field(mappings, "gatewatch.token.exp") == {"type": "date"}
    assert field(mappings, "http.response.status_code") == {"type": "long"}
    assert field(mappings, "event.duration") == {"type": "long"}
    assert field(mappings, "gatewatch.duration_ms") == {"type": "double"}
    assert field(mappings, "source.ip") == {"type": "ip", "ignore_malformed": True}
    assert field(mappings, "event.id") == {"type": "keyword", "ignore_above": 1024}
    assert field(mappings, "url.path") == {"type": "keyword", "ignore_above": 8191}
    assert field(mappings, "gatewatch.envoy.response_flags") == {"type": "keyword", "ignore_above": 1024}
    assert field(mappings, "message") == {
        "type": "text",
        "fields": {"keyword": {"type": "keyword", "ignore_above": 1024}},
    }
    assert field(mappings, "labels") == {"type": "flattened"}
    # dotted keys share their parent objects
    assert set(mappings["properties"]["http"]["properties"]) == {"request", "response", "version"}


def test_flavor_picks_the_flattened_type() -> None:
    es = index_template("alerts", "gatewatch", "elasticsearch")["template"]["mappings"]
    opensearch = index_template("alerts", "gatewatch", "opensearch")["template"]["mappings"]
    assert field(es, "details") == {"type": "flattened"}
    assert field(opensearch, "details") == {"type": "flat_object"}
    # A long entity or request id is still found by a term query and a Kibana bucket (1024 left them unindexed).
    assert field(es, "entity.value") == {"type": "keyword", "ignore_above": 8191}
    assert field(es, "count") == {"type": "long"}
    assert field(es, "request_ids") == {"type": "keyword", "ignore_above": 8191}


def test_dead_letter_line_is_text_only() -> None:
    mappings = index_template("deadletter", "gatewatch")["template"]["mappings"]
    assert field(mappings, "line") == {"type": "text"}
    assert field(mappings, "offset") == {"type": "long"}


@pytest.mark.parametrize(
    ("properties", "problem"),
    [
        ({"a": {"type": "string"}, "a.b": {"type": "string"}}, "both a field and an object"),
        ({"a.b": {"type": "string"}, "a": {"type": "object", "properties": {"b": {"type": "string"}}}}, "mapped twice"),
        ({"x": {"type": "string", "x-es-type": "geo_shape"}}, "unknown x-es-type"),
        ({"x": {"type": "object"}}, "no mapping for JSON type 'object'"),
        ({"x": {"type": "string", "x-es-ignore-above": 40000}}, "x-es-ignore-above"),
    ],
)
def test_generator_refuses_what_it_cannot_map(properties: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        index_mappings({"properties": properties}, "elasticsearch")


def test_unknown_kind_or_flavor() -> None:
    with pytest.raises(ValueError, match="unknown index kind"):
        index_template("logs", "gatewatch")
    with pytest.raises(ValueError, match="unknown flavor"):
        index_template("events", "gatewatch", "solr")
