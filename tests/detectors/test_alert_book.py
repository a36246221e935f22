"""Alert folding: one alert per (rule, entity) per suppression window, deterministic ids."""

from __future__ import annotations

from detectors.alerts import AlertBook
from detectors.base import Finding, Severity


def finding(ts: float, entity: str = "10.9.9.9", request_id: str = "r", severity: Severity = Severity.HIGH) -> Finding:
    return Finding("gateway_bypass", severity, "source.ip", entity, ts, "served directly", (request_id,))


def test_repeats_inside_the_window_grow_one_alert() -> None:
    book = AlertBook(suppression_window_secs=600, max_request_ids=3)
    first = book.add(finding(1000.0, request_id="r1"))
    grown = book.add(finding(1200.0, request_id="r2"))
    assert grown.id == first.id
    assert (grown.count, grown.first_seen, grown.last_seen) == (2, 1000.0, 1200.0)
    assert grown.request_ids == ("r1", "r2")


def test_a_finding_after_the_window_opens_a_new_alert() -> None:
    book = AlertBook(suppression_window_secs=600)
    first = book.add(finding(1000.0))
    second = book.add(finding(1600.0))
    assert second.id != first.id and second.count == 1


def test_entities_are_separate_and_evidence_is_capped() -> None:
    book = AlertBook(max_request_ids=2)
    for i in range(5):
        alert = book.add(finding(1000.0 + i, request_id=f"r{i}"))
    other = book.add(finding(1000.0, entity="10.9.9.8"))
    assert alert.request_ids == ("r0", "r1") and alert.count == 5
    assert other.id != alert.id


def test_ids_are_deterministic_and_severity_only_rises() -> None:
    a = AlertBook().add(finding(1000.0))
    b = AlertBook().add(finding(1000.0))
    assert a.id == b.id
    book = AlertBook()
    book.add(finding(1000.0, severity=Severity.HIGH))
    assert book.add(finding(1001.0, severity=Severity.CRITICAL)).severity is Severity.CRITICAL
    assert book.add(finding(1002.0, severity=Severity.LOW)).severity is Severity.CRITICAL


def test_expire_forgets_closed_windows() -> None:
    book = AlertBook(suppression_window_secs=600)
    book.add(finding(1000.0))
    book.expire(1500.0)
    assert len(list(book)) == 1
    book.expire(1601.0)
    assert list(book) == []


def test_document_shape() -> None:
    doc = AlertBook().add(finding(1_767_225_600.5)).to_document()
    assert doc["entity"] == {"type": "source.ip", "value": "10.9.9.9"}
    assert doc["first_seen"] == "2026-01-01T00:00:00.500Z"
    assert doc["rule"] == "gateway_bypass" and doc["severity"] == "high" and doc["count"] == 1
