"""The engine offers a record only to the detectors that can use it, and loses nothing by it."""

from __future__ import annotations

import math
import random

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


def _sink_set() -> tuple[DetectorSet, list[object]]:
    found: list[object] = []
    configs = {r: cls.Config() for r, cls in registry().items()}
    return DetectorSet(configs, EXAMPLE_CONTEXT, None, sink=found.append), found


def test_masked_batches_find_what_masked_items_find_in_the_same_order() -> None:
    """The KEYED task's batch of a tick: each rule offered the items its bit is set in, findings by item then rule."""
    every = (1 << len(registry())) - 1
    records = [record for case in CASES for record in case.values[1].records]
    events = [r for r in records if isinstance(r, Event)]
    txns = [r for r in records if not isinstance(r, Event)]
    rng = random.Random(7)
    for masks_of in (lambda n: [every] * n, lambda n: [rng.randrange(every + 1) for _ in range(n)]):
        event_masks, txn_masks = masks_of(len(events)), masks_of(len(txns))
        one_by_one, found_alone = _sink_set()
        for event, mask in zip(events, event_masks, strict=True):
            one_by_one.observe_event_masked(event, mask)
        for txn, mask in zip(txns, txn_masks, strict=True):
            one_by_one.observe_transaction_masked(txn, mask)
        batched, found_batched = _sink_set()
        batched.observe_events_masked(events, event_masks)
        batched.observe_transactions_masked(txns, txn_masks)
        assert found_alone  # the examples' alerting records do find something
        assert found_batched == found_alone
