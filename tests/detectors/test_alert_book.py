"""Alert folding: one alert per (rule, entity) per day-aligned window, the same in any order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.alerts import AlertBook, check_suppression_window
from detectors.base import Finding, Severity

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a window boundary


def finding(
    ts: float,
    entity: str = "10.9.9.9",
    request_id: str = "r",
    severity: Severity = Severity.HIGH,
    key: str | None = None,
    summary: str = "served directly",
) -> Finding:
    return Finding("gateway_bypass", severity, "source.ip", entity, ts, summary, (request_id,), key=key)


def test_repeats_inside_the_window_grow_one_alert() -> None:
    book = AlertBook(suppression_window_secs=600, max_request_ids=3)
    first = book.add(finding(T0 + 100, request_id="r1"))
    grown = book.add(finding(T0 + 300, request_id="r2"))
    assert grown.id == first.id
    assert (grown.count, grown.first_seen, grown.last_seen) == (2, T0 + 100, T0 + 300)
    assert grown.request_ids == ("r1", "r2")


def test_windows_are_aligned_to_the_day_not_to_the_first_finding() -> None:
    book = AlertBook(suppression_window_secs=600)
    first = book.add(finding(T0 + 590))
    second = book.add(finding(T0 + 610))  # 20 s later, but in the next window
    assert second.id != first.id and second.count == 1


def test_an_earlier_finding_arriving_later_becomes_the_alerts_first() -> None:
    book = AlertBook(suppression_window_secs=600)
    book.add(finding(T0 + 300, request_id="r2", summary="second"))
    alert = book.add(finding(T0 + 100, request_id="r1", summary="first", severity=Severity.CRITICAL))
    assert (alert.first_seen, alert.last_seen, alert.summary) == (T0 + 100, T0 + 300, "first")
    assert alert.request_ids == ("r1", "r2") and alert.severity is Severity.CRITICAL


def test_findings_sharing_a_key_count_once() -> None:
    book = AlertBook()
    for ts in (T0 + 1, T0 + 2, T0 + 3):
        alert = book.add(finding(ts, request_id="r1", key="r1"))
    alert = book.add(finding(T0 + 4, request_id="r2", key="r2"))
    assert alert.count == 2 and alert.request_ids == ("r1", "r2")


def test_entities_are_separate_and_evidence_keeps_the_earliest() -> None:
    book = AlertBook(max_request_ids=2)
    for i in (4, 3, 2, 1, 0):
        alert = book.add(finding(T0 + i, request_id=f"r{i}"))
    other = book.add(finding(T0, entity="10.9.9.8"))
    assert alert.request_ids == ("r0", "r1") and alert.count == 5
    assert other.id != alert.id


def test_ids_are_deterministic_and_severity_only_rises() -> None:
    assert AlertBook().add(finding(T0)).id == AlertBook().add(finding(T0 + 5)).id
    book = AlertBook()
    book.add(finding(T0, severity=Severity.HIGH))
    assert book.add(finding(T0 + 1, severity=Severity.CRITICAL)).severity is Severity.CRITICAL
    assert book.add(finding(T0 + 2, severity=Severity.LOW)).severity is Severity.CRITICAL


def test_expire_keeps_a_window_for_a_grace_period_then_forgets_it() -> None:
    book = AlertBook(suppression_window_secs=600)
    book.add(finding(T0 + 10))
    book.expire(T0 + 1199)  # the window ended at T0+600; grace is one window
    assert len(list(book)) == 1
    book.expire(T0 + 1201)
    assert list(book) == []


def test_a_finding_for_a_forgotten_window_never_overwrites_its_alert() -> None:
    book = AlertBook(suppression_window_secs=600)
    stored = book.add(finding(T0 + 10, request_id="r1"))
    book.add(finding(T0 + 20, request_id="r2"))
    book.expire(T0 + 2000)
    late = book.add(finding(T0 + 30, request_id="r3", key="r3"))
    assert late.id != stored.id and late.count == 1
    # A backlog sent again: its late findings fold into that one late alert, not an alert each.
    again = book.add(finding(T0 + 40, request_id="r4", key="r4"))
    assert again.id == late.id and again.count == 2
    assert book.add(finding(T0 + 40, request_id="r4", key="r4")).count == 2  # the same record, once
    assert AlertBook(suppression_window_secs=600).add(finding(T0 + 30)).id == stored.id  # ids stay deterministic
    next_window = book.add(finding(T0 + 630, request_id="r5"))
    assert next_window.id not in (late.id, stored.id)


def test_late_alerts_survive_a_checkpoint() -> None:
    from ingest.codec import decode_state, encode_state

    book = AlertBook(suppression_window_secs=600)
    book.add(finding(T0 + 10, request_id="r1"))
    book.expire(T0 + 2000)
    late = book.add(finding(T0 + 30, request_id="r3", key="r3"))
    restored = AlertBook(600)
    restored.restore_state(decode_state(encode_state(book.state()), AlertBook.State))
    assert restored.add(finding(T0 + 40, request_id="r4", key="r4")) == book.add(finding(T0 + 40, request_id="r4",
                                                                                          key="r4"))  # fmt: skip
    assert restored.add(finding(T0 + 50, key="r5")).id == late.id


def test_a_rule_reporting_on_a_long_past_window_gets_that_windows_alert() -> None:
    """behaviour_outlier reports a window once it closed: its findings lag the watermark."""
    book = AlertBook(suppression_window_secs=600)
    book.expire(T0 + 5000)
    alert = book.add(finding(T0 + 10))
    assert alert.id == AlertBook().add(finding(T0 + 10)).id
    assert book.add(finding(T0 + 20)).count == 2  # open until the next expire
    book.expire(T0 + 5001)
    assert book.add(finding(T0 + 30)).id != alert.id


def test_window_must_divide_the_day() -> None:
    assert check_suppression_window(3600) == 3600
    for bad in (7 * 60, 0.5, 100_000):
        with pytest.raises(ValueError, match="divides a day"):
            check_suppression_window(bad)


def test_document_shape() -> None:
    doc = AlertBook().add(finding(T0 + 0.5)).to_document()
    assert doc["entity"] == {"type": "source.ip", "value": "10.9.9.9"}
    assert doc["first_seen"] == "2026-01-01T00:00:00.500Z"
    assert doc["rule"] == "gateway_bypass" and doc["severity"] == "high" and doc["count"] == 1


findings_strategy = st.lists(
    st.builds(
        finding,
        ts=st.integers(0, 1800).map(lambda s: T0 + s),
        entity=st.sampled_from(["10.9.9.8", "10.9.9.9"]),
        request_id=st.sampled_from([f"r{i}" for i in range(8)]),
        severity=st.sampled_from(list(Severity)),
        key=st.sampled_from([None, "k1", "k2", "k3"]),
        summary=st.sampled_from(["a", "b"]),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(findings_strategy, st.randoms(use_true_random=False))
def test_the_same_findings_in_any_order_give_the_same_alerts(findings: list[Finding], rng) -> None:
    def fold(ordered: list[Finding]) -> dict[str, object]:
        book = AlertBook(suppression_window_secs=600, max_request_ids=3)
        return {alert.id: alert for alert in (book.add(f) for f in ordered)}

    shuffled = list(findings)
    rng.shuffle(shuffled)
    assert fold(shuffled) == fold(findings)
