"""Every detector's own examples: must-alert cases alert, benign look-alikes stay quiet."""

from __future__ import annotations

import math
from collections.abc import Iterable

import pytest

from detectors import registry
from detectors.base import Detector, DetectorContext, Example, Finding
from detectors.trust import TrustPolicy
from ingest.records import Event, Transaction

EXAMPLE_CONTEXT = DetectorContext(
    trust=TrustPolicy.build(
        gateway_identities=["spiffe://billing.example/ns/edge/sa/ambassador"],
        gateway_networks=["10.0.0.0/24"],
        internal_callers=["spiffe://billing.example/ns/ops/sa/reconciler"],
    ),
    revoked={"jti-revoked": 1_767_225_600.0 + 100},
)


def feed(detector: Detector, records: Iterable[Event | Transaction], end: bool = True) -> list[Finding]:
    """Feed records as the engine does: an integer-second watermark before each, +inf at the end.

    Events go to ``observe_arrival`` too, here in event-time order; the engine
    calls it in arrival order, which :func:`test_arrival_findings_ignore_order`
    shows makes no difference.
    """
    findings: list[Finding] = []
    last_ts = float("-inf")
    for record in records:
        ts = record.ts if isinstance(record, Event) else record.last_ts
        assert ts >= last_ts, "records must be in event-time order"
        last_ts = ts
        findings += detector.advance(math.floor(ts))
        if isinstance(record, Event):
            findings += detector.observe_arrival(record)
            findings += detector.observe_event(record)
        else:
            findings += detector.observe_transaction(record)
    if end:
        findings += detector.advance(float("inf"))
    return findings


def run_example(detector: Detector, example: Example) -> list[Finding]:
    return feed(detector, example.records)


CASES = [
    pytest.param(cls, example, id=f"{rule_id}:{example.name}")
    for rule_id, cls in registry().items()
    for example in cls.examples()
]


def test_every_rule_has_an_alerting_and_a_benign_example() -> None:
    for rule_id, cls in registry().items():
        examples = list(cls.examples())
        assert any(e.alerts for e in examples), f"{rule_id} has no must-alert example"
        assert any(not e.alerts for e in examples), f"{rule_id} has no benign look-alike"
        assert getattr(cls, "counts", ""), f"{rule_id} does not say what its alerts' count counts (counts = ...)"


@pytest.mark.parametrize(("cls", "example"), CASES)
def test_example(cls: type[Detector], example: Example) -> None:
    detector = cls(cls.Config(), EXAMPLE_CONTEXT)
    findings = run_example(detector, example)
    assert {f.entity_value for f in findings} == set(example.alerts)
    assert all(f.rule == cls.rule_id for f in findings)
    if example.reason is not None:
        assert {f.reason for f in findings} == {example.reason}


@pytest.mark.parametrize(("cls", "example"), CASES)
def test_arrival_findings_ignore_order(cls: type[Detector], example: Example) -> None:
    """``observe_arrival`` judges each event alone: reversed arrival, same findings."""
    events = [r for r in example.records if isinstance(r, Event)]
    forward = cls(cls.Config(), EXAMPLE_CONTEXT)
    backward = cls(cls.Config(), EXAMPLE_CONTEXT)
    found = [f for e in events for f in forward.observe_arrival(e)]
    found_reversed = [f for e in reversed(events) for f in backward.observe_arrival(e)]
    assert sorted(found, key=repr) == sorted(found_reversed, key=repr)
