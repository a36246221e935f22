"""An alert's document is built once and shared by every consumer of one delivery (issue 13).

In serve one alert event goes to the store, the Kafka alerts topic and each
forwarder; the count below is of documents built, through the one helper every
build calls (``iso``: three times for an alert, once more for its event).
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

import ingest.alerts
from gatewatch.forward.webhook import ecs_document, ocsf_finding
from ingest.alerts import Alert, AlertEvent, AlertState
from ingest.sinks.base import Batch
from ingest.sinks.ndjson import AlertEventFile, AlertFile

T0 = 1_772_442_000.0


def alert_event() -> AlertEvent:
    alert = Alert(
        id="a1", rule="gateway_bypass", severity="high", entity_type="source.ip", entity_value="10.9.9.9",
        first_seen=T0, last_seen=T0 + 5, count=2, request_ids=("r1", "r2"), summary="bypass", details={"n": 1},
    )  # fmt: skip
    return AlertEvent(alert=alert, state=AlertState.OPEN, sequence=1, at=T0 + 5)


def test_one_delivery_builds_each_document_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[float] = []
    real_iso = ingest.alerts.iso

    def counting_iso(ts: float) -> str:
        builds.append(ts)
        return real_iso(ts)

    monkeypatch.setattr(ingest.alerts, "iso", counting_iso)
    event = alert_event()
    batch = Batch(alerts={event.alert.id: event.alert}, alert_events=[event])

    alerts, events = AlertFile(tmp_path / "alerts.ndjson"), AlertEventFile(tmp_path / "events.ndjson")
    for sink in (alerts, events):  # the store
        sink.write(batch)
        sink.close()
    topic_value = orjson.dumps(event.to_document())  # the Kafka alerts topic, as serve_detect sends it
    ecs, ocsf = ecs_document(event), ocsf_finding(event)  # two forwarders
    forwarded = orjson.dumps(event.to_document())  # the Kafka forwarder

    assert len(builds) == 4  # first_seen, last_seen and @timestamp for the alert; the lifecycle's at
    assert ecs["gatewatch"]["alert"] is event.alert.to_document()  # type: ignore[index]
    assert ocsf["unmapped"]["gatewatch"]["alert"] is event.alert.to_document()  # type: ignore[index]
    assert event.to_document() is event.to_document()
    assert topic_value == forwarded == (tmp_path / "events.ndjson").read_bytes().rstrip(b"\n")
    assert orjson.loads((tmp_path / "alerts.ndjson").read_bytes()) == event.alert.to_document()


def test_the_shared_document_is_the_alert_as_built() -> None:
    event = alert_event()
    doc = event.to_document()
    assert doc["lifecycle"] == {"event_id": "a1-1", "state": "open", "sequence": 1, "at": "2026-03-02T09:00:05.000Z"}
    assert {k: v for k, v in doc.items() if k != "lifecycle"} == event.alert.to_document()
    assert "lifecycle" not in event.alert.to_document()  # the event's document does not write into the alert's
    assert event == alert_event() and repr(event) == repr(alert_event())  # the cache is no part of the value
