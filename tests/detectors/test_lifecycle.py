"""The alert lifecycle: open -> throttled updates -> resolved, the same in any arrival order."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from detectors.alerts import AlertBook
from detectors.base import Finding, Severity
from detectors.lifecycle import AlertEvent, AlertLifecycle
from ingest.errors import WireError

T0 = 1_772_442_000.0  # 2026-03-02T09:00:00Z, on a 600 s window boundary


def finding(ts: float, request_id: str, entity: str = "10.9.9.9", rule: str = "gateway_bypass") -> Finding:
    return Finding(
        rule=rule, severity=Severity.HIGH, entity_type="source.ip", entity_value=entity, ts=ts,
        summary=f"Billing served GET /v1/x to {entity}", request_ids=(request_id,), key=request_id,
    )  # fmt: skip


def run(arrivals: list[tuple[float, Finding]], end: float, lifecycle: AlertLifecycle | None = None) -> list[AlertEvent]:
    """Feed findings when event time reaches their arrival second; tick every second to ``end``."""
    book = AlertBook(600.0)
    lifecycle = lifecycle or AlertLifecycle(update_interval_secs=60.0, resolve_after_secs={"gateway_bypass": 120.0})
    events: list[AlertEvent] = []
    pending = sorted(arrivals, key=lambda pair: pair[0])
    tick = math.floor(T0)
    while tick <= end:
        while pending and pending[0][0] <= tick:
            _, f = pending.pop(0)
            lifecycle.add(f, book.add(f).id)
        tick += 1
        events.extend(lifecycle.advance(tick))
    return events


def summary(events: list[AlertEvent]) -> list[tuple[str, str, int, int, float]]:
    return [(e.alert.id, str(e.state), e.sequence, e.alert.count, e.at) for e in events]


def test_open_then_one_update_per_interval_then_resolved() -> None:
    findings = [(T0 + s, finding(T0 + s, f"r{s}")) for s in (0, 5, 10, 70, 75)]
    events = run(findings, end=T0 + 400)
    states = [(str(e.state), e.sequence, e.alert.count, e.at - T0) for e in events]
    assert states == [
        ("open", 1, 1, 1),  # r0 settled once the tick passed it
        ("updated", 2, 3, 61),  # r5 and r10 waited for the interval to end
        ("updated", 3, 5, 121),  # r70 and r75: the next interval
        ("resolved", 4, 5, 195),  # 120 s after last_seen (75)
    ]
    assert len({e.alert.id for e in events}) == 1
    assert [e.id for e in events] == [f"{events[0].alert.id}-{n}" for n in (1, 2, 3, 4)]
    assert events[-1].to_document()["lifecycle"] == {
        "event_id": events[-1].id, "state": "resolved", "sequence": 4, "at": "2026-03-02T09:03:15.000Z",
    }  # fmt: skip


def test_a_finding_after_resolution_reopens_with_the_next_sequence() -> None:
    findings = [(T0, finding(T0, "a")), (T0 + 300, finding(T0 + 300, "b"))]
    events = run(findings, end=T0 + 500)
    assert [(str(e.state), e.sequence, e.alert.count) for e in events] == [
        ("open", 1, 1), ("resolved", 2, 1), ("open", 3, 2), ("resolved", 4, 2),
    ]  # fmt: skip


def test_arrival_order_and_earliness_do_not_change_the_events() -> None:
    """Findings proved on arrival may come up to the allowed lateness early, in any order."""
    rng = random.Random(3)
    base = [finding(T0 + s, f"r{s}", entity=f"10.0.0.{s % 3}") for s in range(0, 300, 7)]
    reference = summary(run([(f.ts, f) for f in base], end=T0 + 800))
    assert {state for _, state, *_ in reference} == {"open", "updated", "resolved"}
    for _ in range(5):
        early = [(f.ts - rng.uniform(0, 120), f) for f in base]
        rng.shuffle(early)
        assert summary(run(early, end=T0 + 800)) == reference


def test_state_round_trips_through_plain_data_mid_stream() -> None:
    findings = [(T0 + s, finding(T0 + s, f"r{s}", entity=f"10.0.0.{s % 2}")) for s in range(0, 200, 9)]
    reference = run(findings, end=T0 + 600)

    settings = {"update_interval_secs": 60.0, "resolve_after_secs": {"gateway_bypass": 120.0}}
    book = AlertBook(600.0)
    first = AlertLifecycle(**settings)
    events: list[AlertEvent] = []
    pending = sorted(findings, key=lambda pair: pair[0])
    lifecycle = first
    for tick in itertools.count(math.floor(T0)):
        if tick > T0 + 600:
            break
        if tick == T0 + 100:
            state = lifecycle.to_state()
            assert _plain(state)
            lifecycle = AlertLifecycle.from_state(state, **settings)
        while pending and pending[0][0] <= tick:
            _, f = pending.pop(0)
            lifecycle.add(f, book.add(f).id)
        events.extend(lifecycle.advance(tick + 1))
    assert summary(events) == summary(reference)
    assert [e.to_document() for e in events] == [e.to_document() for e in reference]


def test_finish_runs_event_time_on_until_every_alert_is_resolved() -> None:
    """As a live run whose inputs went quiet: growth when its interval ends, resolution when due."""
    findings = [(T0 + s, finding(T0 + s, f"r{s}")) for s in (0, 10)] + [(T0 + 15, finding(T0 + 15, "x", "10.0.0.1"))]
    live = summary(run(findings, end=T0 + 400))

    book = AlertBook(600.0)
    lifecycle = AlertLifecycle(update_interval_secs=60.0, resolve_after_secs={"gateway_bypass": 120.0})
    events = []
    for _, f in findings[:2]:
        lifecycle.add(f, book.add(f).id)
    events += lifecycle.advance(T0 + 1)
    f = findings[2][1]  # reported at the end of input, ahead of the last tick
    lifecycle.add(f, book.add(f).id)
    events += lifecycle.finish(T0 + 11)
    assert summary(events) == live
    assert [(state, at - T0) for _, state, _, _, at in live] == [
        ("open", 1), ("open", 16), ("updated", 61), ("resolved", 130), ("resolved", 135),
    ]  # fmt: skip


def _plain(value: object) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, str | int | float | bool)


def test_an_event_document_is_the_alert_document_plus_its_lifecycle() -> None:
    from jsonschema import Draft202012Validator

    from schemas import load_schema

    (event,) = run([(T0, finding(T0, "r0"))], end=T0 + 2)
    doc = dict(event.to_document())  # the document is shared: copy before changing it
    lifecycle = doc.pop("lifecycle")
    Draft202012Validator(load_schema("alert")).validate(doc)
    assert doc == event.alert.to_document()
    assert lifecycle == {
        "event_id": f"{event.alert.id}-1", "state": "open", "sequence": 1, "at": "2026-03-02T09:00:01.000Z",
    }  # fmt: skip


def test_a_state_of_another_version_is_refused_as_a_wire_error() -> None:
    state = AlertLifecycle().to_state()
    with pytest.raises(WireError, match="unknown_version"):
        AlertLifecycle.from_state({**state, "version": 99})
