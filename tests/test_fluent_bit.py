"""Fluent Bit's shipping config agrees with gatewatch: both topics keyed by the request id
gatewatch parses, and a shipped record unwraps to the line that was logged."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from gatewatch.demo.render import DEMO_TEXT_FORMAT, ENVOY_DEFAULT_FORMAT, JWT_JTI, render_json, render_text
from ingest.parsers import build_app_parser, build_gateway_parser
from ingest.parsers.app_json import DEFAULT_APP_FIELDS
from ingest.records import Event
from tests.test_deploy import DEPLOY, FLUENT_BIT_CONFIG, REQUEST_ID_OPERATOR, _deploy_config, _services

FLUENT_BIT_PARSERS = DEPLOY / "fluent-bit-parsers.conf"


def _fluent_bit_sections(path: Path) -> list[tuple[str, dict[str, list[str]]]]:
    """Fluent Bit's classic format: ``[SECTION]`` then ``Key value`` lines (keys case-insensitive, may repeat)."""
    sections: list[tuple[str, dict[str, list[str]]]] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        header = re.fullmatch(r"\[(\w+)\]", line)
        if header:
            sections.append((header.group(1).upper(), {}))
            continue
        assert sections, f"{path.name}: {line!r} is outside any section"
        key, _, value = line.partition(" ")
        sections[-1][1].setdefault(key.lower(), []).append(value.strip())
    return sections


def _fluent_bit_outputs() -> dict[str, dict[str, list[str]]]:
    """Kafka outputs by topic."""
    outputs = {}
    for name, keys in _fluent_bit_sections(FLUENT_BIT_CONFIG):
        if name == "OUTPUT" and keys["name"] == ["kafka"]:
            outputs[keys["topics"][0]] = keys
    return outputs


def _request_id_key(json_format: dict[str, Any]) -> str:
    """The top-level key of the gateway's json_format that holds the request id."""
    keys = [key for key, value in json_format.items() if value == REQUEST_ID_OPERATOR]
    assert len(keys) == 1, f"gateway.json_format needs one top-level key of {REQUEST_ID_OPERATOR}: {keys}"
    return keys[0]


def test_fluent_bit_keys_both_topics_by_the_request_id_field() -> None:
    config = _deploy_config()
    outputs = _fluent_bit_outputs()
    topics = config.kafka.topics
    assert set(outputs) == {topics.gateway, topics.app}
    gateway_key = _request_id_key(config.gateway.json_format)
    app_key = config.app.fields.get("request_id", DEFAULT_APP_FIELDS["request_id"])
    assert "." not in app_key, "message_key_field takes a top-level key: the app's request id must be one"
    assert outputs[topics.gateway]["message_key_field"] == [gateway_key]
    assert outputs[topics.app]["message_key_field"] == [app_key]
    # The same key only lands on the same partition number with the same partitioner.
    assert outputs[topics.gateway]["rdkafka.partitioner"] == outputs[topics.app]["rdkafka.partitioner"]
    kafka_env = _services()["kafka"]["environment"]
    host_listener = next(
        item.split("://")[1] for item in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",") if "localhost" in item
    )
    for output in outputs.values():
        assert output["format"] == ["json"]
        assert output["brokers"] == [host_listener]
        assert output.get("rdkafka.compression.codec", ["none"])[0] in {"none", "gzip", "snappy", "lz4", "zstd"}
    # The line itself survives in the key gatewatch unwraps.
    sections = _fluent_bit_sections(FLUENT_BIT_CONFIG)
    allow = [keys for name, keys in sections if name == "FILTER" and keys["name"] == ["record_modifier"]]
    for keys in allow:
        assert {config.kafka.unwrap.gateway, gateway_key, app_key} <= set(keys["allowlist_key"])
    for name, keys in sections:
        if name == "FILTER" and keys["name"] == ["parser"]:
            assert keys["key_name"] == [config.kafka.unwrap.gateway] and keys["preserve_key"] == ["On"]


def _parsers() -> dict[str, dict[str, list[str]]]:
    return {keys["name"][0]: keys for name, keys in _fluent_bit_sections(FLUENT_BIT_PARSERS) if name == "PARSER"}


def test_fluent_bit_parsers_named_in_the_config_exist() -> None:
    parsers = _parsers()
    service = next(keys for name, keys in _fluent_bit_sections(FLUENT_BIT_CONFIG) if name == "SERVICE")
    assert Path(service["parsers_file"][0]).name == FLUENT_BIT_PARSERS.name
    for name, keys in _fluent_bit_sections(FLUENT_BIT_CONFIG):
        if name == "FILTER" and keys["name"] == ["parser"]:
            assert keys["parser"][0] in parsers


