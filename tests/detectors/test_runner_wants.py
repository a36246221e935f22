"""A hook a rule's context rules out (``Detector.wants``) is never offered, and would have found nothing."""

from __future__ import annotations

import pytest

from detectors import registry
from detectors.alerts import AlertBook
from detectors.base import Detector, DetectorContext, Example
from detectors.runner import DetectorSet
from detectors.trust import TrustPolicy
from ingest.records import Dataset, Event
from tests.detectors.test_examples import CASES, EXAMPLE_CONTEXT

# No revocation list, no gateway identity or network: what a first deployment often has.
BARE_CONTEXT = DetectorContext(trust=TrustPolicy.build())


def _offered(context: DetectorContext) -> dict[str, set[str]]:
    engine = DetectorSet({r: cls.Config() for r, cls in registry().items()}, context, AlertBook())
    return {
        "observe_arrival": {rule for ds in Dataset for rule, _ in engine._arrival[ds]},
        "observe_transaction": {rule for rule, _ in engine._transaction},
    }


def test_a_bare_context_offers_neither_revocation_nor_peer_checks() -> None:
    assert _offered(EXAMPLE_CONTEXT)["observe_arrival"] >= {"token_revoked_used", "gateway_bypass"}
    bare = _offered(BARE_CONTEXT)
    assert "token_revoked_used" not in bare["observe_arrival"]
    assert "gateway_bypass" not in bare["observe_arrival"]
    assert "gateway_bypass" in bare["observe_transaction"]  # no_gateway_record needs no trust facts


def _declined(cls: type[Detector]) -> list[str]:
    """The hooks ``cls`` overrides but declines in the bare context."""
    detector = cls(cls.Config(), BARE_CONTEXT)
    return [hook for hook in ("observe_arrival", "observe_event", "observe_transaction")
            if getattr(cls, hook) is not getattr(Detector, hook) and not detector.wants(hook)]


DECLINING_CASES = [case for case in CASES if _declined(case.values[0])]  # type: ignore[arg-type]


def test_some_rules_decline_a_hook_in_the_bare_context() -> None:
    assert {case.values[0].rule_id for case in DECLINING_CASES} >= {"token_revoked_used", "gateway_bypass"}  # type: ignore[union-attr]


@pytest.mark.parametrize(("cls", "example"), DECLINING_CASES)
def test_an_unwanted_hook_finds_nothing(cls: type[Detector], example: Example) -> None:
    """Whatever a rule declines in the bare context, called anyway on its own examples, finds nothing."""
    detector = cls(cls.Config(), BARE_CONTEXT)
    for hook in _declined(cls):
        records = [r for r in example.records if isinstance(r, Event) == (hook != "observe_transaction")]
        assert [f for record in records for f in getattr(detector, hook)(record)] == []
