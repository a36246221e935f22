"""The serve metrics: Vector's names in the Prometheus text format, and counts that move."""

from __future__ import annotations

import re

from detectors.alerts import Alert
from detectors.base import Severity
from gatewatch.metrics import ServeMetrics
from gatewatch.topology import RunStats
from ingest.records import Dataset, DeadLetter, Origin
from ingest.sinks.base import Batch


def _value(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return None


def _alert(alert_id: str, rule: str, count: int = 1) -> Alert:
    return Alert(alert_id, rule, Severity.HIGH, "source.ip", "10.9.9.9", 10.0, 10.0, count, ("r-1",), "bypass")


def test_names_are_exposed_before_anything_happens() -> None:
    text = ServeMetrics().exposition().decode()
    for name in (
        "component_received_events_total",
        "component_received_bytes_total",
        "component_sent_events_total",
        "component_errors_total",
        "component_discarded_events_total",
        "gatewatch_dead_letters_total",
        "gatewatch_late_events_total",
        "gatewatch_alerts_total",
        "kafka_consumer_lag",
        "store_bulk_duration_seconds",
        "gatewatch_checkpoint_duration_seconds",
        "gatewatch_watermark_seconds",
        "gatewatch_checkpoint_timestamp_seconds",
    ):
        assert f"# TYPE {name.removesuffix('_total')} " in text or f"# TYPE {name} " in text, name
    # Discards start at an explicit 0 so that a dashboard can alert on any increase.
    assert _value(text, "component_discarded_events_total", intentional="false") == 0.0
    # So are store errors: a rule on their increase sees the first one.
    for error_type in ("unavailable", "rejected", "document_rejected"):
        assert _value(text, "component_errors_total", stage="store", error_type=error_type) == 0.0


def test_counts_move() -> None:
    metrics = ServeMetrics()
    metrics.record_received("gw-gateway", 3, 300)
    metrics.record_received("gw-gateway", 2, 200)
    dead = DeadLetter(Origin(Dataset.GATEWAY, "gw-gateway/0", 7), "format_mismatch", "no match", b"garbage")
    batch = Batch(dead_letters=[dead], alerts={"a1": _alert("a1", "gateway_bypass")})
    metrics.record_stored(batch)
    # A grown version of the same alert is sent again but counts as one alert.
    metrics.record_stored(Batch(alerts={"a1": _alert("a1", "gateway_bypass", count=2)}))
    metrics.record_alerts_forwarded(2)
    metrics.record_error("store", "unavailable")
    metrics.record_dead_letters({"format_mismatch": 3, "invalid_json": 1})
    metrics.record_pipeline_counts(RunStats(late_events=4))
    metrics.record_pipeline_counts(RunStats(late_events=1))
    metrics.consumer_lag.labels(topic="gw-gateway", partition="0").set(42)
    metrics.bulk_duration.observe(0.2)
    metrics.checkpoint_duration.observe(0.05)
    metrics.watermark.set(1772442000.0)

    text = metrics.exposition().decode()
    assert _value(text, "component_received_events_total", component="kafka", topic="gw-gateway") == 5
    assert _value(text, "component_received_bytes_total", topic="gw-gateway") == 500
    assert _value(text, "component_sent_events_total", component="store", kind="dead_letters") == 1
    assert _value(text, "component_sent_events_total", component="store", kind="alerts") == 2
    assert _value(text, "component_sent_events_total", component="kafka_alerts", kind="alerts") == 2
    assert _value(text, "gatewatch_alerts_total", rule="gateway_bypass") == 1
    assert _value(text, "component_errors_total", stage="store", error_type="unavailable") == 1
    assert _value(text, "gatewatch_dead_letters_total", reason="format_mismatch") == 3
    assert _value(text, "gatewatch_dead_letters_total", reason="invalid_json") == 1
    assert _value(text, "gatewatch_late_events_total") == 5
    assert _value(text, "kafka_consumer_lag", topic="gw-gateway", partition="0") == 42
    assert _value(text, "store_bulk_duration_seconds_count") == 1
    assert _value(text, "store_bulk_duration_seconds_bucket", le="0.25") == 1
    assert _value(text, "gatewatch_checkpoint_duration_seconds_sum") == 0.05
    assert _value(text, "gatewatch_watermark_seconds") == 1772442000.0


def test_the_series_a_dashboard_takes_increase_of_start_at_zero() -> None:
    """A series that appears with its first count is missed by increase(): the first dead letter, alert,
    dead-lettered event."""
    metrics = ServeMetrics()
    metrics.start_detection(["token_replay", "gateway_bypass"], ["siem"])
    text = metrics.exposition().decode()
    assert _value(text, "gatewatch_dead_letters_total", reason="format_mismatch") == 0
    assert _value(text, "gatewatch_dead_letters_total", reason="store_rejected") == 0
    assert _value(text, "gatewatch_alerts_total", rule="token_replay") == 0
    assert _value(text, "component_sent_events_total", component="forward_siem", kind="alert_events") == 0
    assert _value(text, "component_errors_total", stage="forward_siem", error_type="dead_letter_retries_exhausted") == 0


def test_registries_are_independent() -> None:
    first, second = ServeMetrics(), ServeMetrics()
    first.record_received("t", 1, 1)
    assert _value(second.exposition().decode(), "component_received_events_total", topic="t") is None


def test_backpressure_stays_1_while_any_stage_is_paused() -> None:
    # A fault trial: with both stages in one process, ingest resuming set the gauge to 0 while detect was
    # still paused for the store.
    metrics = ServeMetrics()

    def paused() -> float | None:
        return _value(metrics.exposition().decode(), "gatewatch_backpressure")

    metrics.set_backpressure("detect", True)
    metrics.set_backpressure("ingest", True)
    metrics.set_backpressure("ingest", False)
    assert paused() == 1.0
    metrics.set_backpressure("detect", False)
    assert paused() == 0.0