@pytest.mark.parametrize("fmt", [ENVOY_DEFAULT_FORMAT, DEMO_TEXT_FORMAT], ids=["envoy_default", "ambassador_text"])
def test_fluent_bit_text_parser_finds_the_request_id(fmt: str) -> None:
    pattern = re.compile(_parsers()["envoy_text"]["regex"][0].replace("(?<", "(?P<"))
    rid = "5d1e5b1a-1111-4c7a-9a35-0e6cbd3f0a01"
    record = {
        "START_TIME": "2026-03-02T09:00:00.000Z", "REQ(:METHOD)": "POST",
        "REQ(X-ENVOY-ORIGINAL-PATH?:PATH)": "/v1/charges", "PROTOCOL": "HTTP/1.1", "RESPONSE_CODE": 201,
        "REQ(X-FORWARDED-FOR)": "203.0.113.7",
        "REQ(USER-AGENT)": "billing-sdk-go/1.14.0 (linux; amd64)", "REQ(X-REQUEST-ID)": rid,
    }  # fmt: skip
    line = render_text(record, fmt).rstrip("\n")
    match = pattern.match(line)
    assert match is not None, line
    assert match.group("request_id") == rid


# kafka-python 3.0.12 warns on import under Python 3.11 (importlib.resources.read_text/open_text).

def test_a_shipped_record_is_keyed_by_the_request_id_gatewatch_parses() -> None:
    """Ship one gateway and one app line as Fluent Bit would, then read them with gatewatch's source and parsers."""
    from ingest.records import Dataset, Origin, RawRecord
    from ingest.sources.kafka import unwrap

    config = _deploy_config()
    outputs = _fluent_bit_outputs()
    topics = config.kafka.topics
    rid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    gateway_line = render_json(
        {
            "START_TIME": "2026-03-02T09:00:00.000Z", "REQ(:METHOD)": "GET",
            "REQ(X-ENVOY-ORIGINAL-PATH?:PATH)": "/v1/invoices/7", "PROTOCOL": "HTTP/1.1", "RESPONSE_CODE": 200,
            "REQ(X-REQUEST-ID)": rid, "ROUTE_NAME": "invoices",
            "DOWNSTREAM_REMOTE_ADDRESS": "203.0.113.7:51000", JWT_JTI: "jti-7",
        },  # fmt: skip
        config.gateway.json_format,
    ).decode()
    app_line = json.dumps({"ts": "2026-03-02T09:00:00.004Z", "level": "info", "msg": "invoice fetched",
                           "request_id": rid, "method": "GET", "path": "/v1/invoices/7", "status": 200})  # fmt: skip
    parsers = {
        topics.gateway: build_gateway_parser(config.gateway.format, config.gateway.json_format),
        topics.app: build_app_parser(config.app.fields),
    }
    unwrap_keys = {topics.gateway: config.kafka.unwrap.gateway, topics.app: config.kafka.unwrap.app}
    for offset, (topic, line) in enumerate(((topics.gateway, gateway_line), (topics.app, app_line))):
        # Fluent Bit: the parser filter lifts the line's fields next to "log" (Preserve_Key On),
        # record_modifier keeps the allowed keys, the kafka output keys by message_key_field.
        key_field = outputs[topic]["message_key_field"][0]
        record = {"log": line, **json.loads(line)}
        shipped = {k: v for k, v in record.items() if k in {"log", key_field}}
        shipped["@timestamp"] = 1772442000.0  # the output's default Timestamp_Key
        key = shipped[key_field]
        assert key == rid
        unwrapped = unwrap(json.dumps(shipped).encode(), unwrap_keys[topic])
        assert unwrapped == line.encode()
        raw = RawRecord(Origin(Dataset.GATEWAY if topic == topics.gateway else Dataset.APP, f"{topic}/0", offset),
                        unwrapped)  # fmt: skip
        event = parsers[topic](raw)
        assert isinstance(event, Event), event
        assert event.request_id == key


def test_fluent_bit_ships_the_gateway_access_lines_only() -> None:
    # A shipper trial: the gateway container also logs Emissary's own lines, each a dead letter, which would keep
    # the GatewatchDeadLetters alert firing.
    config = _deploy_config()
    (grep,) = [keys for name, keys in _fluent_bit_sections(FLUENT_BIT_CONFIG) if name == "FILTER"
               and keys["name"] == ["grep"]]  # fmt: skip
    assert grep["match"] == ["gateway"]
    key, regex = grep["regex"][0].split(None, 1)
    assert key == config.kafka.unwrap.gateway
    access = render_json({"START_TIME": "2026-03-02T09:00:00.000Z", "RESPONSE_CODE": 200}, config.gateway.json_format)
    assert re.search(regex, access.decode())
    emissary_own = [
        'time="2026-03-02 09:00:00" level=info msg="Started Ambassador" func=main.Main',
        "2026-03-02 09:00:01 diagd 3.9.1 [P15TAEW] INFO: Ambassador 3.9.1 booted",
        "[2026-03-02 09:00:02.123][17][info][upstream] cds: add 12 cluster(s), remove 0 cluster(s)",
    ]
    assert not any(re.search(regex, line) for line in emissary_own)
