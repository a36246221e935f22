"""The engine offers a record only to the detectors that can use it, and loses nothing by it."""

from __future__ import annotations

import math

import msgspec
import pytest

from detectors import registry
from detectors.alerts import AlertBook
from detectors.base import Detector, Example
from detectors.runner import DetectorSet
from ingest.records import Dataset, Event
from tests.detectors.test_examples import CASES, EXAMPLE_CONTEXT


def _only(rule_id: str) -> DetectorSet:
    configs = {r: cls.Config(enabled=r == rule_id) for r, cls in registry().items()}
    return DetectorSet(configs, EXAMPLE_CONTEXT, AlertBook())


@pytest.mark.parametrize(("cls", "example"), CASES)
def test_examples_alert_the_same_through_the_engine(cls: type[Detector], example: Example) -> None:
    """Each example fed through DetectorSet (which filters by hook and dataset) alerts as fed directly."""
    engine = _only(cls.rule_id)
    entities: set[str] = set()
    for record in example.records:
        ts = record.ts if isinstance(record, Event) else record.last_ts
        alerts = engine.advance(math.floor(ts))
        if isinstance(record, Event):
            alerts += engine.observe_arrival(record) + engine.observe_event(record)
        else:
            alerts += engine.observe_transaction(record)
        entities |= {a.entity_value for a in alerts}
    entities |= {a.entity_value for a in engine.advance(float("inf"))}
    assert entities == set(example.alerts)


@pytest.mark.parametrize(("cls", "example"), CASES)
def test_undeclared_datasets_find_nothing(cls: type[Detector], example: Example) -> None:
    """A rule's examples, with every event moved to a dataset the rule does not declare, find nothing."""
    others = [d for d in Dataset if d not in cls.datasets]
    if not others or not any(isinstance(r, Event) for r in example.records):
        pytest.skip("the rule reads every dataset, or the example has no event")
    moved = [msgspec.structs.replace(r, dataset=others[0]) for r in example.records if isinstance(r, Event)]
    hooks = ("observe_arrival", "observe_event")
    detector = cls(cls.Config(), EXAMPLE_CONTEXT)
    assert [f for e in moved for hook in hooks for f in getattr(detector, hook)(e)] == []


def test_hooks_are_offered_only_where_overridden_and_declared() -> None:
    engine = DetectorSet({r: cls.Config() for r, cls in registry().items()}, EXAMPLE_CONTEXT, AlertBook())
    gateway_event_rules = {rule for rule, _ in engine._event[Dataset.GATEWAY]}
    assert gateway_event_rules == {"behaviour_outlier", "http_4xx_burst", "http_5xx_burst"}
    assert engine._event[Dataset.APP] == []
    assert {rule for rule, _ in engine._arrival[Dataset.GATEWAY]} == {"token_revoked_used"}
    assert {rule for rule, _ in engine._transaction} == {"gateway_bypass", "token_replay"}

