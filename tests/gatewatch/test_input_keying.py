"""Item 1's accounting: input records whose Kafka key is not their request id, and the case /readyz reports."""

from __future__ import annotations

from gatewatch.metrics import ServeMetrics
from gatewatch.serve_ingest import _keyed_by_request_id
from ingest.records import Dataset, Event, Origin


def _event(offset: int, request_id: str | None) -> Event:
    origin = Origin(Dataset.GATEWAY, "gw/0", offset)
    return Event(f"e{offset}", Dataset.GATEWAY, 1.0, origin, request_id=request_id)


def _unkeyed(metrics: ServeMetrics, topic: str) -> float:
    value = metrics.registry.get_sample_value("gatewatch_input_unkeyed_records_total", {"topic": topic})
    return 0.0 if value is None else value


def test_only_a_key_equal_to_the_request_id_counts_as_keyed() -> None:
    events = [_event(10, "rid-a"), _event(11, "rid-b"), _event(12, "rid-c"), _event(13, None)]
    keys = {10: b"rid-a", 11: b"some-other-key", 13: b"rid-d"}  # 12 had no key
    assert _keyed_by_request_id(keys, events) == 1
    assert _keyed_by_request_id({}, events) == 0
    assert _keyed_by_request_id(keys, None) == 0


def test_each_topic_is_keyed_not_keyed_or_mixed() -> None:
    metrics = ServeMetrics()
    assert metrics.input_keying() == {}
    metrics.record_keying("gateway", 100, 100)
    metrics.record_keying("app", 50, 0)
    metrics.record_keying("app", 20, 0)
    assert metrics.input_keying() == {"gateway": "keyed_by_request_id", "app": "not_keyed"}
    assert (_unkeyed(metrics, "gateway"), _unkeyed(metrics, "app")) == (0.0, 70.0)
    metrics.record_keying("gateway", 10, 7)  # e.g. a bad line without a key among keyed ones
    assert metrics.input_keying()["gateway"] == "mixed"
    assert _unkeyed(metrics, "gateway") == 3.0
