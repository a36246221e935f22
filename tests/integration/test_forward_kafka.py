"""The Kafka forwarder against a real broker: every event on the topic once, keyed by alert id, in order."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer

from gatewatch.config import parse_config
from gatewatch.forward import build_forwarders
from tests.gatewatch.forward.test_syslog_rsyslog import hostile_events

pytestmark = pytest.mark.integration


def test_events_reach_the_topic_keyed_by_alert_id(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = f"gw-forward-{uuid.uuid4().hex[:8]}"
    config = parse_config({
        "kafka": {"bootstrap_servers": [kafka_bootstrap]},
        "forward": [{"name": "copy", "type": "kafka", "topic": topic, "dead_letters": str(tmp_path / "dl.ndjson")}],
    })  # fmt: skip
    forwarders = build_forwarders(config)
    assert forwarders is not None
    events = hostile_events()
    forwarders.submit(events)
    forwarders.close()
    assert forwarders.counts() == {"copy": {"sent": 3}}

    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=None,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)  # fmt: skip
    try:
        messages = list(consumer)
    finally:
        consumer.close()
    got = sorted(((m.key.decode(), orjson.loads(m.value)) for m in messages), key=lambda kv: kv[1]["lifecycle"]["at"])
    assert got == [(event.alert.id, event.to_document()) for event in events]
    assert not (tmp_path / "dl.ndjson").exists()
