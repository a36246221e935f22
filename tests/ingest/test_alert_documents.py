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


@pytest.mark.parametrize("epoch", ["", "1234-7"])
def test_an_event_document_reads_back_into_the_same_event(epoch: str) -> None:
    # A forwarder's dead letter holds the document: `gatewatch resend` sends the event it was made from.
    original = alert_event()
    alert = Alert(**{**{f: getattr(original.alert, f) for f in ("id", "rule", "severity", "entity_type",
                                                                 "entity_value", "count", "request_ids", "summary")},
                     "first_seen": T0 + 0.0004, "last_seen": T0 + 7.9996, "reason": "untrusted_peer",
                     "details": {"peer_ip": "10.9.9.9", "n": [1, {"x": None}]}})  # fmt: skip
    event = AlertEvent(alert, AlertState.UPDATED, 3, T0 + 8.123, epoch)
    document = orjson.loads(orjson.dumps(event.to_document()))
    again = AlertEvent.from_document(document)
    assert again.to_document() == document
    assert (again.id, again.state, again.sequence, again.epoch) == (event.id, "updated", 3, epoch)
    assert (again.alert.first_seen, again.alert.last_seen, again.at) == (T0, T0 + 8.0, T0 + 8.123)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda d: d.pop("entity"), "no 'entity' field"),
        (lambda d: d.update(extra=1), "field 'extra'"),
        (lambda d: d["lifecycle"].update(event_id="other-1"), "lifecycle.event_id 'other-1'"),
        (lambda d: d["lifecycle"].update(event_id="a1x-1"), "lifecycle.event_id 'a1x-1'"),
        (lambda d: d.update(first_seen="2026-03-02T09:00:00"), "has no time zone offset"),
        (lambda d: d.update(request_ids=5), "'request_ids' should be list, not int"),
        (lambda d: d.update(request_ids=[1]), "'request_ids' should hold text only"),
        (lambda d: d.update(count="2"), "'count' should be int, not str"),
        (lambda d: d.update(count=True), "'count' should be int, not bool"),
        (lambda d: d.update(entity=[]), "'entity' should be dict, not list"),
        (lambda d: d.update(details=["n"]), "'details' should be dict, not list"),
        (lambda d: d["lifecycle"].update(state="gone"), "'gone' is not a valid AlertState"),
    ],
)
def test_a_document_gatewatch_would_not_have_written_is_refused(change, says: str) -> None:  # type: ignore[no-untyped-def]
    document = orjson.loads(orjson.dumps(alert_event().to_document()))
    change(document)
    with pytest.raises(ValueError, match=says):
        AlertEvent.from_document(document)
